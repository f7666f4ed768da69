package registry

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Request is an upstream request rendered from a task and an input, before
// credentials are applied.
type Request struct {
	Method string
	URL    string
	Header http.Header
	// Body is the JSON body, nil when the task has none.
	Body []byte
}

// RenderRequest builds the upstream request. Errors caused by the input are
// *RenderError.
func (t *Task) RenderRequest(v Vars) (*Request, error) {
	r, err := t.renderTarget(v)
	if err != nil {
		return nil, err
	}
	if t.MCP != nil {
		if r.Body, err = t.renderToolCall(v); err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
		return r, nil
	}
	if t.body != nil {
		tree, err := t.body.Render(v)
		if err != nil {
			return nil, err
		}
		if r.Body, err = json.Marshal(tree); err != nil {
			return nil, err
		}
		r.Header.Set("Content-Type", "application/json")
	}
	return r, nil
}

// renderTarget renders the request's method, URL and headers.
func (t *Task) renderTarget(v Vars) (*Request, error) {
	u, err := t.url.Render(v)
	if err != nil {
		return nil, err
	}
	r := &Request{Method: t.Request.Method, URL: u, Header: http.Header{}}
	for k, tp := range t.headers {
		val, err := tp.RenderHeader(v)
		if err != nil {
			return nil, err
		}
		r.Header.Set(k, val)
	}
	return r, nil
}

// toolCallMsg is the JSON-RPC message an MCP task sends: the body of its
// rendered request, previewed as is. The connector reads the call from it,
// so what a reviewer approves is what is sent.
type toolCallMsg struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  struct {
		Name      string         `json:"name"`
		Arguments any            `json:"arguments"`
		Meta      map[string]any `json:"_meta,omitempty"`
	} `json:"params"`
}

func (t *Task) renderToolCall(v Vars) ([]byte, error) {
	var meta map[string]any
	if k := t.MCP.IdempotencyMeta; k != "" {
		meta = map[string]any{k: IdempotencyValue(v.ActionID)}
	}
	return toolCall(t.MCP.Tool, t.args, v.Input, v, meta)
}

// toolCall renders a tools/call message; without an arguments template the
// arguments are def.
func toolCall(tool string, args *JSONTemplate, def any, v Vars, meta map[string]any) ([]byte, error) {
	c := toolCallMsg{JSONRPC: "2.0", Method: "tools/call"}
	c.Params.Name = tool
	c.Params.Arguments = def
	if args != nil {
		tree, err := args.Render(v)
		if err != nil {
			return nil, err
		}
		c.Params.Arguments = tree
	}
	c.Params.Meta = meta
	return json.Marshal(c)
}

// IdempotencyValue is the stable key sent upstream for an action
// (request.idempotency_header, mcp.idempotency_meta).
func IdempotencyValue(actionID string) string { return "agentg8-" + actionID }

// Idempotent reports whether the upstream is given a key to apply the
// action at most once.
func (t *Task) Idempotent() bool {
	return t.Request.IdempotencyHeader != "" || (t.MCP != nil && t.MCP.IdempotencyMeta != "")
}

// Origin is scheme://host[:port] of the task's request: its upstream.
func (t *Task) Origin() string { return t.url.Origin() }

// RenderCurrent builds the preview's current-state read, or nil when the
// task declares none. A read tool's call (CurrentIsTool) is a POST of its
// tools/call message to the task's MCP server, with the task's headers.
func (t *Task) RenderCurrent(v Vars) (*Request, error) {
	if t.CurrentIsTool() {
		r, err := t.renderTarget(v)
		if err != nil {
			return nil, err
		}
		r.Body, err = toolCall(t.Preview.Current.Tool, t.currentArgs, map[string]any{}, v, nil)
		r.Header.Set("Content-Type", "application/json")
		return r, err
	}
	if t.current == nil {
		return nil, nil
	}
	u, err := t.current.Render(v)
	if err != nil {
		return nil, err
	}
	r := &Request{Method: t.Preview.Current.Method, URL: u, Header: http.Header{}}
	for k, tp := range t.currentHdrs {
		val, err := tp.RenderHeader(v)
		if err != nil {
			return nil, err
		}
		r.Header.Set(k, val)
	}
	return r, nil
}

// CurrentIsTool reports whether the preview reads current state with a
// tool call.
func (t *Task) CurrentIsTool() bool {
	return t.Preview != nil && t.Preview.Current != nil && t.Preview.Current.Tool != ""
}

// RenderPatch renders the preview's patch; merge reports RFC 7386. It
// returns nil when the task declares none.
func (t *Task) RenderPatch(v Vars) (patch []byte, merge bool, err error) {
	if t.patch == nil {
		return nil, false, nil
	}
	tree, err := t.patch.Render(v)
	if err != nil {
		return nil, false, err
	}
	b, err := json.Marshal(tree)
	return b, t.mergePatch, err
}

// RenderSideEffects renders the declared side effects.
func (t *Task) RenderSideEffects(v Vars) ([]string, error) {
	var out []string
	for _, tp := range t.sideEffects {
		s, err := tp.RenderText(v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ResourceID renders the id of the task's Cedar resource.
func (t *Task) ResourceID(v Vars) (string, error) { return t.resourceID.RenderText(v) }

// RedactOutput applies only output.redact (used on preview current state).
func (t *Task) RedactOutput(body any) any {
	for _, p := range t.Output.Redact {
		body = removePointer(body, p)
	}
	return body
}

// SelectOutput applies output.select and output.redact to a JSON response.
func (t *Task) SelectOutput(body any) any {
	for _, p := range t.Output.Redact {
		body = removePointer(body, p)
	}
	if t.Output.Select != "" {
		v, ok := getPointer(body, t.Output.Select)
		if !ok {
			return nil
		}
		return v
	}
	return body
}

func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts
}

func getPointer(v any, p string) (any, bool) {
	for _, seg := range splitPointer(p) {
		switch c := v.(type) {
		case map[string]any:
			n, ok := c[seg]
			if !ok {
				return nil, false
			}
			v = n
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// removePointer deletes the value at p (in objects, and in every element of
// arrays when a segment is "*" ) and returns the new tree.
func removePointer(v any, p string) any {
	segs := splitPointer(p)
	if len(segs) == 0 {
		return nil
	}
	var rm func(v any, segs []string) any
	rm = func(v any, segs []string) any {
		seg, last := segs[0], len(segs) == 1
		switch c := v.(type) {
		case map[string]any:
			if last {
				delete(c, seg)
				return c
			}
			if n, ok := c[seg]; ok {
				c[seg] = rm(n, segs[1:])
			}
			return c
		case []any:
			if seg == "*" {
				for i := range c {
					if last {
						return []any{}
					}
					c[i] = rm(c[i], segs[1:])
				}
				return c
			}
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return c
			}
			if last {
				return append(c[:i:i], c[i+1:]...)
			}
			c[i] = rm(c[i], segs[1:])
			return c
		}
		return v
	}
	return rm(v, segs)
}
