package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ticketServer is a real upstream MCP server (the official SDK over
// Streamable HTTP) whose one tool records what it was asked.
type ticketServer struct {
	url   string
	mu    sync.Mutex
	calls []ticketCall
	reads []map[string]any // get_queue's arguments
}

type ticketCall struct {
	Args map[string]any
	Meta mcp.Meta
	Auth string
}

func newTicketServer(t *testing.T) *ticketServer {
	ts := &ticketServer{}
	s := mcp.NewServer(&mcp.Implementation{Name: "tickets", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "create_ticket"}, func(ctx context.Context, req *mcp.CallToolRequest, in map[string]any) (*mcp.CallToolResult, map[string]any, error) {
		auth := req.Extra.Header.Get("Authorization")
		ts.mu.Lock()
		ts.calls = append(ts.calls, ticketCall{Args: in, Meta: req.Params.Meta, Auth: auth})
		ts.mu.Unlock()
		if in["title"] == "fail" {
			// A careless server echoing the credential in its error.
			return nil, nil, errors.New("queue closed for " + auth)
		}
		return nil, map[string]any{"id": "T-1", "title": in["title"], "seen_auth": auth, "internal_ref": "x-9"}, nil
	})
	// The read a dry run makes: the queue's tickets.
	mcp.AddTool(s, &mcp.Tool{Name: "get_queue", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, func(ctx context.Context, req *mcp.CallToolRequest, in map[string]any) (*mcp.CallToolResult, map[string]any, error) {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.reads = append(ts.reads, in)
		titles := []any{"printer on fire"}
		return nil, map[string]any{"queue": in["queue"], "titles": titles}, nil
	})
	// Another tool of the same server no task names: agents cannot reach it.
	mcp.AddTool(s, &mcp.Tool{Name: "drop_queue"}, func(ctx context.Context, req *mcp.CallToolRequest, in map[string]any) (*mcp.CallToolResult, any, error) {
		ts.mu.Lock()
		ts.calls = append(ts.calls, ticketCall{Args: map[string]any{"dropped": true}})
		ts.mu.Unlock()
		return nil, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(srv.Close)
	ts.url = srv.URL
	return ts
}

func (ts *ticketServer) snapshot() []ticketCall {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]ticketCall(nil), ts.calls...)
}

const ticketTasks = `
- name: ops.ticket
  description: Open a ticket.
  risk: write
  input:
    type: object
    required: [title]
    additionalProperties: false
    properties: {title: {type: string}}
  credential: crm
  mcp:
    url: MCPURL
    tool: create_ticket
    arguments: {title: "${input.title}", reporter: "${principal.id}"}
    idempotency_meta: agentg8/idempotency-key
  preview:
    side_effects: ["Opens a ticket titled ${input.title}."]
    current: {tool: get_queue, arguments: {queue: main}}
    patch:
      - {op: add, path: /titles/-, value: "${input.title}"}
  output:
    select: /structuredContent
    redact: [/structuredContent/internal_ref]
- name: ops.ticket_reviewed
  description: Open a ticket after a finance review.
  risk: write
  input: {type: object, properties: {title: {type: string}}}
  approval: always
  approvers: [finance]
  credential: crm
  mcp: {url: MCPURL, tool: create_ticket}
- name: ops.ticket_gone
  description: A task naming a tool the server does not have.
  risk: write
  input: {type: object}
  credential: crm
  mcp: {url: MCPURL, tool: close_queue}
`

// An MCP task runs the pipeline of an HTTP task: schema, policy, approval,
// credential injected server-side, one tool call, audit; the agent sees the
// selected, redacted result and never the credential.
func TestMCPTaskEndToEnd(t *testing.T) {
	ts := newTicketServer(t)
	e := newTestEnv(t, envOpts{allowPrivate: true, extraTasks: strings.ReplaceAll(ticketTasks, "MCPURL", ts.url)})

	st, a := e.propose(supportKey, "ops.ticket", map[string]any{"title": "printer on fire"})
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("%d %v", st, a["_body"])
	}
	out, _ := json.Marshal(a["output"])
	if string(out) != `{"id":"T-1","seen_auth":"Bearer [REDACTED]","title":"printer on fire"}` {
		t.Fatalf("output %s", out)
	}
	calls := ts.snapshot()
	if len(calls) != 1 || calls[0].Auth != "Bearer "+crmSecret || calls[0].Args["reporter"] != "support-bot" ||
		calls[0].Meta["agentg8/idempotency-key"] != "agentg8-"+a["id"].(string) {
		t.Fatalf("upstream saw %+v", calls)
	}

	// Denied by policy, invalid input, dry run: no tool call at all.
	if st, a := e.propose(otherKey, "ops.ticket", map[string]any{"title": "x"}); st != 403 {
		t.Fatalf("other agent: %d %v", st, a["_body"])
	}
	if st, a := e.propose(supportKey, "ops.ticket", map[string]any{"title": "x", "tool": "drop_queue"}); st != 400 {
		t.Fatalf("extra input: %d %v", st, a["_body"])
	}
	_, dr := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "ops.ticket", "input": map[string]any{"title": "dry"}, "dry_run": true})
	pv, _ := dr["preview"].(map[string]any)
	rq, _ := pv["request"].(map[string]any)
	body, _ := json.Marshal(rq["body"])
	hdrs, _ := rq["headers"].(map[string]any)
	if dr["status"] != "dry_run" || rq["url"] != ts.url || hdrs["Authorization"] != "[credential:crm]" ||
		!strings.Contains(string(body), `"method":"tools/call"`) || !strings.Contains(string(body), `"name":"create_ticket"`) ||
		!strings.Contains(string(body), `"title":"dry"`) {
		t.Fatalf("dry run %v", dr["_body"])
	}
	// The current state comes from the server's read tool; the diff is
	// what the call would add.
	diff, _ := json.Marshal(pv["diff"])
	if string(diff) != `[{"op":"add","path":"/titles/1","value":"dry"}]` || pv["preview_error"] != nil {
		t.Fatalf("dry run diff %s: %v", diff, dr["_body"])
	}
	ts.mu.Lock()
	reads := fmt.Sprint(ts.reads)
	ts.mu.Unlock()
	if reads != "[map[queue:main]]" {
		t.Fatalf("read tool calls %s", reads)
	}
	// A denied agent's dry run reads nothing.
	if _, d := e.do("POST", "/v1/actions", otherKey, map[string]any{"task": "ops.ticket", "input": map[string]any{"title": "x"}, "dry_run": true}); d["status"] != "dry_run" {
		t.Fatalf("denied dry run: %v", d["_body"])
	}
	ts.mu.Lock()
	if len(ts.reads) != 1 {
		t.Errorf("a denied dry run called the read tool")
	}
	ts.mu.Unlock()
	if n := len(ts.snapshot()); n != 1 {
		t.Fatalf("%d tool calls after denied, invalid and dry-run proposals", n)
	}

	// The tool's own error: the action failed, the agent sees why, the
	// echoed credential redacted.
	st, f := e.propose(supportKey, "ops.ticket", map[string]any{"title": "fail"})
	if st != 502 || f["code"] != "upstream_error" || f["detail"] != "the upstream tool reported an error: queue closed for Bearer [REDACTED]" {
		t.Fatalf("tool error: %d %v", st, f["_body"])
	}
	if fa, _ := f["action"].(map[string]any); fa["status"] != "failed" {
		t.Fatalf("tool error left %v", f["_body"])
	}

	// Approval: nothing runs until a finance member approves the exact request.
	id, apr, hash := e.pend(e.propose(supportKey, "ops.ticket_reviewed", map[string]any{"title": "after review"}))
	if n := len(ts.snapshot()); n != 2 {
		t.Fatalf("%d tool calls while pending", n)
	}
	if st, r := e.approve(aliceKey, apr, hash, true); st != 200 {
		t.Fatalf("approve %d %v", st, r["_body"])
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.status(id) != "succeeded" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	calls = ts.snapshot()
	if e.status(id) != "succeeded" || len(calls) != 3 || calls[2].Args["title"] != "after review" {
		t.Fatalf("after approval: %s, calls %+v", e.status(id), calls)
	}
	for _, c := range calls {
		if c.Args["dropped"] != nil {
			t.Fatal("a tool no task names was called")
		}
	}

	// An auditor's console names the tool the action called.
	if st, page := consoleSignIn(t, e.url, aliceKey).get("/console/actions/" + a["id"].(string)); st != 200 ||
		!strings.Contains(page, "POST "+ts.url+" tool create_ticket") {
		t.Errorf("console action page: %d %.300s", st, page)
	}

	// The credential is in no answer, log, audit record or database file.
	_, audit, _ := e.cli(nil, "audit", "export", "--config", e.cfgPath)
	if !strings.Contains(audit, `"upstream":{"method":"POST","url":"`+ts.url+`","tool":"create_ticket"`) {
		t.Fatalf("audit export lacks the tool call: %.400s", audit)
	}
	e.stop()
	for what, s := range map[string]string{"answers": a["_body"].(string) + dr["_body"].(string) + f["_body"].(string), "logs": e.logs.String(), "audit": audit} {
		if strings.Contains(s, crmSecret) {
			t.Errorf("credential in %s", what)
		}
	}
	filepath.Walk(filepath.Join(e.dir, "data"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), crmSecret) {
				t.Errorf("credential in %s", p)
			}
		}
		return err
	})
}

// Without egress.allow_private a loopback MCP server is refused before the
// session starts: the action fails egress_denied and the server sees nothing.
func TestMCPTaskEgress(t *testing.T) {
	ts := newTicketServer(t)
	hits := 0
	var mu sync.Mutex
	guard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
	}))
	defer guard.Close()
	e := newTestEnv(t, envOpts{extraTasks: strings.ReplaceAll(ticketTasks, "MCPURL", guard.URL)})
	st, a := e.propose(supportKey, "ops.ticket", map[string]any{"title": "x"})
	mu.Lock()
	defer mu.Unlock()
	if st != 502 || a["code"] != "egress_denied" || hits != 0 || len(ts.snapshot()) != 0 {
		t.Fatalf("%d %v; %d requests reached the server", st, a["_body"], hits)
	}
}

// An MCP task whose upstream is a server on the official TypeScript SDK
// (sessions over SSE, protocol 2025-11-25 or older: the gateway falls back
// from the 2026 discovery to initialize). The credential reaches it on
// every request; the idempotency key arrives in _meta; the agent sees the
// result with the echoed credential redacted.
func TestMCPTaskTypeScriptUpstream(t *testing.T) {
	lines, stderr := startNode(t, "upstream.mjs", "UPSTREAM_KEY="+crmSecret)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "http://127.0.0.1:") {
		t.Fatalf("upstream did not start: %q %s", lines.Text(), stderr.String())
	}
	mcpURL := lines.Text()
	e := newTestEnv(t, envOpts{allowPrivate: true, extraTasks: strings.ReplaceAll(ticketTasks, "MCPURL", mcpURL)})

	st, a := e.propose(supportKey, "ops.ticket", map[string]any{"title": "printer on fire"})
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("%d %v", st, a["_body"])
	}
	got, _ := json.Marshal(a["output"])
	if string(got) != `{"echo":"Bearer [REDACTED]","id":"TS-1","title":"printer on fire"}` {
		t.Fatalf("output %s", got)
	}
	st, f := e.propose(supportKey, "ops.ticket", map[string]any{"title": "fail"})
	if st != 502 || f["detail"] != "the upstream tool reported an error: queue closed (Bearer [REDACTED])" {
		t.Fatalf("tool error: %d %v", st, f["_body"])
	}
	// A tool the server lacks: it says so in a tool result.
	st, g := e.propose(supportKey, "ops.ticket_gone", map[string]any{})
	if d, _ := g["detail"].(string); st != 502 || d != "the upstream tool reported an error: MCP error -32602: Tool close_queue not found" {
		t.Fatalf("unknown tool: %d %v", st, g["_body"])
	}
	resp, err := http.Get(strings.TrimSuffix(mcpURL, "/mcp") + "/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var calls []struct {
		Args map[string]any
		Meta map[string]any
		Auth string
	}
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].Auth != "Bearer "+crmSecret || calls[0].Args["reporter"] != "support-bot" ||
		calls[0].Meta["agentg8/idempotency-key"] != "agentg8-"+a["id"].(string) {
		t.Fatalf("upstream saw %+v", calls)
	}
}
