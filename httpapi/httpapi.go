// Package httpapi serves AgentG8's REST API (SPEC §3): authentication,
// handlers that return errors to one problem+json renderer, body and depth
// limits; and a Go client the CLI uses.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/registry"
	"github.com/agentg8/agentg8/tooldef"
)

// Actions is the pipeline the API exposes.
type Actions interface {
	Propose(ctx context.Context, p agentg8.Principal, prop action.Proposal) (*agentg8.Action, error)
	Get(ctx context.Context, p agentg8.Principal, id string, wait time.Duration) (*agentg8.Action, error)
	List(ctx context.Context, p agentg8.Principal, f action.Filter) ([]*agentg8.Action, error)
	Cancel(ctx context.Context, p agentg8.Principal, id string) (*agentg8.Action, error)
	Resolve(ctx context.Context, p agentg8.Principal, id string, outcome agentg8.State, comment string) (*agentg8.Action, error)
	Tasks(p agentg8.Principal) []*registry.Task
	MayAudit(p agentg8.Principal) bool
	Approvals(ctx context.Context, p agentg8.Principal) ([]*agentg8.Action, error)
	Approval(ctx context.Context, p agentg8.Principal, approvalID string) (*agentg8.Action, error)
	Decide(ctx context.Context, p agentg8.Principal, approvalID string, approve bool, hash, comment string) (*agentg8.Action, error)
}

// Authenticator maps a bearer token to a principal.
type Authenticator interface {
	Authenticate(token string) (agentg8.Principal, bool)
}

// AuditSource reads the audit log.
type AuditSource interface {
	ReadAuditRecords(ctx context.Context, after int64, limit int) ([]audit.Record, error)
	AuditRecordsForAction(ctx context.Context, actionID string, after int64, limit int) ([]audit.Record, error)
	LatestAuditCheckpoint(ctx context.Context) ([]byte, error)
}

// Config wires the API.
type Config struct {
	Actions Actions
	Auth    Authenticator
	Audit   AuditSource
	// Metrics serves /metrics; nil leaves it out (bound elsewhere).
	Metrics http.Handler
	// Ready reports readiness (store reachable, audit writable).
	Ready func(ctx context.Context) error
	// SubjectHeaders are request headers that carry users' tokens for token
	// exchange; they are handed to the pipeline for the execution only.
	SubjectHeaders []string
	// JWKS returns the public keys of minted tokens.
	JWKS    func() any
	Logger  *slog.Logger
	MaxBody int64
	// MaxWait caps long-polls.
	MaxWait time.Duration
}

type api struct{ c Config }

type handler func(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error

// New returns the API's handler.
func New(c Config) http.Handler {
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{c: c}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		var keys any = map[string]any{"keys": []any{}}
		if a.c.JWKS != nil {
			keys = a.c.JWKS()
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		writeJSON(w, 200, keys)
	})
	if c.Metrics != nil {
		mux.Handle("GET /metrics", c.Metrics)
	}
	mux.Handle("GET /v1/tasks", a.auth(a.tasks))
	mux.Handle("GET /v1/tools", a.auth(a.tools))
	mux.Handle("POST /v1/actions", a.auth(a.propose))
	mux.Handle("GET /v1/actions", a.auth(a.list))
	mux.Handle("GET /v1/actions/{id}", a.auth(a.get))
	mux.Handle("POST /v1/actions/{id}/cancel", a.auth(a.cancel))
	mux.Handle("POST /v1/actions/{id}/resolve", a.auth(a.resolve))
	mux.Handle("GET /v1/approvals", a.auth(a.approvals))
	mux.Handle("GET /v1/approvals/{id}", a.auth(a.approval))
	mux.Handle("POST /v1/approvals/{id}/approve", a.auth(a.decide(true)))
	mux.Handle("POST /v1/approvals/{id}/reject", a.auth(a.decide(false)))
	mux.Handle("GET /v1/audit", a.auth(a.auditEvents))
	mux.Handle("GET /v1/audit/checkpoint", a.auth(a.checkpoint))
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, a.c.Logger, agentg8.Errorf(agentg8.CodeNotFound, "no such endpoint"), nil)
	})
	return mux
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.c.Ready != nil {
		if err := a.c.Ready(r.Context()); err != nil {
			a.c.Logger.Warn("not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
			return
		}
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

func (a *api) auth(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, a.c.Logger, agentg8.Errorf(agentg8.CodeUnauthenticated, "missing bearer token"), nil)
			return
		}
		p, ok := a.c.Auth.Authenticate(strings.TrimSpace(tok))
		if !ok {
			writeError(w, a.c.Logger, agentg8.Errorf(agentg8.CodeUnauthenticated, "invalid credentials"), nil)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, a.c.MaxBody)
		if err := h(w, r, p); err != nil {
			writeError(w, a.c.Logger, err, nil)
		}
	})
}

func requireAgent(p agentg8.Principal) error {
	if p.Kind != agentg8.KindAgent {
		return agentg8.Errorf(agentg8.CodeForbidden, "this endpoint is for agents")
	}
	return nil
}

// TaskInfo is what an agent sees of a task.
type TaskInfo struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Risk        string          `json:"risk"`
	InputSchema json.RawMessage `json:"input_schema"`
}

func (a *api) tasks(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if err := requireAgent(p); err != nil {
		return err
	}
	out := []TaskInfo{}
	for _, t := range a.c.Actions.Tasks(p) {
		out = append(out, TaskInfo{Name: t.Name, Description: t.Description, Risk: t.Risk, InputSchema: t.InputSchema()})
	}
	writeJSON(w, 200, map[string]any{"tasks": out})
	return nil
}

func (a *api) tools(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if err := requireAgent(p); err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = tooldef.OpenAI
	}
	tools, err := tooldef.Export(format, a.c.Actions.Tasks(p))
	if err != nil {
		return agentg8.Errorf(agentg8.CodeInvalidInput, "%v", err)
	}
	writeJSON(w, 200, map[string]any{"format": format, "tools": tools})
	return nil
}

// ProposeRequest is the body of POST /v1/actions.
type ProposeRequest struct {
	Task       string          `json:"task"`
	Input      json.RawMessage `json:"input"`
	DryRun     bool            `json:"dry_run,omitempty"`
	OnBehalfOf string          `json:"on_behalf_of,omitempty"`
	Reason     string          `json:"reason,omitempty"`
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return agentg8.Errorf(agentg8.CodeBodyTooLarge, "request body exceeds %d bytes", mbe.Limit)
		}
		return &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "request body is not acceptable JSON",
			Errors: []agentg8.FieldError{{Message: err.Error()}}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return agentg8.Errorf(agentg8.CodeInvalidInput, "unexpected data after the request body")
	}
	return nil
}

func (a *api) propose(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if err := requireAgent(p); err != nil {
		return err
	}
	var req ProposeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	var subject map[string]string
	for _, h := range a.c.SubjectHeaders {
		if v := r.Header.Get(h); v != "" {
			if subject == nil {
				subject = map[string]string{}
			}
			subject[http.CanonicalHeaderKey(h)] = v
		}
	}
	act, err := a.c.Actions.Propose(r.Context(), p, action.Proposal{Task: req.Task, Input: req.Input, DryRun: req.DryRun,
		OnBehalfOf: req.OnBehalfOf, Reason: req.Reason, IdempotencyKey: r.Header.Get("Idempotency-Key"), SubjectTokens: subject})
	if err != nil {
		writeError(w, a.c.Logger, err, act)
		return nil
	}
	if act.Status == agentg8.StatePendingApproval {
		w.Header().Set("Location", "/v1/actions/"+act.ID)
		writeJSON(w, http.StatusAccepted, act)
		return nil
	}
	writeJSON(w, http.StatusOK, act)
	return nil
}

func (a *api) get(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "wait must be a duration such as 30s")
		}
		wait = min(d, a.c.MaxWait)
	}
	act, err := a.c.Actions.Get(r.Context(), p, r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	writeJSON(w, 200, act)
	return nil
}

func (a *api) list(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	q := r.URL.Query()
	f := action.Filter{Task: q.Get("task"), Status: agentg8.State(q.Get("status"))}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "limit must be a number")
		}
		f.Limit = n
	}
	if s := q.Get("before"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "before must be an RFC 3339 time")
		}
		f.Before = t
	}
	acts, err := a.c.Actions.List(r.Context(), p, f)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]any{"actions": acts})
	return nil
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	act, err := a.c.Actions.Cancel(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, act)
	return nil
}

func (a *api) resolve(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	var body struct {
		Outcome agentg8.State `json:"outcome"`
		Comment string        `json:"comment"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	act, err := a.c.Actions.Resolve(r.Context(), p, r.PathValue("id"), body.Outcome, body.Comment)
	if err != nil {
		return err
	}
	writeJSON(w, 200, act)
	return nil
}

func (a *api) auditEvents(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if !a.c.Actions.MayAudit(p) {
		return agentg8.Errorf(agentg8.CodeForbidden, "reading the audit log needs membership of an auditors group")
	}
	q := r.URL.Query()
	after := int64(-1)
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "after must be an event sequence number")
		}
		after = n
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "limit must be a positive number")
		}
		limit = min(n, 1000)
	}
	var recs []audit.Record
	var err error
	if id := q.Get("action_id"); id != "" {
		recs, err = a.c.Audit.AuditRecordsForAction(r.Context(), id, after, limit)
	} else {
		recs, err = a.c.Audit.ReadAuditRecords(r.Context(), after, limit)
	}
	if err != nil {
		return agentg8.StoreFailed(a.c.Logger, "read the audit log", err)
	}
	events := make([]json.RawMessage, 0, len(recs))
	for _, rec := range recs {
		events = append(events, rec.Data)
	}
	writeJSON(w, 200, map[string]any{"events": events})
	return nil
}

func (a *api) checkpoint(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if !a.c.Actions.MayAudit(p) {
		return agentg8.Errorf(agentg8.CodeForbidden, "reading the audit log needs membership of an auditors group")
	}
	cp, err := a.c.Audit.LatestAuditCheckpoint(r.Context())
	if err != nil {
		return agentg8.StoreFailed(a.c.Logger, "read the latest checkpoint", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(cp)
	return nil
}

// ApprovalView is an approval as approvers see it: what will run, who must
// decide, and whether the caller may decide now.
type ApprovalView struct {
	agentg8.Approval
	CanDecide bool            `json:"can_decide"`
	Action    *agentg8.Action `json:"action"`
}

func view(p agentg8.Principal, a *agentg8.Action) ApprovalView {
	return ApprovalView{Approval: *a.Approval, CanDecide: action.CanDecide(p, a), Action: a}
}

func (a *api) approvals(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	if st := r.URL.Query().Get("status"); st != "" && st != "pending" {
		return agentg8.Errorf(agentg8.CodeInvalidInput, "status must be pending (decided approvals are on their actions)")
	}
	acts, err := a.c.Actions.Approvals(r.Context(), p)
	if err != nil {
		return err
	}
	out := make([]ApprovalView, 0, len(acts))
	for _, act := range acts {
		out = append(out, view(p, act))
	}
	writeJSON(w, 200, map[string]any{"approvals": out})
	return nil
}

func (a *api) approval(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
	act, err := a.c.Actions.Approval(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, view(p, act))
	return nil
}

// DecideRequest is the body of an approve or reject.
type DecideRequest struct {
	RequestHash string `json:"request_hash"`
	Comment     string `json:"comment,omitempty"`
}

func (a *api) decide(approve bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p agentg8.Principal) error {
		var req DecideRequest
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		if req.RequestHash == "" {
			return agentg8.Errorf(agentg8.CodeInvalidInput, "request_hash is required: send the hash you reviewed")
		}
		act, err := a.c.Actions.Decide(r.Context(), p, r.PathValue("id"), approve, req.RequestHash, req.Comment)
		if err != nil {
			return err
		}
		writeJSON(w, 200, view(p, act))
		return nil
	}
}
