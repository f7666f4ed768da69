package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	if !waitUntil(d, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitUntil polls cond for up to d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (e *testEnv) status(id string) string {
	_, a := e.do("GET", "/v1/actions/"+id, supportKey, nil)
	s, _ := a["status"].(string)
	return s
}

func (e *testEnv) approve(key, aprID, hash string, approve bool) (int, map[string]any) {
	verb := "reject"
	if approve {
		verb = "approve"
	}
	return e.do("POST", "/v1/approvals/"+aprID+"/"+verb, key, map[string]any{"request_hash": hash, "comment": "ok by me"})
}

// pend checks a 202 pending answer; use as e.pend(e.propose(...)).
func (e *testEnv) pend(st int, a map[string]any) (id, aprID, hash string) {
	e.t.Helper()
	return pendingOf(e.t, st, a)
}

func pendingOf(t *testing.T, st int, a map[string]any) (id, aprID, hash string) {
	t.Helper()
	if st != 202 || a["status"] != "pending_approval" {
		t.Fatalf("want 202 pending_approval, got %d %v", st, a["_body"])
	}
	apr := a["approval"].(map[string]any)
	return a["id"].(string), apr["id"].(string), apr["request_hash"].(string)
}

// webhook is a receiver that records notices and can fail on demand.
type webhook struct {
	srv   *httptest.Server
	mu    sync.Mutex
	got   []map[string]any
	fails atomic.Int32
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.fails.Load() > 0 {
			w.fails.Add(-1)
			rw.WriteHeader(500)
			return
		}
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		w.mu.Lock()
		w.got = append(w.got, m)
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) received() []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]map[string]any(nil), w.got...)
}

// A notification channel that does not answer (each send waits up to its
// timeout) must not hold up the worker's other duties: an action approved
// meanwhile runs at once, not after the hung sends.
func TestHangingChannelDoesNotHoldUpApprovals(t *testing.T) {
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer hook.Close()
	defer close(release) // before Close, which waits for the handlers
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: fmt.Sprintf("notify:\n  - {type: webhook, url: %q}\n", hook.URL)})
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 5000, "ref": "r1"}))
	<-entered // the notice's send hangs
	if st, d := e.approve(franKey, aprID, hash, true); st != 200 {
		t.Fatalf("approve: %d %v", st, d["_body"])
	}
	waitFor(t, "the approved action to run while the channel hangs", 5*time.Second, func() bool { return e.status(id) == "succeeded" })
}

func TestApprovalFlow(t *testing.T) {
	hook := newWebhook(t)
	slack := newWebhook(t)
	hook.fails.Store(1) // the first delivery fails and is retried
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: fmt.Sprintf(`notify:
  - {type: webhook, url: %q}
  - {type: webhook, url: %q, format: slack}
approvals:
  default_ttl: 1h
`, hook.srv.URL, slack.srv.URL)})

	st, a := e.propose(supportKey, "ops.refund", map[string]any{"amount": 5000, "ref": "r1"})
	id, aprID, hash := pendingOf(t, st, a)
	if e.up.count() != 0 {
		t.Fatal("pending action reached the upstream")
	}
	apr := a["approval"].(map[string]any)
	if req := apr["required"].([]any); len(req) != 1 || req[0].(map[string]any)["rule"] != "big-refunds" || apr["expires_at"] == nil {
		t.Errorf("approval: %v", apr)
	}
	// Approvers are told, with what will run; a failing webhook is retried.
	waitFor(t, "webhook notice", 10*time.Second, func() bool { return len(hook.received()) == 1 && len(slack.received()) == 1 })
	n := hook.received()[0]
	if n["event"] != "approval_requested" || n["approval_id"] != aprID || n["request_hash"] != hash ||
		!strings.Contains(fmt.Sprint(n["side_effects"]), "Refunds 5000 cents.") || !strings.Contains(n["target"].(string), "POST ") ||
		!strings.HasSuffix(n["link"].(string), "/v1/approvals/"+aprID) {
		t.Errorf("notice: %v", n)
	}
	if txt, _ := slack.received()[0]["text"].(string); !strings.Contains(txt, "ops.refund") || !strings.Contains(txt, hash) {
		t.Errorf("slack text: %v", slack.received()[0])
	}

	// Who may see and decide.
	if st, _ := e.do("GET", "/v1/approvals", supportKey, nil); st != 403 {
		t.Errorf("agent listed approvals: %d", st)
	}
	if st, _ := e.approve(supportKey, aprID, hash, true); st != 403 {
		t.Errorf("agent approved: %d", st)
	}
	_, l := e.do("GET", "/v1/approvals?status=pending", franKey, nil)
	if list := l["approvals"].([]any); len(list) != 1 || list[0].(map[string]any)["can_decide"] != true {
		t.Fatalf("fran's inbox: %v", l["_body"])
	}
	if st, _ := e.do("GET", "/v1/approvals/"+aprID, aliceKey, nil); st != 200 {
		t.Errorf("auditor cannot read approval: %d", st)
	}
	if st, p := e.approve(franKey, aprID, "sha256:0000", true); st != 409 || p["code"] != "approval_mismatch" {
		t.Errorf("wrong hash: %d %v", st, p["_body"])
	}
	st, d := e.approve(franKey, aprID, hash, true)
	if st != 200 {
		t.Fatalf("approve: %d %v", st, d["_body"])
	}
	// The agent's long-poll sees it through to the end.
	waitFor(t, "execution", 10*time.Second, func() bool {
		_, g := e.do("GET", "/v1/actions/"+id+"?wait=5s", supportKey, nil)
		return g["status"] == "succeeded"
	})
	if e.up.count() != 1 {
		t.Fatalf("upstream calls: %d", e.up.count())
	}
	if st, p := e.approve(fredKey, aprID, hash, true); st != 409 || p["code"] != "not_pending" {
		t.Errorf("decision after the fact: %d %v", st, p["_body"])
	}
	// The approver's repeated click (its first answer lost, say) counts
	// once and answers as the first did; changing their mind is too late.
	if st, p := e.approve(franKey, aprID, hash, true); st != 200 || p["status"] != "approved" || p["action"].(map[string]any)["status"] != "succeeded" {
		t.Errorf("repeated approval after the fact: %d %v", st, p["_body"])
	}
	if st, p := e.approve(franKey, aprID, hash, false); st != 409 || p["code"] != "not_pending" {
		t.Errorf("rejection after approving: %d %v", st, p["_body"])
	}
	if e.up.count() != 1 {
		t.Errorf("upstream calls after repeated clicks: %d", e.up.count())
	}
	waitFor(t, "granted notice", 10*time.Second, func() bool { return len(hook.received()) == 2 })
	_, m := e.do("GET", "/metrics", "", nil)
	if !strings.Contains(m["_body"].(string), `agentg8_notifications_total{channel="webhook#0",result="error"} 1`) {
		t.Errorf("failed delivery not in metrics")
	}
	// The whole story is in the audit log, with who and the hash.
	_, ev := e.do("GET", "/v1/audit?action_id="+id, aliceKey, nil)
	var types []string
	for _, x := range ev["events"].([]any) {
		m := x.(map[string]any)
		types = append(types, m["type"].(string))
		if m["type"] == "approval_decided" && (m["user"] != "fran" || m["request_hash"] != hash || m["comment"] != "ok by me") {
			t.Errorf("decision event: %v", m)
		}
	}
	if got := strings.Join(types, ","); got != "proposed,approval_requested,approval_decided,approval_granted,executing,succeeded" {
		t.Errorf("audit trail: %s", got)
	}
}

func TestApprovalQuorumRejectAndSelfApproval(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	// Two rules match: big-refunds (1 of finance) and huge-refunds (2 of finance).
	_, aprID, hash := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 500000}))
	for i := 0; i < 3; i++ { // duplicate clicks count once
		if st, d := e.approve(franKey, aprID, hash, true); st != 200 || d["status"] != "pending" {
			t.Fatalf("fran %d: %d %v", i, st, d["_body"])
		}
	}
	_, d := e.approve(fredKey, aprID, hash, true)
	if d["status"] != "approved" {
		t.Fatalf("quorum of two: %v", d["_body"])
	}
	waitFor(t, "execution", 10*time.Second, func() bool { return e.up.count() == 1 })

	// A rejection ends it; nothing runs.
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 7}))
	if st, d := e.approve(fredKey, aprID, hash, false); st != 200 || d["status"] != "rejected" {
		t.Fatalf("reject: %d %v", st, d["_body"])
	}
	if e.status(id) != "rejected" {
		t.Errorf("status %s", e.status(id))
	}
	// Acting for alice, who is in finance: alice may not approve it.
	st, a := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "ops.wire", "input": map[string]any{"amount": 9}, "on_behalf_of": "alice"})
	_, aprID, hash = pendingOf(t, st, a)
	if st, p := e.approve(aliceKey, aprID, hash, true); st != 403 || p["code"] != "self_approval_forbidden" {
		t.Errorf("self approval: %d %v", st, p["_body"])
	}
	time.Sleep(300 * time.Millisecond)
	if e.up.count() != 1 {
		t.Errorf("upstream calls: %d", e.up.count())
	}
}

func TestApprovalBoundsAndJoining(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "approvals:\n  max_pending_per_agent: 2\n"})
	st, a1 := e.propose(supportKey, "ops.wire", map[string]any{"amount": 1})
	id1, _, _ := pendingOf(t, st, a1)
	// The identical request joins the pending one.
	st, again := e.propose(supportKey, "ops.wire", map[string]any{"amount": 1})
	if st != 202 || again["id"] != id1 {
		t.Fatalf("identical request: %d %v (want %s)", st, again["id"], id1)
	}
	e.propose(supportKey, "ops.wire", map[string]any{"amount": 2})
	if st, p := e.propose(supportKey, "ops.wire", map[string]any{"amount": 3}); st != 429 || p["code"] != "too_many_pending" {
		t.Fatalf("third pending: %d %v", st, p["_body"])
	}
}

func TestApprovalExpiresOnTheClock(t *testing.T) {
	clock := newTestClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	e := newTestEnv(t, envOpts{allowPrivate: true, clock: clock, extraConfig: "approvals:\n  default_ttl: 2h\n"})
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 1}))
	clock.Advance(119 * time.Minute)
	time.Sleep(1500 * time.Millisecond) // a worker pass: still pending
	if e.status(id) != "pending_approval" {
		t.Fatalf("expired early: %s", e.status(id))
	}
	clock.Advance(2 * time.Minute)
	waitFor(t, "expiry", 5*time.Second, func() bool { return e.status(id) == "expired" })
	if st, p := e.approve(franKey, aprID, hash, true); st != 409 || p["code"] != "not_pending" {
		t.Errorf("approve after expiry: %d %v", st, p["_body"])
	}
	if e.up.count() != 0 {
		t.Error("expired action ran")
	}
}

func TestApprovalVoidAndReevaluation(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	idA, aprA, hashA := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 1}))
	idB, aprB, hashB := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 2000}))
	e.stop()
	// The wire task changes; a new policy forbids refunds.
	replaceIn(t, filepath.Join(e.dir, "tasks", "tasks.yaml"), "A transfer that always needs approval.", "A transfer (edited).")
	appendFile(t, filepath.Join(e.dir, "policies", "main.cedar"), "\n@id(\"refunds-frozen\") forbid (principal, action == Action::\"ops.refund\", resource);\n")
	e.start()
	if st, p := e.approve(franKey, aprA, hashA, true); st != 409 || p["code"] != "approval_void" {
		t.Errorf("changed task: %d %v", st, p["_body"])
	}
	if st := e.status(idA); st != "cancelled" {
		t.Errorf("voided action is %s", st)
	}
	if st, _ := e.approve(franKey, aprB, hashB, true); st != 200 {
		t.Fatalf("approve B: %d", st)
	}
	waitFor(t, "re-evaluation", 10*time.Second, func() bool { return e.status(idB) == "denied" })
	if e.up.count() != 0 {
		t.Fatalf("upstream reached: %d", e.up.count())
	}
}

// TestApprovalRace approves, double-clicks, rejects and cancels many actions
// at once from many goroutines (run it with -race): every action executes at
// most once, and exactly the approved ones execute.
func TestApprovalRace(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "approvals:\n  max_pending_per_agent: 100\n"})
	const n = 30
	type pend struct{ id, apr, hash string }
	var ps []pend
	for i := 0; i < n; i++ {
		id, apr, hash := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 200000, "ref": fmt.Sprint(i)}))
		ps = append(ps, pend{id, apr, hash})
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		for _, key := range []string{franKey, fredKey, franKey, fredKey, aliceKey} {
			wg.Add(1)
			go func() { defer wg.Done(); e.approve(key, p.apr, p.hash, true) }()
		}
		if i%3 == 0 {
			wg.Add(1)
			go func() { defer wg.Done(); e.do("POST", "/v1/actions/"+p.id+"/cancel", supportKey, nil) }()
		}
	}
	wg.Wait()
	succeeded := 0
	for _, p := range ps {
		p := p
		waitFor(t, "a final state", 15*time.Second, func() bool {
			s := e.status(p.id)
			if s != "succeeded" && s != "cancelled" {
				for _, l := range strings.Split(e.logs.String(), "\n") {
					if strings.Contains(l, p.id) || strings.Contains(l, "ERROR") {
						t.Log(l)
					}
				}
			}
			return s == "succeeded" || s == "cancelled"
		})
		if e.status(p.id) == "succeeded" {
			succeeded++
		}
	}
	time.Sleep(500 * time.Millisecond)
	if e.up.count() != succeeded {
		t.Fatalf("%d upstream calls for %d succeeded actions", e.up.count(), succeeded)
	}
	refs := map[string]int{}
	for _, r := range e.up.all() {
		var b map[string]any
		json.Unmarshal(r.Body, &b)
		refs[fmt.Sprint(b["ref"])]++
	}
	for ref, c := range refs {
		if c != 1 {
			t.Errorf("action %s executed %d times", ref, c)
		}
	}
}

// mailpit starts a real mailpit SMTP server and returns its SMTP address and
// API URL.
func mailpit(t *testing.T) (string, string) {
	t.Helper()
	bin := os.Getenv("AGENTG8_MAILPIT")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/mailpit")
	}
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("mailpit"); err == nil {
			bin = p
		} else if os.Getenv("CI") != "" {
			t.Fatal("mailpit is not installed; run make tools")
		} else {
			t.Skip("mailpit is not installed; `make tools` installs it")
		}
	}
	port := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	smtpAddr, httpAddr := port(), port()
	cmd := exec.Command(bin, "--smtp", smtpAddr, "--listen", httpAddr, "--database", filepath.Join(t.TempDir(), "mail.db"), "--disable-version-check")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	api := "http://" + httpAddr
	waitFor(t, "mailpit", 20*time.Second, func() bool {
		resp, err := http.Get(api + "/api/v1/messages")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return smtpAddr, api
}

func TestApprovalEmailThroughMailpit(t *testing.T) {
	smtpAddr, api := mailpit(t)
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: fmt.Sprintf(`notify:
  - {type: smtp, addr: %q, from: agentg8@example.com, to_groups: [finance]}
`, smtpAddr)})
	_, aprID, _ := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 42}))
	var msgs struct {
		Messages []struct {
			ID        string `json:"ID"`
			MessageID string `json:"MessageID"`
			Subject   string `json:"Subject"`
			To        []struct {
				Address string `json:"Address"`
			} `json:"To"`
		} `json:"messages"`
	}
	waitFor(t, "an email", 15*time.Second, func() bool {
		resp, err := http.Get(api + "/api/v1/messages")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&msgs)
		return len(msgs.Messages) > 0
	})
	m := msgs.Messages[0]
	var to []string
	for _, x := range m.To {
		to = append(to, x.Address)
	}
	if !strings.Contains(m.Subject, "ops.wire") || strings.Join(to, ",") != "alice@example.com,fran@example.com,fred@example.com" {
		t.Errorf("mail: %q to %v", m.Subject, to)
	}
	// The delivery ID at the sender's domain: a notice sent again (its
	// first SMTP answer lost) has the same one, and mail clients show it
	// once.
	if !regexp.MustCompile(`^ntf_[0-9a-v]{26}@example\.com$`).MatchString(m.MessageID) {
		t.Errorf("Message-ID %q", m.MessageID)
	}
	resp, err := http.Get(api + "/api/v1/message/" + m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var full struct{ Text string }
	json.NewDecoder(resp.Body).Decode(&full)
	for _, want := range []string{`{"amount":42}`, "POST ", aprID, "sha256:"} {
		if !strings.Contains(full.Text, want) {
			t.Errorf("mail body lacks %q:\n%s", want, full.Text)
		}
	}
}

// TestDecisionCLIRetriesALostAnswer: `agentg8 approvals approve` and
// `agentg8 actions resolve` ask again when the answer is lost; the gateway
// answers a repeat as the first (the decision and the settling count
// once), so the command succeeds and the action runs once.
func TestDecisionCLIRetriesALostAnswer(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "execution:\n  resolvers: [finance]\n"})
	proxy := newLossyProxy(t, e.url)
	env := map[string]string{"AGENTG8_URL": proxy.url, "AGENTG8_KEY": franKey}
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 3}))
	proxy.lose(e, "lost-approval", "before the answer")
	code, out, errs := e.cli(env, "approvals", "approve", aprID, "--hash", hash, "--comment", "lost-approval", "--yes")
	if code != 0 || !strings.Contains(out, "approved: approval "+aprID+" is approved") || proxy.attempts("lost-approval") != 2 {
		t.Errorf("approve, answer lost: exit %d, attempts %d: %s %s", code, proxy.attempts("lost-approval"), out, errs)
	}
	waitFor(t, "the approved action to run", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	if n := strings.Count(auditTypes(e, id), "approval_decided"); n != 1 || e.up.count() != 1 {
		t.Errorf("decisions recorded %d, upstream calls %d; want 1 and 1", n, e.up.count())
	}

	// An outcome_unknown action: its outcome refused, the gateway stopped
	// (the refusal still in force, so nothing settles it), started again.
	db := refuseOutcomes(e)
	if st, _ := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "unknown"}); st != 503 {
		t.Fatalf("outcome refused: %d", st)
	}
	e.stop()
	if _, err := db.Exec(`DROP TRIGGER refuse_outcome`); err != nil {
		t.Fatal(err)
	}
	e.start()
	proxy = newLossyProxy(t, e.url)
	env["AGENTG8_URL"] = proxy.url
	_, l := e.do("GET", "/v1/actions?status=outcome_unknown", aliceKey, nil)
	if len(l["actions"].([]any)) != 1 {
		t.Fatalf("outcome_unknown actions: %v", l["_body"])
	}
	unknown := l["actions"].([]any)[0].(map[string]any)["id"].(string)
	proxy.lose(e, "lost-settling", "mid-body")
	code, out, errs = e.cli(env, "actions", "resolve", unknown, "--outcome", "succeeded", "--comment", "lost-settling")
	if code != 0 || !strings.Contains(out, `"status": "succeeded"`) || proxy.attempts("lost-settling") != 2 {
		t.Errorf("resolve, answer lost: exit %d, attempts %d: %s %s", code, proxy.attempts("lost-settling"), out, errs)
	}
	if n := strings.Count(auditTypes(e, unknown), "outcome_resolved"); n != 1 {
		t.Errorf("settlings recorded: %d, want 1", n)
	}
}

func TestApprovalCLI(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 3}))
	env := map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": franKey}
	code, out, errs := e.cli(env, "approvals", "list")
	if code != 0 || !strings.Contains(out, aprID) || !strings.Contains(out, "ops.wire") {
		t.Fatalf("list: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.cli(env, "approvals", "approve", aprID, "--hash", "sha256:stale", "--yes"); code != 1 || !strings.Contains(errs, "changed") {
		t.Errorf("stale hash: %d %s", code, errs)
	}
	// Without --yes it asks; "n" decides nothing.
	m := NewMain()
	var o syncBuffer
	m.Stdout, m.Stderr, m.LookupEnv, m.Stdin = &o, &o, lookup(env), strings.NewReader("n\n")
	if code := m.Run(t.Context(), []string{"approvals", "approve", aprID}); code != 1 || !strings.Contains(o.String(), "Approve this exact request?") {
		t.Errorf("confirmation: %d %s", code, o.String())
	}
	code, out, errs = e.cli(env, "approvals", "approve", aprID, "--hash", hash, "--comment", "fine", "--yes")
	if code != 0 || !strings.Contains(out, "request_hash "+hash) || !strings.Contains(out, "approved") {
		t.Fatalf("approve: %d %s %s", code, out, errs)
	}
	waitFor(t, "execution", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	code, out, _ = e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "propose", "ops.wire", "--input", `{"amount":4}`)
	if code != 0 || !strings.Contains(out, "pending_approval") {
		t.Errorf("propose pending: %d %s", code, out)
	}
}

// A webhook URL often carries its token in the path (Slack's do): a failed
// delivery's error names the webhook by scheme and host only, in the logs
// and in the queue's stored last error.
func TestWebhookURLStaysOutOfLogs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every delivery fails
	const token = "whk_T0123_B4567_secret89abcdef"
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: fmt.Sprintf("notify:\n  - {type: webhook, url: \"http://%s/services/%s?k=%s\"}\n", addr, token, token)})
	st, a := e.propose(supportKey, "ops.wire", map[string]any{"amount": 1})
	pendingOf(t, st, a)
	waitFor(t, "a failed delivery", 10*time.Second, func() bool { return strings.Contains(e.logs.String(), "notification failed") })
	e.stop()
	if l := e.logs.String(); strings.Contains(l, token) || !strings.Contains(l, "http://"+addr) {
		t.Errorf("logs name the webhook's token, or not its host: %s", l)
	}
	filepath.Walk(filepath.Join(e.dir, "data"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		if b, _ := os.ReadFile(p); strings.Contains(string(b), token) {
			t.Errorf("the webhook's token is in %s", p)
		}
		return nil
	})
}

// TestSignedWebhooks: a webhook with a secret gets every notice signed
// (AgentG8-Signature: t=…,v1=HMAC-SHA256 over "t.body", checked here by
// the documented recipe, not by AgentG8's code) and every attempt of one
// notice carries the same AgentG8-Delivery. The secret is read at each
// send (rotating its file needs no restart) and appears in no log and no
// database file.
func TestSignedWebhooks(t *testing.T) {
	type request struct {
		header http.Header
		body   []byte
	}
	var mu sync.Mutex
	var got []request
	var fail atomic.Int32
	fail.Store(1) // the first delivery fails: its retry must carry the same delivery ID
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Header.Clone(), b})
		mu.Unlock()
		if fail.Add(-1) >= 0 {
			w.WriteHeader(500)
		}
	}))
	defer hook.Close()
	received := func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), got...)
	}
	const first, second = "whsec_first_0123456789abcdef", "whsec_second_0123456789abcdef"
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true,
		extraConfig: fmt.Sprintf("notify:\n  - {type: webhook, url: %q, secret: \"file:secrets/hook\"}\n", hook.URL)})
	secretFile := filepath.Join(e.dir, "secrets", "hook")
	writeFile(t, secretFile, first+"\n")
	e.start()
	verify := func(r request, secret string) error {
		sig := r.header.Get("AgentG8-Signature")
		var ts, v1 string
		for _, part := range strings.Split(sig, ",") {
			k, v, _ := strings.Cut(part, "=")
			switch k {
			case "t":
				ts = v
			case "v1":
				v1 = v
			}
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
			return fmt.Errorf("timestamp %q", ts)
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "."))
		mac.Write(r.body)
		if want := hex.EncodeToString(mac.Sum(nil)); v1 != want {
			return fmt.Errorf("v1 %q, want %q", v1, want)
		}
		return nil
	}

	_, aprID, hash := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 5000, "ref": "signed"}))
	waitFor(t, "the notice and its retry", 15*time.Second, func() bool { return len(received()) == 2 })
	rs := received()
	if d := rs[0].header.Get("AgentG8-Delivery"); d == "" || rs[1].header.Get("AgentG8-Delivery") != d {
		t.Errorf("delivery IDs of one notice's attempts: %q, %q", d, rs[1].header.Get("AgentG8-Delivery"))
	}
	for i, r := range rs {
		if err := verify(r, first); err != nil {
			t.Errorf("attempt %d: signature: %v", i, err)
		}
		if verify(r, second) == nil {
			t.Errorf("attempt %d verifies with another secret", i)
		}
	}
	// Rotated in place: the next notice is signed with the new secret.
	writeFile(t, secretFile, second+"\n")
	if st, d := e.approve(franKey, aprID, hash, true); st != 200 {
		t.Fatalf("approve: %d %v", st, d["_body"])
	}
	waitFor(t, "the granted notice", 15*time.Second, func() bool { return len(received()) == 3 })
	r := received()[2]
	if err := verify(r, second); err != nil || !strings.Contains(string(r.body), `"approval_granted"`) {
		t.Errorf("after rotation: %v %s", err, r.body)
	}
	if r.header.Get("AgentG8-Delivery") == rs[0].header.Get("AgentG8-Delivery") {
		t.Error("two notices share a delivery ID")
	}
	e.stop()
	assertScanned(t, "the logs", []byte(e.logs.String()), "approval", []string{first, second})
	var db []byte // the database and its journal
	files, _ := filepath.Glob(filepath.Join(e.dir, "data", "agentg8.db*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		db = append(db, b...)
	}
	assertScanned(t, "the database", db, "ops.refund", []string{first, second})
}
