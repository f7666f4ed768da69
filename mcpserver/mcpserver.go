// Package mcpserver is AgentG8's MCP front door: a Streamable HTTP endpoint
// (official go-sdk) where each agent sees exactly the tasks it may propose as
// tools, and every call goes through the same pipeline as POST /v1/actions.
//
// The endpoint is stateless: every HTTP request is authenticated on its own
// and served by the calling agent's server, so no session can be borrowed by
// another agent. The agent's token is never passed upstream. The only
// streams it keeps tell agents that their tool list changed (stream.go).
package mcpserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/registry"
	"github.com/agentg8/agentg8/tooldef"
)

// Built-in tools.
const (
	ToolActionStatus = "agentg8_action_status"
	ToolPreview      = "agentg8_preview"
)

// Actions is the pipeline MCP calls go through.
type Actions interface {
	Propose(ctx context.Context, p agentg8.Principal, prop action.Proposal) (*agentg8.Action, error)
	Get(ctx context.Context, p agentg8.Principal, id string, wait time.Duration) (*agentg8.Action, error)
	Tasks(p agentg8.Principal) []*registry.Task
}

// Authenticator maps a bearer token to a principal.
type Authenticator interface {
	Authenticate(token string) (agentg8.Principal, bool)
}

// Config wires the endpoint.
type Config struct {
	Actions Actions
	Auth    Authenticator
	Version string
	Logger  *slog.Logger
	// Observe, if set, is told of every authenticated request whether the
	// tools/call fast path served it.
	Observe func(fast bool)
}

// maxBody bounds an MCP request body.
const maxBody = 1 << 20

type handler struct {
	c       Config
	mu      sync.Mutex
	servers map[string]*agentServer
	inner   http.Handler
	streams listeners
}

// agentServer is one agent's MCP server and its tools by name, which the
// tools/call fast path calls directly.
type agentServer struct {
	sdk   *mcp.Server
	tools map[string]toolFunc
}

// toolFunc runs one tool call for an agent; key is the call's idempotency
// key ("" for none).
type toolFunc func(ctx context.Context, arguments json.RawMessage, key string) *mcp.CallToolResult

// MetaIdempotencyKey is the tools/call _meta member that carries an
// idempotency key: a retry of a call under the same key (same agent, same
// tool and arguments) answers with the first call's action instead of
// running it again, as Idempotency-Key does for POST /v1/actions. Clients
// whose answer was lost (a dropped connection) can thus retry safely.
const MetaIdempotencyKey = "agentg8/idempotency-key"

// metaKey reads MetaIdempotencyKey from a call's _meta.
func metaKey(meta mcp.Meta) (string, error) {
	v, ok := meta[MetaIdempotencyKey]
	if !ok {
		return "", nil
	}
	k, ok := v.(string)
	if !ok || k == "" {
		return "", agentg8.Errorf(agentg8.CodeInvalidInput, "_meta %q must be a non-empty string", MetaIdempotencyKey)
	}
	return k, nil
}

// Endpoint is the /mcp handler.
type Endpoint struct {
	http.Handler
	h *handler
}

// Reset drops every agent's cached tool list, after tasks, policies or
// agents changed: the next request builds it again. Agents holding a GET
// stream are sent notifications/tools/list_changed on it (stream.go).
func (e *Endpoint) Reset() {
	e.h.mu.Lock()
	e.h.servers = map[string]*agentServer{}
	e.h.mu.Unlock()
	e.h.changed()
}

// Streams is how many GET streams are open.
func (e *Endpoint) Streams() int { return e.h.streams.count() }

// Close ends the agents' open GET streams and refuses new ones, so that a
// stopping server does not wait for them.
func (e *Endpoint) Close() { e.h.streams.close() }

// New returns the /mcp handler.
func New(c Config) *Endpoint {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{c: c, servers: map[string]*agentServer{}}
	h.inner = mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		p, ok := r.Context().Value(principalKey{}).(agentg8.Principal)
		if !ok {
			return nil
		}
		return h.server(p).sdk
	}, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, Logger: c.Logger, MaxRequestBodyBytes: maxBody})
	// Browsers must not drive the endpoint from other origins.
	return &Endpoint{Handler: http.NewCrossOriginProtection().Handler(h), h: h}
}

type principalKey struct{}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		unauthorized(w, "missing bearer token")
		return
	}
	p, ok := h.c.Auth.Authenticate(strings.TrimSpace(tok))
	if !ok {
		unauthorized(w, "invalid credentials")
		return
	}
	if p.Kind != agentg8.KindAgent {
		problem(w, http.StatusForbidden, agentg8.CodeForbidden, "MCP is for agents")
		return
	}
	if r.Method == http.MethodGet {
		h.stream(w, r, p, strings.TrimSpace(tok))
		return
	}
	if h.listen(w, r, p, strings.TrimSpace(tok)) {
		return
	}
	if h.fastCall(w, r, h.server(p)) {
		h.observe(true)
		return
	}
	h.observe(false)
	h.inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
}

func (h *handler) observe(fast bool) {
	if h.c.Observe != nil {
		h.c.Observe(fast)
	}
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="agentg8"`)
	problem(w, http.StatusUnauthorized, agentg8.CodeUnauthenticated, msg)
}

// server returns (building once) the MCP server of one agent: its tasks as
// tools, plus the built-ins.
func (h *handler) server(p agentg8.Principal) *agentServer {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.servers[p.ID]; ok {
		return s
	}
	s := &agentServer{tools: map[string]toolFunc{}, sdk: mcp.NewServer(&mcp.Implementation{Name: "agentg8", Version: h.c.Version}, &mcp.ServerOptions{
		Instructions: "Tools here are actions a gateway runs for you after checking policy; some wait for human approval. " +
			"Use " + ToolActionStatus + " to follow an action and " + ToolPreview + " to see what an action would change without running it.",
	})}
	add := func(tool *mcp.Tool, fn toolFunc) {
		s.tools[tool.Name] = fn
		s.sdk.AddTool(tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			key, err := metaKey(req.Params.Meta)
			if err != nil {
				return result(nil, err), nil
			}
			return fn(ctx, req.Params.Arguments, key), nil
		})
	}
	for _, t := range h.c.Actions.Tasks(p) {
		tool := Tool(t)
		hash := Hash(tool)
		name := t.Name
		add(tool, func(ctx context.Context, raw json.RawMessage, key string) *mcp.CallToolResult {
			a, err := h.c.Actions.Propose(ctx, p, action.Proposal{Task: name, Input: args(raw), ToolHash: hash, IdempotencyKey: key})
			return result(a, err)
		})
	}
	add(&mcp.Tool{Name: ToolActionStatus, Description: "Get the state and output of an action you proposed; optionally wait up to wait_seconds for it to change.",
		InputSchema: json.RawMessage(`{"type":"object","required":["action_id"],"additionalProperties":false,"properties":{"action_id":{"type":"string"},"wait_seconds":{"type":"integer","minimum":0,"maximum":60}}}`),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true}},
		// Reading twice is harmless: no key needed.
		func(ctx context.Context, raw json.RawMessage, _ string) *mcp.CallToolResult {
			var in struct {
				ActionID    string `json:"action_id"`
				WaitSeconds int    `json:"wait_seconds"`
			}
			if err := json.Unmarshal(args(raw), &in); err != nil || in.ActionID == "" || in.WaitSeconds < 0 || in.WaitSeconds > 60 {
				return result(nil, agentg8.Errorf(agentg8.CodeInvalidInput, "arguments must be {action_id, wait_seconds (0-60)}"))
			}
			a, err := h.c.Actions.Get(ctx, p, in.ActionID, time.Duration(in.WaitSeconds)*time.Second)
			return result(a, err)
		})
	add(&mcp.Tool{Name: ToolPreview, Description: "Dry-run a task: what request would be sent, its side effects, and a diff of the current state against the proposed one. Nothing runs.",
		InputSchema: json.RawMessage(`{"type":"object","required":["task"],"additionalProperties":false,"properties":{"task":{"type":"string"},"input":{"type":"object"}}}`),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		// A dry run changes nothing: no key needed.
		func(ctx context.Context, raw json.RawMessage, _ string) *mcp.CallToolResult {
			var in struct {
				Task  string          `json:"task"`
				Input json.RawMessage `json:"input"`
			}
			if err := json.Unmarshal(args(raw), &in); err != nil || in.Task == "" {
				return result(nil, agentg8.Errorf(agentg8.CodeInvalidInput, "arguments must be {task, input}"))
			}
			a, err := h.c.Actions.Propose(ctx, p, action.Proposal{Task: in.Task, Input: in.Input, DryRun: true})
			return result(a, err)
		})
	h.servers[p.ID] = s
	return s
}

func args(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}")
	}
	return raw
}

// Tool is a task as an MCP tool, with hints derived from its risk.
func Tool(t *registry.Task) *mcp.Tool {
	destructive := t.Risk == string(agentg8.RiskDestructive)
	return &mcp.Tool{Name: tooldef.ToolName(tooldef.MCP, t.Name), Description: t.Description, InputSchema: t.InputSchema(),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: t.Risk == string(agentg8.RiskRead), DestructiveHint: &destructive,
			IdempotentHint: t.Idempotent()}}
}

// Hash identifies a tool definition, recorded with every call so an audit
// can see which definition the model saw.
func Hash(t *mcp.Tool) string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// outcome is the structured result of a call.
type outcome struct {
	ActionID string                        `json:"action_id,omitempty"`
	Status   agentg8.State                 `json:"status,omitempty"`
	Output   json.RawMessage               `json:"output,omitempty"`
	Error    *agentg8.Error                `json:"error,omitempty"`
	Approval *agentg8.Approval             `json:"approval,omitempty"`
	Preview  *agentg8.Preview              `json:"preview,omitempty"`
	Required []agentg8.ApprovalRequirement `json:"-"`
}

// result renders an action (or an error) as a tool result the model can act
// on: errors are tool errors with the problem code; a pending approval is a
// normal result that says who must approve and how to follow up.
func result(a *agentg8.Action, err error) *mcp.CallToolResult {
	o := outcome{}
	if a != nil {
		o.ActionID, o.Status, o.Output, o.Approval, o.Preview = a.ID, a.Status, a.Output, a.Approval, a.Preview
		o.Error = a.Error
	}
	var text string
	isErr := false
	switch {
	case err != nil:
		e := agentg8.AsError(err)
		o.Error, isErr = e, true
		text = e.Code + ": " + e.Message
		for _, fe := range e.Errors {
			text += fmt.Sprintf("\n- %s: %s", orRoot(fe.Path), fe.Message)
		}
	case a.Status == agentg8.StatePendingApproval:
		var who []string
		for _, r := range a.Approval.Required {
			who = append(who, fmt.Sprintf("%d from %s", r.Quorum, r.Group))
		}
		text = fmt.Sprintf("Action %s is waiting for human approval (%s) until %s; nothing has run yet. "+
			"Call %s with {\"action_id\": %q, \"wait_seconds\": 30} to learn the outcome.",
			a.ID, strings.Join(who, ", "), a.Approval.ExpiresAt.Format(time.RFC3339), ToolActionStatus, a.ID)
	case a.Status == agentg8.StateDryRun:
		b, _ := json.MarshalIndent(a.Preview, "", "  ")
		text = "Dry run; nothing ran.\n" + string(b)
	case a.Status == agentg8.StateSucceeded:
		text = string(a.Output)
		if text == "" {
			text = "succeeded"
		}
	default:
		text = fmt.Sprintf("Action %s is %s.", a.ID, a.Status)
		if a.Error != nil {
			text += " " + a.Error.Code + ": " + a.Error.Message
			isErr = a.Status == agentg8.StateFailed || a.Status == agentg8.StateDenied
		}
		if len(a.Output) > 0 {
			text += "\n" + string(a.Output)
		}
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}, StructuredContent: o, IsError: isErr}
}

func orRoot(p string) string {
	if p == "" {
		return "(input)"
	}
	return p
}
