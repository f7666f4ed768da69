package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func mcpSession(t *testing.T, url, key string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := c.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: url + "/mcp", DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: bearerTransport(key)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// postMCP sends one raw JSON-RPC POST to /mcp (key "" sends no token);
// hdr are header name/value pairs, and "Host" sets the request's Host.
func postMCP(t *testing.T, url, key string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/mcp", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args any) (*mcp.CallToolResult, map[string]any, string) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var text string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	var sc map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &sc)
	return res, sc, text
}

func TestMCP(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	cs := mcpSession(t, e.url, supportKey)
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*mcp.Tool{}
	for _, tl := range tools.Tools {
		byName[tl.Name] = tl
	}
	for _, n := range []string{"crm.get_customer", "crm.add_note", "crm.delete_customer", "ops.refund", "agentg8_action_status", "agentg8_preview"} {
		if byName[n] == nil {
			t.Errorf("tool %s missing", n)
		}
	}
	if a := byName["crm.get_customer"].Annotations; !a.ReadOnlyHint || *a.DestructiveHint {
		t.Errorf("read hints: %+v", a)
	}
	if a := byName["crm.delete_customer"].Annotations; a.ReadOnlyHint || !*a.DestructiveHint {
		t.Errorf("destructive hints: %+v", a)
	}
	if !byName["crm.add_note"].Annotations.IdempotentHint {
		t.Error("idempotency header not hinted")
	}
	// Another agent sees only its own (none).
	other := mcpSession(t, e.url, otherKey)
	if ot, _ := other.ListTools(t.Context(), nil); len(ot.Tools) != 2 {
		t.Errorf("other agent tools: %d", len(ot.Tools))
	}

	res, sc, text := call(t, cs, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	if res.IsError || sc["status"] != "succeeded" || !strings.Contains(text, `"ok":true`) {
		t.Errorf("allowed: %v %s", sc, text)
	}
	if got := e.up.last().Header.Get("Authorization"); got != "Bearer "+crmSecret {
		t.Errorf("upstream saw %q (the agent's token must never pass upstream)", got)
	}
	res, sc, text = call(t, cs, "crm.delete_customer", map[string]any{"customer_id": "c"})
	if !res.IsError || !strings.HasPrefix(text, "policy_denied") || sc["error"].(map[string]any)["code"] != "policy_denied" {
		t.Errorf("denied: %s", text)
	}
	res, _, text = call(t, cs, "crm.add_note", map[string]any{"customer_id": "bob"})
	if !res.IsError || !strings.HasPrefix(text, "invalid_input") || !strings.Contains(text, "/customer_id") {
		t.Errorf("invalid: %s", text)
	}
	// An approval-requiring tool: a normal result that says how to follow up.
	res, sc, text = call(t, cs, "ops.refund", map[string]any{"amount": 5000})
	if res.IsError || sc["status"] != "pending_approval" || !strings.Contains(text, "agentg8_action_status") {
		t.Fatalf("pending: %s", text)
	}
	id := sc["action_id"].(string)
	apr := sc["approval"].(map[string]any)
	go func() {
		time.Sleep(300 * time.Millisecond)
		e.approve(franKey, apr["id"].(string), apr["request_hash"].(string), true)
	}()
	waitFor(t, "the approved refund", 15*time.Second, func() bool {
		_, sc, _ := call(t, cs, "agentg8_action_status", map[string]any{"action_id": id, "wait_seconds": 5})
		return sc["status"] == "succeeded"
	})
	// The second agent cannot read the first's actions.
	res, _, text = call(t, other, "agentg8_action_status", map[string]any{"action_id": id})
	if !res.IsError || !strings.HasPrefix(text, "not_found") {
		t.Errorf("cross-agent read: %s", text)
	}
	// Preview through the built-in.
	_, sc, _ = call(t, cs, "agentg8_preview", map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "cus_1", "note": "x"}})
	if sc["status"] != "dry_run" {
		t.Errorf("preview: %v", sc)
	}
	// Every call recorded the tool definition the model saw.
	_, ev := e.do("GET", "/v1/audit?limit=1000", aliceKey, nil)
	if !strings.Contains(ev["_body"].(string), `"tool_hash":"sha256:`) {
		t.Error("tool hash not audited")
	}
}

func TestMCPRefusals(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	initBody := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	post := func(key string, hdr ...string) *http.Response {
		resp := postMCP(t, e.url, key, strings.NewReader(initBody), hdr...)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := post(""); r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d", r.StatusCode)
	}
	if r := post("ag8_not_issued_by_us"); r.StatusCode != 401 {
		t.Errorf("foreign token: %d", r.StatusCode)
	}
	if r := post(aliceKey); r.StatusCode != 403 {
		t.Errorf("user key: %d", r.StatusCode)
	}
	if r := post(supportKey); r.StatusCode != 200 {
		t.Errorf("agent: %d", r.StatusCode)
	}
	if r := post(supportKey, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); r.StatusCode != 403 {
		t.Errorf("cross-origin: %d", r.StatusCode)
	}
	if r := post(supportKey, "Host", "evil.example"); r.StatusCode != 403 {
		t.Errorf("DNS rebinding (foreign Host on loopback): %d", r.StatusCode)
	}
}

func TestMCPStdioBridge(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	bin := buildBinary(t)
	cmd := exec.Command(bin, "mcp", "--url", e.url)
	cmd.Env = []string{"AGENTG8_KEY=" + supportKey, "PATH=/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) < 5 {
		t.Fatalf("tools over stdio: %v", err)
	}
	res, sc, text := call(t, cs, "crm.get_customer", map[string]any{"customer_id": "cus_7"})
	if res.IsError || sc["status"] != "succeeded" || e.up.last().Path != "/customers/cus_7" {
		t.Errorf("call over stdio: %s", text)
	}
	res, _, text = call(t, cs, "crm.delete_customer", map[string]any{"customer_id": "c"})
	if !res.IsError || !strings.HasPrefix(text, "policy_denied") {
		t.Errorf("denied over stdio: %s", text)
	}
}

// TestMCPFastPathAnswersLikeTheSDK sends each plain tools/call twice: with a
// Content-Length (served by the fast path) and chunked (which the fast path
// leaves to the go-sdk), and requires the same HTTP status, headers and
// JSON-RPC answer, IDs and times aside. Requests the fast path must not take
// are counted on the SDK path.
func TestMCPFastPathAnswersLikeTheSDK(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	type answer struct {
		status int
		ctype  string
		cache  string
		body   any
	}
	normalize := regexp.MustCompile(`(act|apr)_[0-9a-v]{26}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	send := func(body string, chunked bool, hdr ...string) answer {
		t.Helper()
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // unknown length: sent chunked
		}
		resp := postMCP(t, e.url, supportKey, rd, hdr...)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v any
		if err := json.Unmarshal(normalize.ReplaceAll(raw, []byte("X")), &v); err != nil {
			v = string(raw)
		}
		return answer{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), v}
	}
	counts := func() (fast, sdk int) {
		_, m := e.do("GET", "/metrics", "", nil)
		for _, l := range strings.Split(m["_raw"].(string), "\n") {
			var n int
			if _, err := fmt.Sscanf(l, `agentg8_mcp_requests_total{path="fast"} %d`, &n); err == nil {
				fast = n
			}
			if _, err := fmt.Sscanf(l, `agentg8_mcp_requests_total{path="sdk"} %d`, &n); err == nil {
				sdk = n
			}
		}
		return fast, sdk
	}
	callBody := func(id, name, args string) string {
		b := `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + name + `"`
		if args != "" {
			b += `,"arguments":` + args
		}
		return b + `}}`
	}
	same := []struct {
		name string
		body string
		hdr  []string
	}{
		{"allowed read", callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`), nil},
		{"string id, 2025-06-18", callBody(`"req-7"`, "crm.get_customer", `{"customer_id":"cus_2"}`), []string{"Mcp-Protocol-Version", "2025-06-18"}},
		{"2025-11-25", callBody("2", "crm.get_customer", `{"customer_id":"cus_3"}`), []string{"Mcp-Protocol-Version", "2025-11-25"}},
		{"denied", callBody("3", "crm.delete_customer", `{"customer_id":"c"}`), nil},
		{"invalid input", callBody("4", "crm.add_note", `{"customer_id":"bob"}`), nil},
		{"no arguments", callBody("5", "crm.get_customer", ""), nil},
		{"arguments not an object", callBody("6", "crm.get_customer", `[1]`), nil},
		{"pending approval", callBody("7", "ops.refund", `{"amount":5000}`), nil},
		{"built-in preview", callBody("8", "agentg8_preview", `{"task":"crm.add_note","input":{"customer_id":"cus_1","note":"x"}}`), nil},
		{"built-in status, bad arguments", callBody("9", "agentg8_action_status", `{}`), nil},
		// The second send repeats the first under its key: the same answer.
		{"idempotency key", `{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"crm.add_note","arguments":{"customer_id":"cus_1","note":"n"},"_meta":{"agentg8/idempotency-key":"k"}}}`, nil},
	}
	f0, s0 := counts()
	for _, c := range same {
		fast, sdk := send(c.body, false, c.hdr...), send(c.body, true, c.hdr...)
		if !reflect.DeepEqual(fast, sdk) {
			t.Errorf("%s:\nfast path %+v\ngo-sdk    %+v", c.name, fast, sdk)
		}
		if fast.status != 200 {
			t.Errorf("%s: status %d", c.name, fast.status)
		}
	}
	f1, s1 := counts()
	if f1-f0 != len(same) || s1-s0 != len(same) {
		t.Errorf("paths taken: fast %d, sdk %d; want %d each", f1-f0, s1-s0, len(same))
	}
	// Everything the fast path does not reproduce exactly goes to the SDK.
	for _, c := range []struct {
		name string
		body string
		hdr  []string
	}{
		{"unknown tool", callBody("1", "crm.nope", `{}`), nil},
		{"_meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.get_customer","arguments":{"customer_id":"cus_1"},"_meta":{"progressToken":"p"}}}`, nil},
		{"_meta beyond the key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.get_customer","arguments":{"customer_id":"cus_1"},"_meta":{"agentg8/idempotency-key":"k2","progressToken":"p"}}}`, nil},
		{"key not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.get_customer","arguments":{"customer_id":"cus_1"},"_meta":{"agentg8/idempotency-key":1}}}`, nil},
		{"duplicate member", `{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"crm.get_customer","arguments":{"customer_id":"cus_1"}}}`, nil},
		{"batch", `[` + callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`) + `]`, nil},
		{"other method", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil},
		{"fractional id", callBody("1.5", "crm.get_customer", `{"customer_id":"cus_1"}`), nil},
		{"newer protocol", callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`), []string{"Mcp-Protocol-Version", "2026-07-28"}},
		{"unsupported protocol", callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`), []string{"Mcp-Protocol-Version", "1999-01-01"}},
		{"session header", callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`), []string{"Mcp-Session-Id", "abc"}},
		{"foreign Host on loopback", callBody("1", "crm.get_customer", `{"customer_id":"cus_1"}`), []string{"Host", "evil.example"}},
	} {
		before, beforeSDK := counts()
		a := send(c.body, false, c.hdr...)
		if c.name == "foreign Host on loopback" && a.status != 403 {
			t.Errorf("DNS rebinding on tools/call: status %d", a.status)
		}
		after, afterSDK := counts()
		if after != before || afterSDK != beforeSDK+1 {
			t.Errorf("%s: fast %d→%d, sdk %d→%d; want it on the SDK path", c.name, before, after, beforeSDK, afterSDK)
		}
	}
}

// TestMCPIdempotencyKey: a tools/call carrying _meta
// "agentg8/idempotency-key" runs once; a repeat under the key — on either
// path — answers with the first call's action, and the key with other
// arguments is refused. Without a key the same call runs again.
func TestMCPIdempotencyKey(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	send := func(id, args, meta string, chunked bool) (status, actionID, code string) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"crm.add_note","arguments":` + args
		if meta != "" {
			body += `,"_meta":` + meta
		}
		var rd io.Reader = strings.NewReader(body + `}}`)
		if chunked {
			rd = io.MultiReader(rd) // the go-sdk's path
		}
		resp := postMCP(t, e.url, supportKey, rd)
		defer resp.Body.Close()
		var out struct {
			Result struct {
				StructuredContent struct {
					ActionID string `json:"action_id"`
					Status   string `json:"status"`
					Error    struct {
						Code string `json:"code"`
					} `json:"error"`
				} `json:"structuredContent"`
			} `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("tools/call: %d %v", resp.StatusCode, err)
		}
		sc := out.Result.StructuredContent
		return sc.Status, sc.ActionID, sc.Error.Code
	}
	note := `{"customer_id":"cus_1","note":"once"}`
	key := `{"agentg8/idempotency-key":"k-1"}`
	n0 := e.up.count()
	status, first, _ := send("1", note, key, false)
	if status != "succeeded" || first == "" || e.up.count() != n0+1 {
		t.Fatalf("first call: %s %s, upstream calls %d", status, first, e.up.count()-n0)
	}
	for _, chunked := range []bool{false, true} {
		if status, id, _ := send("2", note, key, chunked); status != "succeeded" || id != first {
			t.Errorf("repeat (chunked %v): %s %s, want the first call's action %s", chunked, status, id, first)
		}
	}
	if _, _, code := send("3", `{"customer_id":"cus_1","note":"other"}`, key, false); code != "idempotency_key_reused" {
		t.Errorf("the key with other arguments: %q", code)
	}
	if _, _, code := send("4", note, `{"agentg8/idempotency-key":7}`, false); code != "invalid_input" {
		t.Errorf("a key that is not a string: %q", code)
	}
	if got := e.up.count() - n0; got != 1 {
		t.Errorf("upstream calls under one key: %d, want 1", got)
	}
	if status, id, _ := send("5", note, "", false); status != "succeeded" || id == first || e.up.count()-n0 != 2 {
		t.Errorf("without a key: %s %s, upstream calls %d; want a second action", status, id, e.up.count()-n0)
	}
}

// TestMCPStdioBridgeRetriesALostAnswer: the bridge sends every tool call
// under an idempotency key and asks again when the answer is lost, so the
// desktop client gets the answer and the upstream is called once — when the
// connection drops before the answer, when it drops in the middle of it
// (the go-sdk gives that session up; the bridge connects again), and when
// it drops while the call still runs (the retry is told the first attempt
// is in progress, and waits for it).
func TestMCPStdioBridgeRetriesALostAnswer(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	proxy := newLossyProxy(t, e.url)
	bin := buildBinary(t)
	cmd := exec.Command(bin, "mcp", "--url", proxy.url)
	cmd.Env = []string{"AGENTG8_KEY=" + supportKey, "PATH=/usr/bin:/bin"}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	defer cs.Close()
	for _, how := range lossyHows {
		note := "bridge-" + strings.ReplaceAll(how, " ", "-")
		proxy.lose(e, note, how)
		res, sc, text := call(t, cs, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": note})
		if effects, tries := proxy.effects(e, note), proxy.attempts(note); res.IsError || sc["status"] != "succeeded" || effects != 1 || tries < 2 {
			t.Errorf("answer lost %s: %s; upstream calls %d (want 1), attempts %d\n%s", how, text, effects, tries, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "asking the gateway again under the request's idempotency key") {
		t.Errorf("retries not logged: %s", stderr.String())
	}
}
