package mcpconn

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/connector/httpconn"
)

type ticketIn struct {
	Title string      `json:"title"`
	Size  int         `json:"size,omitempty"`
	Sleep int         `json:"sleep_ms,omitempty"`
	Big   json.Number `json:"big,omitempty"`
}

type seen struct {
	meta mcp.Meta
	in   ticketIn
}

type ticketOut struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

// upstream is a real MCP server (the official SDK) that records its calls.
type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []seen
	auth  []string // Authorization of every POST
	// slowDelete, when set, is how long a DELETE waits; each DELETE is
	// then reported on deleted.
	slowDelete time.Duration
	deleted    chan struct{}
}

// legacyOnly makes a server answer the 2026-07-28 discovery with 400, as
// servers on earlier protocol versions do: clients fall back to initialize.
var legacyOnly = &mcp.StreamableHTTPOptions{}

func newUpstream(t testing.TB, wantAuth string, opts *mcp.StreamableHTTPOptions) *upstream {
	u := &upstream{}
	s := mcp.NewServer(&mcp.Implementation{Name: "tickets", Version: "1"}, nil)
	// A raw handler: the arguments are checked as the bytes that arrived.
	s.AddTool(&mcp.Tool{Name: "create_ticket", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in ticketIn
		if err := json.Unmarshal(req.Params.Arguments, &in); err != nil {
			return nil, err
		}
		u.mu.Lock()
		u.calls = append(u.calls, seen{meta: req.Params.Meta, in: in})
		u.mu.Unlock()
		if in.Sleep > 0 {
			time.Sleep(time.Duration(in.Sleep) * time.Millisecond)
		}
		if in.Title == "fail" {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "the ticket system is read-only today"}}}, nil
		}
		out := ticketOut{ID: "T-1", Title: in.Title + strings.Repeat("x", in.Size)}
		return &mcp.CallToolResult{StructuredContent: out, Content: []mcp.Content{&mcp.TextContent{Text: "created T-1"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		if r.Method == http.MethodPost {
			u.auth = append(u.auth, r.Header.Get("Authorization"))
		}
		slow := u.slowDelete
		u.mu.Unlock()
		if r.Method == http.MethodDelete && slow > 0 {
			time.Sleep(slow)
			defer func() { u.deleted <- struct{}{} }()
		}
		if r.Header.Get("Authorization") != wantAuth {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if opts == legacyOnly && r.Header.Get("Mcp-Protocol-Version") >= "2026-07-28" {
			http.Error(w, `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}`, http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) called() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

func toolCall(t *testing.T, tool string, args map[string]any, meta map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": args, "_meta": meta}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func callOf(u *upstream, auth string, body []byte) Call {
	return Call{URL: u.srv.URL, Header: http.Header{"Authorization": {auth}}, Body: body, Timeout: 5 * time.Second, MaxResponseBytes: 1 << 16}
}

func failure(t *testing.T, err error) *httpconn.Error {
	t.Helper()
	var e *httpconn.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *httpconn.Error", err, err)
	}
	return e
}

// Servers answer in sessions over SSE (the SDK's default) or statelessly
// with plain JSON; both work.
var serverModes = map[string]*mcp.StreamableHTTPOptions{
	"sessions and SSE": nil,
	"stateless JSON":   {Stateless: true, JSONResponse: true},
	"legacy protocol":  legacyOnly,
}

func TestToolCall(t *testing.T) {
	for mode, opts := range serverModes {
		t.Run(mode, func(t *testing.T) { testToolCall(t, opts) })
	}
}

func testToolCall(t *testing.T, opts *mcp.StreamableHTTPOptions) {
	u := newUpstream(t, "Bearer s3cret", opts)
	c := New(httpconn.New(true).Client(), "test")
	res, err := c.Call(t.Context(), callOf(u, "Bearer s3cret", toolCall(t, "create_ticket", map[string]any{"title": "printer", "big": json.Number("12345678901234567891")}, map[string]any{"agentg8/idempotency-key": "agentg8-act_1"})))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Structured ticketOut `json:"structuredContent"`
		Content    []struct{ Type, Text string }
	}
	if err := json.Unmarshal(res.Body, &got); err != nil || got.Structured != (ticketOut{ID: "T-1", Title: "printer"}) || res.IsError {
		t.Fatalf("result %s (%v)", res.Body, err)
	}
	if u.called() != 1 || u.calls[0].in.Title != "printer" || u.calls[0].in.Big != "12345678901234567891" || u.calls[0].meta["agentg8/idempotency-key"] != "agentg8-act_1" {
		t.Fatalf("upstream saw %+v", u.calls)
	}
	// The credential header is on every request of the session
	// (initialize, tools/call and any notification), not only the call.
	u.mu.Lock()
	auth := append([]string(nil), u.auth...)
	u.mu.Unlock()
	if len(auth) < 2 {
		t.Fatalf("%d POSTs", len(auth))
	}
	for _, a := range auth {
		if a != "Bearer s3cret" {
			t.Fatalf("a request went without the credential: %q", u.auth)
		}
	}

	// The tool's own error is a result (isError), not a failed exchange.
	res, err = c.Call(t.Context(), callOf(u, "Bearer s3cret", toolCall(t, "create_ticket", map[string]any{"title": "fail"}, nil)))
	if err != nil || !res.IsError || !strings.Contains(string(res.Body), "read-only today") {
		t.Fatalf("tool error: %v %+v", err, res)
	}
}

// The answer does not wait for the session's end: a server slow to
// answer the DELETE delays nothing.
func TestToolCallDoesNotWaitForSessionEnd(t *testing.T) {
	u := newUpstream(t, "Bearer s3cret", nil)
	u.mu.Lock()
	u.slowDelete, u.deleted = 2*time.Second, make(chan struct{}, 1)
	u.mu.Unlock()
	start := time.Now()
	if _, err := New(httpconn.New(true).Client(), "test").Call(t.Context(), callOf(u, "Bearer s3cret", toolCall(t, "create_ticket", map[string]any{"title": "x"}, nil))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the call took %s", d)
	}
	select {
	case <-u.deleted: // the session is still ended
	case <-time.After(5 * time.Second):
		t.Fatal("the session was not ended")
	}
}

func TestToolCallFailures(t *testing.T) {
	u := newUpstream(t, "Bearer s3cret", nil)
	legacy := newUpstream(t, "Bearer s3cret", legacyOnly)
	c := New(httpconn.New(true).Client(), "test")
	for _, tc := range []struct {
		name, auth, tool string
		legacy           bool
		args             map[string]any
		max              int64
		timeout          time.Duration
		code, msg        string
		sent             bool
		calls            int
	}{
		{name: "refused credential", auth: "Bearer wrong", tool: "create_ticket", code: agentg8.CodeUpstreamError,
			msg: "the MCP session could not be started: the MCP server answered 401 Unauthorized"},
		{name: "unknown tool", tool: "drop_tables", code: agentg8.CodeUpstreamError,
			msg: "the tool call failed: the MCP server answered error", sent: true},
		// The 400 to the discovery is not the call's failure.
		{name: "unknown tool, legacy server", legacy: true, tool: "drop_tables", code: agentg8.CodeUpstreamError,
			msg: "the tool call failed: the MCP server answered error", sent: true},
		{name: "answer too large", tool: "create_ticket", args: map[string]any{"title": "big", "size": 100000}, max: 20000,
			code: agentg8.CodeUpstreamError, msg: "exceeds 20000 bytes", sent: true, calls: 1},
		{name: "timeout", tool: "create_ticket", args: map[string]any{"title": "slow", "sleep_ms": 1500}, timeout: 300 * time.Millisecond,
			code: agentg8.CodeUpstreamTimeout, msg: "did not answer in time", sent: true, calls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := u.called()
			auth := tc.auth
			if auth == "" {
				auth = "Bearer s3cret"
			}
			args := tc.args
			if args == nil {
				args = map[string]any{"title": "x"}
			}
			srv := u
			if tc.legacy {
				srv = legacy
			}
			call := callOf(srv, auth, toolCall(t, tc.tool, args, nil))
			if tc.max > 0 {
				call.MaxResponseBytes = tc.max
			}
			if tc.timeout > 0 {
				call.Timeout = tc.timeout
			}
			_, err := c.Call(t.Context(), call)
			e := failure(t, err)
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) || e.Sent != tc.sent {
				t.Fatalf("got %s %q sent=%v", e.Code, e.Msg, e.Sent)
			}
			if n := u.called() - before; n != tc.calls {
				t.Fatalf("%d tool runs", n)
			}
		})
	}
}

// The session goes through httpconn's egress guard: a loopback MCP server
// is refused before any byte is sent.
func TestToolCallEgressGuard(t *testing.T) {
	u := newUpstream(t, "Bearer s3cret", nil)
	_, err := New(httpconn.New(false).Client(), "test").Call(t.Context(), callOf(u, "Bearer s3cret", toolCall(t, "create_ticket", map[string]any{"title": "x"}, nil)))
	e := failure(t, err)
	if e.Code != agentg8.CodeEgressDenied || e.Sent || len(u.auth) != 0 {
		t.Fatalf("got %s %q sent=%v; %d requests reached the server", e.Code, e.Msg, e.Sent, len(u.auth))
	}
}
