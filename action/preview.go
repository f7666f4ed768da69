package action

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/connector/httpconn"
	"github.com/agentg8/agentg8/connector/mcpconn"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/preview"
	"github.com/agentg8/agentg8/registry"
)

// maxPreviewRead bounds the current-state read of a preview.
const maxPreviewRead = 10 * time.Second

// preview describes what would run, with credentials masked, and — when the
// task declares how — the live current state, the proposed state and the
// diff between them.
func (s *Service) preview(ctx context.Context, task *registry.Task, vars registry.Vars, r *registry.Request, dec agentg8.Decision, required []agentg8.ApprovalRequirement) *agentg8.Preview {
	pv := &agentg8.Preview{}
	switch {
	case dec.Effect != agentg8.Allow:
		pv.Outcome = "would_be_denied"
		pv.Policies = dec.Policies
	case len(required) > 0:
		pv.Outcome = "would_require_approval"
		pv.Required = required
	default:
		pv.Outcome = "would_execute"
	}
	pv.SideEffects, _ = task.RenderSideEffects(vars)
	if r != nil {
		pv.Request = s.maskedRequest(task, vars, r)
	}
	// The current state is read only for actions the agent may run: a
	// denied agent learns nothing from the upstream.
	if dec.Effect == agentg8.Allow {
		s.currentState(ctx, task, vars, pv)
	}
	return pv
}

// maskedRequest is the request exactly as it would be sent, with the
// credential replaced by a marker.
func (s *Service) maskedRequest(task *registry.Task, vars registry.Vars, r *registry.Request) *agentg8.RenderedRequest {
	rr := &agentg8.RenderedRequest{Method: r.Method, URL: r.URL, Headers: map[string]string{}}
	for k := range r.Header {
		rr.Headers[k] = r.Header.Get(k)
	}
	if task.Credential != "" {
		h, q, marker := s.Catalog().Credentials.Mask(task.Credential)
		if h != "" {
			rr.Headers[http.CanonicalHeaderKey(h)] = marker
		} else if u, err := url.Parse(r.URL); err == nil {
			qv := u.Query()
			qv.Set(q, marker)
			u.RawQuery = qv.Encode()
			rr.URL = u.String()
		}
	}
	if task.Request.IdempotencyHeader != "" {
		rr.Headers[http.CanonicalHeaderKey(task.Request.IdempotencyHeader)] = registry.IdempotencyValue(vars.ActionID)
	}
	if r.Body != nil {
		rr.Body = r.Body
	}
	return rr
}

// currentState fills current, proposed, diff and summary, or preview_error.
// It sends only the task's declared read: a GET/HEAD, or an mcp task's read tool.
func (s *Service) currentState(ctx context.Context, task *registry.Task, vars registry.Vars, pv *agentg8.Preview) {
	cr, err := task.RenderCurrent(vars)
	if err != nil {
		pv.Error = "the current-state request cannot be built: " + renderMsg(err)
		return
	}
	if cr == nil || (!task.CurrentIsTool() && cr.Method != http.MethodGet && cr.Method != http.MethodHead) {
		return
	}
	u, err := url.Parse(cr.URL)
	if err != nil {
		pv.Error = "the current-state URL is invalid"
		return
	}
	redactor := credential.NewRedactor()
	if task.Credential != "" {
		issued, err := s.Catalog().Credentials.Apply(ctx, task.Credential, &credential.Use{Header: cr.Header, URL: u, Preview: true})
		if errors.Is(err, credential.ErrNotForPreview) {
			// Previews mint nothing and request no tokens.
			pv.Error = "the current state is not read: previews use only static credentials, and " + task.Credential + " is issued per action"
			return
		}
		if err != nil {
			pv.Error = "the current state could not be read: " + agentg8.AsError(err).Message
			return
		}
		redactor = issued.Redactor
		if redactor == nil {
			redactor = credential.NewRedactor(issued.Secrets...)
		}
	}
	body, msg := s.readCurrent(ctx, task, u, cr)
	if msg != "" {
		pv.Error = "the current state could not be read: " + redactor.RedactString(msg)
		return
	}
	body = redactor.Redact(body)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		pv.Error = "the current state is not JSON"
		return
	}
	current, err := json.Marshal(task.RedactOutput(v))
	if err != nil {
		pv.Error = "the current state cannot be encoded"
		return
	}
	pv.Current = current
	patch, merge, err := task.RenderPatch(vars)
	if err != nil {
		pv.Error = "the preview patch cannot be built: " + renderMsg(err)
		return
	}
	if patch == nil {
		return
	}
	proposed, err := preview.Apply(current, patch, merge)
	if err != nil {
		pv.Error = "the preview patch does not apply to the current state: " + err.Error()
		return
	}
	ops, summary, err := preview.Diff(current, proposed)
	if err != nil {
		pv.Error = err.Error()
		return
	}
	pv.Proposed = proposed
	pv.Diff, _ = json.Marshal(ops)
	pv.Summary = summary
}

// readCurrent sends the preview's read: the declared GET/HEAD, or the read
// tool's call; it returns the state's JSON or why it could not.
func (s *Service) readCurrent(ctx context.Context, task *registry.Task, u *url.URL, cr *registry.Request) ([]byte, string) {
	timeout := min(task.Timeout, maxPreviewRead)
	if task.CurrentIsTool() {
		res, err := s.c.Tools.Call(ctx, mcpconn.Call{URL: u.String(), Header: cr.Header, Body: cr.Body,
			Timeout: timeout, MaxResponseBytes: task.Request.MaxResponseBytes})
		if err != nil {
			return nil, upstreamMsg(err)
		}
		if res.IsError {
			return nil, "the read tool reported an error"
		}
		// The state is the tool's structured content.
		var r struct {
			Structured json.RawMessage `json:"structuredContent"`
		}
		if json.Unmarshal(res.Body, &r) != nil || len(r.Structured) == 0 || string(r.Structured) == "null" {
			return nil, "the read tool returned no structured content"
		}
		return r.Structured, ""
	}
	resp, err := s.c.Connector.Do(ctx, httpconn.Call{Method: cr.Method, URL: u.String(), Header: cr.Header,
		Timeout: timeout, MaxResponseBytes: task.Request.MaxResponseBytes})
	if err != nil {
		return nil, upstreamMsg(err)
	}
	if resp.Status < 200 || resp.Status > 299 {
		return nil, fmt.Sprintf("upstream answered %d %s", resp.Status, http.StatusText(resp.Status))
	}
	return resp.Body, ""
}

// upstreamMsg is what a failed upstream exchange may tell the caller.
func upstreamMsg(err error) string {
	var ce *httpconn.Error
	if errors.As(err, &ce) {
		return ce.Msg
	}
	return "upstream request failed"
}

// renderMsg is a caller-safe message for a rendering failure.
func renderMsg(err error) string {
	var re *registry.RenderError
	if errors.As(err, &re) {
		return re.Msg
	}
	return "internal error"
}
