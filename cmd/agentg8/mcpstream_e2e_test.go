package main

import (
	"bufio"
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// openStream opens GET /mcp as key; accept "" sends the usual header.
func openStream(t *testing.T, url, key, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/mcp", nil)
	if accept == "" {
		accept = "text/event-stream"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// nextEvent reads the stream's next data line (keepalive comments are
// skipped); "" when the stream ended or nothing came within d.
func nextEvent(resp *http.Response, d time.Duration) string {
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines <- data
				return
			}
		}
		lines <- ""
	}()
	select {
	case l := <-lines:
		return l
	case <-time.After(d):
		return ""
	}
}

// An agent holding a stream on /mcp (subscriptions/listen or the GET
// stream, by protocol version) is told when a reload changed the tool list
// (the official go-sdk client, as an MCP host uses it); an
// agent whose key is revoked by the reload loses its stream; the stream is
// refused to users, without text/event-stream, and beyond 8 per agent.
func TestMCPListChangedStream(t *testing.T) {
	up := newRecorder(t)
	s, e, dir, path := reloadableGateway(t, up.srv.URL, nil)

	// Two hosts on the official go-sdk client: one on the 2026-07-28
	// protocol (subscriptions/listen), one on 2025-11-25 (GET stream).
	changed := map[string]chan struct{}{}
	sessions := map[string]*mcp.ClientSession{}
	for _, version := range []string{"2026-07-28", "2025-11-25"} {
		ch := make(chan struct{}, 8)
		client := mcp.NewClient(&mcp.Implementation{Name: "host", Version: "1"}, &mcp.ClientOptions{
			ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { ch <- struct{}{} },
		})
		cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: e.url + "/mcp",
			HTTPClient: &http.Client{Transport: bearerTransport(supportKey)}}, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if got := cs.InitializeResult().ProtocolVersion; got != version {
			t.Fatalf("negotiated %s, want %s", got, version)
		}
		if caps := cs.InitializeResult().Capabilities; caps.Tools == nil || !caps.Tools.ListChanged {
			t.Fatalf("tools.listChanged not advertised: %+v", caps)
		}
		changed[version], sessions[version] = ch, cs
	}
	revoked := openStream(t, e.url, otherKey, "")
	if revoked.StatusCode != 200 || revoked.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", revoked.StatusCode, revoked.Header.Get("Content-Type"))
	}
	waitFor(t, "three streams open", 5*time.Second, func() bool { return s.mcp.Streams() == 3 })
	if m := e.metric("agentg8_mcp_streams"); m != "3" {
		t.Errorf("agentg8_mcp_streams %q", m)
	}

	// A new task and its policy; other-bot's key changes in the same reload.
	writeFile(t, filepath.Join(dir, "tasks", "invoices.yaml"), `
- name: crm.list_invoices
  description: List a customer's invoices.
  risk: read
  input: {type: object, properties: {customer_id: {type: string}}}
  request: {method: GET, url: "`+up.srv.URL+`/invoices"}
`)
	writeFile(t, filepath.Join(dir, "policies", "invoices.cedar"),
		`@id("support-invoices") permit (principal in Group::"support", action == Action::"crm.list_invoices", resource);`)
	writeFile(t, filepath.Join(dir, "secrets", "other"), "ag8_other_bot_rotated_key_0123456789abcdef\n")
	replaceIn(t, path, `key: "env:OTHER_KEY"`, `key: "file:secrets/other"`)
	s.reload(t.Context())

	for version, ch := range changed {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s client was not told the tool list changed", version)
		}
		tools, err := sessions[version].ListTools(t.Context(), nil)
		if err != nil || !slices.ContainsFunc(tools.Tools, func(tl *mcp.Tool) bool { return tl.Name == "crm.list_invoices" }) {
			t.Fatalf("%s: new tool not listed: %v", version, err)
		}
	}
	if ev := nextEvent(revoked, 5*time.Second); ev != "" {
		t.Fatalf("the revoked agent's stream got %q", ev)
	}
	waitFor(t, "the revoked stream gone", 5*time.Second, func() bool { return s.mcp.Streams() == 2 })

	// Refusals.
	if r := openStream(t, e.url, aliceKey, ""); r.StatusCode != 403 {
		t.Errorf("user key: %d", r.StatusCode)
	}
	if r := openStream(t, e.url, supportKey, "application/json"); r.StatusCode != 406 {
		t.Errorf("no event-stream accepted: %d", r.StatusCode)
	}
	for range 6 { // the go-sdk clients hold two already
		if r := openStream(t, e.url, supportKey, ""); r.StatusCode != 200 {
			t.Fatalf("stream within bound: %d", r.StatusCode)
		}
	}
	if r := openStream(t, e.url, supportKey, ""); r.StatusCode != 429 {
		t.Errorf("9th stream of one agent: %d", r.StatusCode)
	}
}

// Open streams (a GET stream, a go-sdk client's subscriptions/listen) do
// not hold a stopping gateway up.
func TestMCPStreamEndsAtStop(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	r := openStream(t, e.url, supportKey, "")
	if r.StatusCode != 200 {
		t.Fatalf("stream: %d", r.StatusCode)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "host", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {}})
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: e.url + "/mcp",
		HTTPClient: &http.Client{Transport: bearerTransport(supportKey)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	time.Sleep(200 * time.Millisecond) // the client opens its listen stream after Connect returns
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 5*time.Second || e.exitCode != 0 {
		t.Fatalf("stop took %s, exit %d", d, e.exitCode)
	}
	if ev := nextEvent(r, 2*time.Second); ev != "" {
		t.Fatalf("got %q", ev)
	}
}
