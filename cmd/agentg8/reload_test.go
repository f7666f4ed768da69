package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8"
)

// TestReloadOnSIGHUP: a running gateway re-reads tasks and policies on
// SIGHUP; the change is audited, REST and MCP see it at once, the stdio
// bridge tells its desktop client with notifications/tools/list_changed,
// and a catalog that does not load changes nothing.
func TestReloadOnSIGHUP(t *testing.T) {
	bin := buildBinary(t)
	up := newRecorder(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true})
	p := startProc(t, bin, cfg)

	e := &testEnv{t: t, url: p.url}
	toolNames := func() []string {
		_, out := e.do("GET", "/v1/tools?format=mcp", supportKey, nil)
		tools, _ := out["tools"].([]any)
		var names []string
		for _, tl := range tools {
			names = append(names, tl.(map[string]any)["name"].(string))
		}
		return names
	}
	if slices.Contains(toolNames(), "crm.list_invoices") {
		t.Fatal("new task visible before it exists")
	}

	// A desktop client on the stdio bridge, which does not poll: it learns
	// of changes from the gateway's stream (subscriptions/listen).
	changed := make(chan struct{}, 8)
	client := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	bridge := exec.Command(bin, "mcp", "--url", p.url, "--poll", "0")
	bridge.Env = append(os.Environ(), "AGENTG8_KEY="+supportKey)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: bridge}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	// A new task and a policy that permits it.
	writeFile(t, filepath.Join(dir, "tasks", "invoices.yaml"), `
- name: crm.list_invoices
  description: List a customer's invoices.
  risk: read
  input: {type: object, required: [customer_id], properties: {customer_id: {type: string}}}
  credential: crm
  request:
    method: GET
    url: `+up.srv.URL+`/customers/${input.customer_id}/invoices
`)
	writeFile(t, filepath.Join(dir, "policies", "invoices.cedar"),
		`@id("support-invoices") permit (principal in Group::"support", action == Action::"crm.list_invoices", resource);`)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reloaded tool over REST", 10*time.Second, func() bool {
		ok := slices.Contains(toolNames(), "crm.list_invoices")
		if !ok && strings.Contains(p.logs.String(), "reload refused") {
			t.Fatalf("reload refused: %s", p.logs.String())
		}
		return ok
	})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the stdio client was not told the tool list changed")
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(tools.Tools, func(tl *mcp.Tool) bool { return tl.Name == "crm.list_invoices" }) {
		t.Fatal("bridge does not offer the new tool")
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "crm.list_invoices", Arguments: map[string]any{"customer_id": "cus_9"}})
	if err != nil || res.IsError {
		t.Fatalf("calling the new tool: %v %+v", err, res)
	}
	if got := up.last().Path; got != "/customers/cus_9/invoices" {
		t.Errorf("upstream saw %s", got)
	}

	// Removing it again: the bridge drops it and says so.
	os.Remove(filepath.Join(dir, "tasks", "invoices.yaml"))
	os.Remove(filepath.Join(dir, "policies", "invoices.cedar"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the tool gone over REST", 10*time.Second, func() bool { return !slices.Contains(toolNames(), "crm.list_invoices") })
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the stdio client was not told the tool was removed")
	}

	// A broken catalog is refused: the old one stays in force.
	writeFile(t, filepath.Join(dir, "policies", "broken.cedar"), `permit (principal, action, resource) when { nonsense`)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the refused reload logged", 10*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "reload refused")
	})
	if !slices.Contains(toolNames(), "crm.get_customer") {
		t.Error("a refused reload changed the catalog")
	}

	// Each applied reload is in the audit log.
	if n := countReloads(e, ""); n != 2 {
		t.Errorf("catalog_reloaded events: %d, want 2", n)
	}
}

// A reload also re-reads the agents' and users' keys: a key kept in a file
// rotates without a restart (the old key stops working at once), and a key
// that cannot be read refuses the reload, keeping the keys in force.
func TestReloadRotatesKeys(t *testing.T) {
	s, e, dir, _ := gatewayWithKeyFile(t, "SUPPORT_KEY", "support-key", supportKey)
	ctx := context.Background()
	get := func(key string) int {
		st, _ := e.propose(key, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		return st
	}
	if st := get(supportKey); st != 200 {
		t.Fatalf("before rotation: %d", st)
	}
	const rotated = "ag8_support_bot_rotated_key_0123456789abcdef"
	writeFile(t, filepath.Join(dir, "secrets", "support-key"), rotated+"\n")
	if st := get(supportKey); st != 200 {
		t.Errorf("the old key stopped before the reload: %d", st)
	}
	s.reload(ctx)
	if st := get(supportKey); st != 401 {
		t.Errorf("the old key after the reload: %d", st)
	}
	if st := get(rotated); st != 200 {
		t.Errorf("the new key after the reload: %d", st)
	}
	// A key that cannot be read: nothing changes.
	os.Remove(filepath.Join(dir, "secrets", "support-key"))
	s.reload(ctx)
	if st := get(rotated); st != 200 {
		t.Errorf("a refused reload changed the keys: %d", st)
	}
	if n := countReloads(e, "keys"); n != 1 {
		t.Errorf("audited reloads: %d, want 1", n)
	}
}

// A reload puts a credential's new definition in force for the next
// action; one whose secret cannot be read refuses the whole reload and the
// credential in force stays.
func TestReloadCredentials(t *testing.T) {
	up := newRecorder(t)
	s, e, dir, path := reloadableGateway(t, up.srv.URL, nil)
	ctx := context.Background()
	sent := func() http.Header {
		t.Helper()
		if st, body := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
			t.Fatalf("propose: %d %v", st, body)
		}
		all := up.all()
		return all[len(all)-1].Header
	}
	if h := sent(); h.Get("Authorization") != "Bearer "+crmSecret {
		t.Fatalf("before the reload the upstream got Authorization %q", h.Get("Authorization"))
	}
	const rotated = "sk_live_rotated_0123456789"
	writeFile(t, filepath.Join(dir, "secrets", "crm-2"), rotated+"\n")
	replaceIn(t, path, `secret: "file:secrets/crm", header: Authorization, format: "Bearer {secret}"`,
		`secret: "file:secrets/crm-2", header: X-Api-Key, format: "{secret}"`)
	s.reload(ctx)
	if h := sent(); h.Get("X-Api-Key") != rotated || h.Get("Authorization") != "" {
		t.Errorf("after the reload the upstream got X-Api-Key %q, Authorization %q", h.Get("X-Api-Key"), h.Get("Authorization"))
	}
	// A secret that cannot be read: nothing changes.
	replaceIn(t, path, "file:secrets/crm-2", "file:secrets/missing")
	s.reload(ctx)
	if h := sent(); h.Get("X-Api-Key") != rotated {
		t.Errorf("a refused reload changed the credential: X-Api-Key %q", h.Get("X-Api-Key"))
	}
	// The preview shows the credential in force, masked.
	st, body := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "cus_1", "note": "n"}, "dry_run": true})
	if b, _ := json.Marshal(body); st != 200 || !strings.Contains(string(b), `"X-Api-Key":"[credential:crm]"`) || strings.Contains(string(b), rotated) {
		t.Errorf("dry run after the reload: %d %s", st, b)
	}
	if n := countReloads(e, "credentials (changed)"); n != 1 {
		t.Errorf("audited credential reloads: %d, want 1", n)
	}
}

// A reload re-reads the config's agents and users: a new agent can
// propose at once, a removed user's key and console sign-in stop working,
// a user whose key changed is signed out of the console, and a change to
// any other setting refuses the whole reload (it needs a restart).
func TestReloadPeople(t *testing.T) {
	s, e, dir, cfg := gatewayWithKeyFile(t, "ALICE_KEY", "alice-key", aliceKey)
	ctx := context.Background()
	const newBotKey = "ag8_new_bot_key_for_reload_0123456789abcdef"
	propose := func(key string) int {
		st, _ := e.propose(key, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		return st
	}
	fran := consoleSignIn(t, e.url, franKey)
	alice := consoleSignIn(t, e.url, aliceKey)

	// A change outside agents and users: refused, nothing changes.
	writeFile(t, filepath.Join(dir, "secrets", "new-bot"), newBotKey+"\n")
	replaceIn(t, cfg, "agents:\n", "agents:\n  - {id: new-bot, key: \"file:secrets/new-bot\", groups: [support]}\n")
	appendFile(t, cfg, "limits:\n  max_body_bytes: 5000\n")
	s.reload(ctx)
	if st := propose(newBotKey); st != 401 {
		t.Errorf("a refused reload added an agent: %d", st)
	}
	// Without it: the new agent proposes, fran (removed) is out, alice
	// (key rotated) is signed out of the console, her new key works.
	replaceIn(t, cfg, "limits:\n  max_body_bytes: 5000\n", "")
	replaceIn(t, cfg, "  - {id: fran, groups: [finance], key: \"env:FRAN_KEY\", email: fran@example.com}\n", "")
	const aliceRotated = "ag8_alice_rotated_key_0123456789abcdefgh"
	writeFile(t, filepath.Join(dir, "secrets", "alice-key"), aliceRotated+"\n")
	if st, _ := fran.get("/console/"); st != 200 {
		t.Fatalf("fran before the reload: %d", st)
	}
	s.reload(ctx)
	if st := propose(newBotKey); st != 200 {
		t.Errorf("the new agent after the reload: %d", st)
	}
	if st, _ := e.do("GET", "/v1/approvals", franKey, nil); st != 401 {
		t.Errorf("a removed user's key: %d", st)
	}
	if st, _ := fran.get("/console/"); st != 303 {
		t.Errorf("a removed user's console sign-in: %d", st)
	}
	if st, _ := alice.get("/console/"); st != 303 {
		t.Errorf("a console sign-in with a rotated key: %d", st)
	}
	if st, _ := consoleSignIn(t, e.url, aliceRotated).get("/console/"); st != 200 {
		t.Errorf("signing in with the new key: %d", st)
	}
}

// A reload re-reads who audits and the limits on agents: a group dropped
// from the auditors loses the audit log at once, one added gains it, a new
// rate limit applies to the next proposal without refilling the agent's
// bucket, and a new approval TTL applies to the next approval request.
func TestReloadRules(t *testing.T) {
	s, e, _, path := reloadableGateway(t, newRecorder(t).srv.URL, func(_, path string) {
		appendFile(t, path, "limits:\n  actions_per_minute: 3\n")
	})
	ctx := context.Background()
	propose := func() int {
		st, _ := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		return st
	}
	audit := func(key string) int {
		st, _ := e.do("GET", "/v1/audit?limit=1", key, nil)
		return st
	}
	for i := 0; i < 2; i++ {
		if st := propose(); st != 200 {
			t.Fatalf("proposal %d under the limit: %d", i+1, st)
		}
	}
	if audit(aliceKey) != 200 || audit(franKey) != 403 {
		t.Fatalf("before the reload: alice %d, fran %d", audit(aliceKey), audit(franKey))
	}

	// A higher limit: the bucket keeps its one token (a refill at 10 a
	// minute takes 6 s), it is not filled to 10. Nobody audits.
	replaceIn(t, path, "actions_per_minute: 3", "actions_per_minute: 10")
	replaceIn(t, path, "auditors: [auditors]", "auditors: [compliance]")
	s.reload(ctx)
	if st := propose(); st != 200 {
		t.Errorf("the token left after the reload: %d", st)
	}
	if st, p := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 429 || p["code"] != "rate_limited" {
		t.Errorf("past the bucket after the reload: %d %v (a reload must not refill it)", st, p["_body"])
	}
	if st := audit(aliceKey); st != 403 {
		t.Errorf("alice's audit access after her group left the auditors: %d", st)
	}

	// No limit, finance audits, approvals wait an hour.
	replaceIn(t, path, "limits:\n  actions_per_minute: 10\n", "approvals:\n  default_ttl: 1h\n")
	replaceIn(t, path, "auditors: [compliance]", "auditors: [finance]")
	s.reload(ctx)
	for i := 0; i < 5; i++ {
		if st := propose(); st != 200 {
			t.Fatalf("proposal %d without a limit: %d", i+1, st)
		}
	}
	if st := audit(franKey); st != 200 {
		t.Errorf("fran's audit access after finance joined the auditors: %d", st)
	}
	st, a := e.propose(supportKey, "ops.wire", map[string]any{"amount": 1})
	pendingOf(t, st, a)
	expires, err := time.Parse(time.RFC3339Nano, a["approval"].(map[string]any)["expires_at"].(string))
	if left := time.Until(expires); err != nil || left < 55*time.Minute || left > time.Hour {
		t.Errorf("a new approval request expires in %v (%v), want the reloaded 1h", left, err)
	}
	if n := countReloads(e, "auditors, resolvers and limits (changed)"); n != 2 {
		t.Errorf("audited reloads of the rules: %d, want 2", n)
	}
}

// A queued approval notice names its channel by the channel's definition,
// not its place in the list: when a reload (or a restart, or a replica on
// another config) puts another channel in that place, the notice is not
// sent there; it waits on the retry schedule and reaches its own channel
// when that is configured again. New notices go to the channels in force.
func TestNotificationsKeepToTheirChannel(t *testing.T) {
	a, b := newWebhook(t), newWebhook(t)
	a.fails.Store(1) // the first delivery fails: the notice waits for a retry
	clock := newTestClock(time.Now().UTC())
	line := func(w *webhook) string { return fmt.Sprintf("  - {type: webhook, url: %q}\n", w.srv.URL) }
	s, e, _, path := reloadableGatewayAt(t, newRecorder(t).srv.URL, clock, func(_, path string) {
		appendFile(t, path, "notify:\n"+line(a))
	})
	ctx := context.Background()
	st, first := e.propose(supportKey, "ops.wire", map[string]any{"amount": 1})
	firstID, _, _ := pendingOf(t, st, first)
	waitFor(t, "the first delivery attempt", 10*time.Second, func() bool { return a.fails.Load() == 0 })

	// B takes A's place; the retry comes due.
	replaceIn(t, path, line(a), line(b))
	s.reload(ctx)
	clock.Advance(3 * time.Second)
	waitFor(t, "the retry, refused for want of its channel", 10*time.Second, func() bool {
		_, m := e.do("GET", "/metrics", "", nil)
		return len(b.received()) > 0 || strings.Contains(m["_body"].(string), `agentg8_notifications_total{channel="unknown",result="error"} 1`)
	})
	if got := b.received(); len(got) > 0 {
		t.Fatalf("B received %v: a notice queued for A went to the channel in its place", got)
	}
	st, second := e.propose(supportKey, "ops.wire", map[string]any{"amount": 2})
	secondID, _, _ := pendingOf(t, st, second)
	waitFor(t, "the new notice at B", 10*time.Second, func() bool { return len(b.received()) > 0 })

	// A configured again, after B: the first notice reaches A at its next
	// retry.
	replaceIn(t, path, line(b), line(b)+line(a))
	s.reload(ctx)
	clock.Advance(5 * time.Second)
	waitFor(t, "the first notice at A", 10*time.Second, func() bool { return len(a.received()) > 0 })
	if got := a.received(); len(got) != 1 || got[0]["action_id"] != firstID {
		t.Errorf("A received %v, want only the notice of %s", got, firstID)
	}
	if got := b.received(); len(got) != 1 || got[0]["action_id"] != secondID {
		t.Errorf("B received %v, want only the notice of %s (queued after it took A's place)", got, secondID)
	}
	if n := countReloads(e, "notification channels (changed)"); n != 2 {
		t.Errorf("audited reloads of the channels: %d, want 2", n)
	}
}

// A notification queued before channels had keys (schema 6) goes to the
// channel now at its old position, as it always did.
func TestLegacyNotificationsKeepTheirPosition(t *testing.T) {
	a := newWebhook(t)
	_, _, dir, _ := reloadableGateway(t, newRecorder(t).srv.URL, func(_, path string) {
		appendFile(t, path, fmt.Sprintf("notify:\n  - {type: webhook, url: %q}\n", a.srv.URL))
	})
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "agentg8.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO notifications (id, action_id, channel, event, payload, attempts, next_at, delivered, last_error)
		VALUES ('ntf_old', 'act_old', 0, 'approval_requested', CAST(? AS BLOB), 0, 0, 0, '')`, `{"event":"approval_requested","action_id":"act_old"}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old notification", 10*time.Second, func() bool { return len(a.received()) > 0 })
	if got := a.received(); got[0]["action_id"] != "act_old" {
		t.Errorf("A received %v", got)
	}
}

// gatewayWithKeyFile serves a gateway in this process whose config reads
// one principal's key (the environment variable env) from secrets/file
// instead, so that a test can rotate it; it returns the gateway, a client
// environment, the config folder and the config file.
func gatewayWithKeyFile(t *testing.T, env, file, key string) (*server, *testEnv, string, string) {
	t.Helper()
	return reloadableGateway(t, newRecorder(t).srv.URL, func(dir, path string) {
		replaceIn(t, path, `key: "env:`+env+`"`, `key: "file:secrets/`+file+`"`)
		writeFile(t, filepath.Join(dir, "secrets", file), key+"\n")
	})
}

// reloadableGateway starts a gateway in this process on a new config
// folder (upstream at upstream), once edit, if any, has changed its files;
// it returns the gateway, a client, the folder and the config file's path.
func reloadableGateway(t *testing.T, upstream string, edit func(dir, path string)) (*server, *testEnv, string, string) {
	t.Helper()
	return reloadableGatewayAt(t, upstream, agentg8.SystemClock{}, edit)
}

// reloadableGatewayAt is reloadableGateway on clock.
func reloadableGatewayAt(t *testing.T, upstream string, clock agentg8.Clock, edit func(dir, path string)) (*server, *testEnv, string, string) {
	t.Helper()
	dir := t.TempDir()
	path := writeConfig(t, dir, upstream, envOpts{allowPrivate: true})
	if edit != nil {
		edit(dir, path)
	}
	c, err := LoadConfig(path, lookup(testEnvVars()))
	if err != nil {
		t.Fatal(err)
	}
	s := serveInProcessAt(t, c, slog.New(slog.DiscardHandler), clock)
	return s, &testEnv{t: t, url: "http://" + s.ln.Addr().String()}, dir, path
}

// countReloads counts the catalog_reloaded events whose detail contains
// detail, as an auditor reads them.
func countReloads(e *testEnv, detail string) int {
	_, ev := e.do("GET", "/v1/audit?limit=1000", aliceKey, nil)
	events, _ := ev["events"].([]any)
	n := 0
	for _, x := range events {
		m := x.(map[string]any)
		if d, _ := m["detail"].(string); m["type"] == "catalog_reloaded" && strings.Contains(d, detail) {
			n++
		}
	}
	return n
}

// A notification leaves the database once delivered, and once given up
// after its last attempt: its payload (the request's input and preview)
// is kept only by the audit log.
func TestNotificationsLeaveTheOutbox(t *testing.T) {
	down, up := newWebhook(t), newWebhook(t)
	down.fails.Store(1000) // never answers well
	clock := newTestClock(time.Now().UTC())
	_, e, dir, _ := reloadableGatewayAt(t, newRecorder(t).srv.URL, clock, func(_, path string) {
		appendFile(t, path, fmt.Sprintf("notify:\n  - {type: webhook, url: %q}\n  - {type: webhook, url: %q}\n", down.srv.URL, up.srv.URL))
	})
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "agentg8.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	queued := func() (n int) {
		if err := db.QueryRow(`SELECT count(*) FROM notifications`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	st, a := e.propose(supportKey, "ops.wire", map[string]any{"amount": 424242})
	pendingOf(t, st, a)
	waitFor(t, "the notice at the working channel", 10*time.Second, func() bool { return len(up.received()) == 1 })
	waitFor(t, "the delivered notice to leave", 10*time.Second, func() bool { return queued() == 1 })
	attempts := func() int { return int(1000 - down.fails.Load()) }
	// The clock moves on only once the worker has recorded the failed try
	// (and its next time, from the clock): moved between the webhook's
	// answer and that, the next try would be due 11 minutes later.
	recorded := func() (n int) {
		if err := db.QueryRow(`SELECT coalesce(max(attempts), 0) FROM notifications`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for n := 1; n < 12; n++ {
		waitFor(t, fmt.Sprintf("attempt %d recorded", n), 10*time.Second, func() bool { return recorded() == n })
		clock.Advance(11 * time.Minute) // past the longest backoff
	}
	waitFor(t, "the given-up notice to leave", 10*time.Second, func() bool { return queued() == 0 })
	clock.Advance(time.Hour)
	time.Sleep(1500 * time.Millisecond) // a worker tick or more
	if got := attempts(); got != 12 {
		t.Errorf("%d attempts at the failing channel, want 12", got)
	}
}

// A reload whose webhook signing secret cannot be read (or is too short)
// is refused like any unreadable secret: the channels in force stay.
func TestReloadChecksWebhookSecrets(t *testing.T) {
	hook := newWebhook(t)
	s, e, dir, path := reloadableGateway(t, newRecorder(t).srv.URL, func(dir, path string) {
		writeFile(t, filepath.Join(dir, "secrets", "hook"), "whsec_0123456789abcdef\n")
		appendFile(t, path, fmt.Sprintf("notify:\n  - {type: webhook, url: %q, secret: \"file:secrets/hook\"}\n", hook.srv.URL))
	})
	ctx := context.Background()
	replaceIn(t, path, "file:secrets/hook", "file:secrets/missing")
	s.reload(ctx)
	writeFile(t, filepath.Join(dir, "secrets", "short"), "short-secret\n")
	replaceIn(t, path, "file:secrets/missing", "file:secrets/short")
	s.reload(ctx)
	if n := countReloads(e, "notification channels"); n != 0 {
		t.Errorf("reloads put in force with an unusable signing secret: %d", n)
	}
	writeFile(t, filepath.Join(dir, "secrets", "next"), "whsec_next_0123456789abcdef\n")
	replaceIn(t, path, "file:secrets/short", "file:secrets/next")
	s.reload(ctx)
	if n := countReloads(e, "notification channels (changed)"); n != 1 {
		t.Errorf("the reload with a readable secret: %d put in force, want 1", n)
	}
}
