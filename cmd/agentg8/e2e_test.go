package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/store/sqlite"
)

func TestAllowedReadAndWrite(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})

	st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1", "q": "x"})
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("read: %d %v", st, a["_body"])
	}
	got := e.up.last()
	if got.Method != "GET" || got.Path != "/customers/cus_1" || got.RawQuery != "q=x&fixed=1" {
		t.Errorf("upstream got %s %s?%s", got.Method, got.Path, got.RawQuery)
	}
	if got.Header.Get("Authorization") != "Bearer "+crmSecret {
		t.Errorf("credential not injected: %q", got.Header.Get("Authorization"))
	}
	if out, _ := a["output"].(map[string]any); out == nil || out["internal_ref"] != nil || out["ok"] != true {
		t.Errorf("output not shaped (redact /internal_ref): %v", a["output"])
	}
	if d, _ := a["decision"].(map[string]any); d["effect"] != "allow" || !strings.Contains(a["_body"].(string), "support-crm") {
		t.Errorf("decision: %v", a["decision"])
	}

	st, a = e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_2", "note": "hello", "priority": 3})
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("write: %d %v", st, a["_body"])
	}
	got = e.up.last()
	var body map[string]any
	if err := json.Unmarshal(got.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body["text"] != "hello" || body["author"] != "support-bot" || body["priority"] != float64(3) || body["summary"] != "p=cus_2" {
		t.Errorf("body: %s", got.Body)
	}
	if got.Header.Get("Idempotency-Key") != "agentg8-"+a["id"].(string) {
		t.Errorf("idempotency header: %q", got.Header.Get("Idempotency-Key"))
	}
	if out, _ := a["output"].(map[string]any); out["text"] != "stored" {
		t.Errorf("output.select: %v", a["output"])
	}
	if e.up.count() != 2 {
		t.Errorf("upstream calls: %d", e.up.count())
	}

	// The proposer can read it back; another agent cannot see it exists.
	id := a["id"].(string)
	if st, g := e.do("GET", "/v1/actions/"+id, supportKey, nil); st != 200 || g["status"] != "succeeded" {
		t.Errorf("get: %d %v", st, g["_body"])
	}
	if st, g := e.do("GET", "/v1/actions/"+id, otherKey, nil); st != 404 || g["code"] != "not_found" {
		t.Errorf("other agent get: %d %v", st, g["_body"])
	}
	if st, g := e.do("GET", "/v1/actions", supportKey, nil); st != 200 || len(g["actions"].([]any)) != 2 {
		t.Errorf("list: %d %v", st, g["_body"])
	}
}

func TestRejectedRequestsNeverReachUpstream(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	cases := []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{"missing key", "", map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}}, 401, "unauthenticated"},
		{"wrong key", "ag8_wrong", map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}}, 401, "unauthenticated"},
		{"user key cannot propose", aliceKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}}, 403, "forbidden"},
		{"unknown task", supportKey, map[string]any{"task": "crm.nope", "input": map[string]any{}}, 404, "unknown_task"},
		{"case trick", supportKey, map[string]any{"task": "CRM.get_customer", "input": map[string]any{"customer_id": "c"}}, 404, "unknown_task"},
		{"trailing dot", supportKey, map[string]any{"task": "crm.get_customer.", "input": map[string]any{"customer_id": "c"}}, 404, "unknown_task"},
		{"zero width", supportKey, map[string]any{"task": "crm.get\u200b_customer", "input": map[string]any{"customer_id": "c"}}, 404, "unknown_task"},
		{"cyrillic look-alike", supportKey, map[string]any{"task": "\u0441rm.get_customer", "input": map[string]any{"customer_id": "c"}}, 404, "unknown_task"},
		{"leading space", supportKey, map[string]any{"task": " crm.get_customer", "input": map[string]any{"customer_id": "c"}}, 404, "unknown_task"},
		{"invalid input", supportKey, map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "bob"}}, 400, "invalid_input"},
		{"extra property", supportKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c", "admin": true}}, 400, "invalid_input"},
		{"duplicate keys", supportKey, `{"task":"crm.get_customer","input":{"customer_id":"a","customer_id":"b"}}`, 400, "invalid_input"},
		{"invalid utf-8", supportKey, []byte("{\"task\":\"crm.get_customer\",\"input\":{\"customer_id\":\"\xff\xfe\"}}"), 400, "invalid_input"},
		{"number too big", supportKey, `{"task":"crm.add_note","input":{"customer_id":"cus_1","note":"n","priority":123456789012345678901234567890}}`, 400, "invalid_input"},
		{"too deep", supportKey, `{"task":"crm.delete_customer","input":` + deep + `}`, 400, "invalid_input"},
		{"unknown envelope field", supportKey, `{"task":"crm.get_customer","input":{"customer_id":"c"},"sudo":true}`, 400, "invalid_input"},
		{"header injection", supportKey, map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "cus_1", "note": "hi\r\nX-Evil: 1"}}, 400, "invalid_input"},
		{"path traversal value", supportKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": ".."}}, 400, "invalid_input"},
		{"forbidden action", supportKey, map[string]any{"task": "crm.delete_customer", "input": map[string]any{"customer_id": "c"}}, 403, "policy_denied"},
		{"agent without grant", otherKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}}, 403, "policy_denied"},
		{"erroring forbid with matching permit", supportKey, map[string]any{"task": "ops.broken", "input": map[string]any{"x": 1}}, 403, "policy_denied"},
		{"acting for an unknown user", supportKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}, "on_behalf_of": "mallory"}, 403, "policy_denied"},
		{"acting for a user outside act_for", supportKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "c"}, "on_behalf_of": "olga"}, 403, "policy_denied"},
		{"body too large", supportKey, `{"task":"crm.add_note","input":{"customer_id":"cus_1","note":"` + strings.Repeat("a", 2<<20) + `"}}`, 413, "body_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, p := e.do("POST", "/v1/actions", c.key, c.body)
			if st != c.status || p["code"] != c.code {
				t.Fatalf("got %d %v, want %d %s", st, p["_body"], c.status, c.code)
			}
			if p["_ctype"] != "application/problem+json" {
				t.Errorf("content type %v", p["_ctype"])
			}
			if n := e.up.count(); n != 0 {
				t.Fatalf("upstream received %d requests", n)
			}
		})
	}
	// An erroring policy is recorded as such.
	_, p := e.propose(supportKey, "ops.broken", map[string]any{"x": 1})
	act, _ := p["action"].(map[string]any)
	if act == nil || !strings.Contains(p["_body"].(string), "broken-forbid") || act["status"] != "denied" {
		t.Errorf("denied action should name the erroring policy: %v", p["_body"])
	}
	// The invalid proposal answers carry field paths.
	_, p = e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "bob", "note": ""})
	if errs, _ := p["errors"].([]any); len(errs) != 2 {
		t.Errorf("want two field errors: %v", p["_body"])
	}
}

func TestActingForAUser(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	st, a := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "crm.get_customer", "input": map[string]any{"customer_id": "cus_1"}, "on_behalf_of": "alice"})
	if st != 200 || a["on_behalf_of"] != "alice" {
		t.Fatalf("%d %v", st, a["_body"])
	}
}

func TestInjectionAttemptsStayInTheirPlace(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	for _, id := range []string{"a/b", "x?admin=1", "x#frag", "%2e%2e", "a b", "../../etc", "@evil.example", "http://evil.example/"} {
		st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": id, "q": "1&admin=true#x"})
		if st != 200 {
			t.Fatalf("%q: %d %v", id, st, a["_body"])
		}
		got := e.up.last()
		if got.Path != "/customers/"+id {
			t.Errorf("%q: path decoded to %q", id, got.Path)
		}
		if strings.Count(got.RawPath, "/") != 2 {
			t.Errorf("%q: value added a path segment: %q", id, got.RawPath)
		}
		q, _ := url.ParseQuery(got.RawQuery)
		if len(q) != 2 || q.Get("q") != "1&admin=true#x" || q.Get("fixed") != "1" {
			t.Errorf("%q: query %q", id, got.RawQuery)
		}
	}
	// Body values are JSON values, never concatenated text.
	note := `","admin":true,"x":"`
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": note}); st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	var body map[string]any
	json.Unmarshal(e.up.last().Body, &body)
	if body["text"] != note || body["admin"] != nil {
		t.Errorf("body injection: %s", e.up.last().Body)
	}
}

func TestSecretNeverLeaves(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	b64 := base64.StdEncoding.EncodeToString([]byte(crmSecret))
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		json.NewEncoder(w).Encode(map[string]any{
			"echo": auth, "raw": crmSecret, "b64": b64, "url": url.QueryEscape(crmSecret),
			"b64url": base64.URLEncoding.EncodeToString([]byte(crmSecret)), "note": map[string]any{"text": "k=" + crmSecret},
		})
	})
	st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	if st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	if !strings.Contains(a["_body"].(string), "[REDACTED]") {
		t.Errorf("expected redaction markers: %s", a["_body"])
	}
	// Dry run and a failing upstream that echoes the secret in an error body.
	_, dr := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "cus_1", "note": "n"}, "dry_run": true})
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		w.Write([]byte(`{"error":"bad key ` + crmSecret + `"}`))
	})
	_, fail := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "n"})
	responses := a["_body"].(string) + dr["_body"].(string) + fail["_body"].(string)
	_, audit, _ := e.cli(nil, "audit", "export", "--config", e.cfgPath)
	e.stop()
	forbidden := []string{crmSecret, b64, url.QueryEscape(crmSecret), base64.URLEncoding.EncodeToString([]byte(crmSecret))}
	for _, s := range forbidden {
		if strings.Contains(responses, s) {
			t.Errorf("secret form %q in API responses", s)
		}
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("secret form %q in logs", s)
		}
		if strings.Contains(audit, s) {
			t.Errorf("secret form %q in audit export", s)
		}
	}
	if !strings.Contains(audit, "hmac-sha256:") {
		t.Error("audit should fingerprint the credential used")
	}
	// No file under the data directory holds the secret in any form.
	filepath.Walk(filepath.Join(e.dir, "data"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, s := range forbidden {
			if strings.Contains(string(b), s) {
				t.Errorf("secret form %q in %s", s, p)
			}
		}
		return nil
	})
}

func TestUpstreamFailures(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		w.WriteHeader(503)
	})
	st, p := e.propose(supportKey, "ops.slow", map[string]any{})
	if st != 504 || p["code"] != "upstream_timeout" || p["action"].(map[string]any)["status"] != "failed" {
		t.Errorf("timeout: %d %v", st, p["_body"])
	}
	st, p = e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "c"})
	if st != 502 || p["code"] != "upstream_error" || p["action"].(map[string]any)["status"] != "failed" {
		t.Errorf("5xx: %d %v", st, p["_body"])
	}
	// Redirects are not followed.
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	before := e.up.count()
	st, p = e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "c"})
	if st != 502 || e.up.count() != before+1 {
		t.Errorf("redirect followed or misreported: %d %v, calls %d", st, p["_body"], e.up.count()-before)
	}
}

func TestEgressGuardRefusesLoopback(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: false})
	st, p := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "c"})
	if st != 502 || p["code"] != "egress_denied" {
		t.Fatalf("%d %v", st, p["_body"])
	}
	if e.up.count() != 0 {
		t.Fatalf("upstream reached: %d", e.up.count())
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	in := map[string]any{"customer_id": "cus_1", "note": "once"}
	st1, a1 := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k1")
	st2, a2 := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k1")
	if st1 != 200 || st2 != 200 || a1["id"] != a2["id"] {
		t.Fatalf("replay: %d %v / %d %v", st1, a1["id"], st2, a2["id"])
	}
	if e.up.count() != 1 {
		t.Fatalf("replay executed again: %d upstream calls", e.up.count())
	}
	st, p := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "other"}, "Idempotency-Key", "k1")
	if st != 422 || p["code"] != "idempotency_key_reused" {
		t.Errorf("reuse: %d %v", st, p["_body"])
	}
	// Keys are scoped per agent: another agent's k1 is its own.
	if st, p := e.propose(otherKey, "crm.add_note", in, "Idempotency-Key", "k1"); st != 403 {
		t.Errorf("other agent: %d %v", st, p["_body"])
	}
	// A denial is an answer too, replayed as such.
	for i := 0; i < 2; i++ {
		if st, p := e.propose(supportKey, "crm.delete_customer", map[string]any{"customer_id": "c"}, "Idempotency-Key", "k2"); st != 403 || p["code"] != "policy_denied" {
			t.Errorf("denied replay %d: %d %v", i, st, p["_body"])
		}
	}
	// While the first request is in flight, a second gets 409.
	entered, release := holdUpstream(e)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "slow"}, "Idempotency-Key", "k3")
	}()
	<-entered
	st, p = e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "slow"}, "Idempotency-Key", "k3")
	close(release)
	wg.Wait()
	if st != 409 || p["code"] != "idempotency_in_progress" {
		t.Errorf("in flight: %d %v", st, p["_body"])
	}
}

// TestIdempotencyKeysExpire: an Idempotency-Key's answer is kept for
// limits.idempotency_ttl (24h) from when it was given; the worker then
// deletes it, and the key proposes afresh. Each expiry is checked against
// a key answered later, which must be kept.
func TestIdempotencyKeysExpire(t *testing.T) {
	clock := newTestClock(time.Now())
	e := newTestEnv(t, envOpts{allowPrivate: true, clock: clock})
	in := map[string]any{"customer_id": "cus_1", "note": "kept a day"}
	ids := map[string]any{}
	propose := func(key string) any {
		t.Helper()
		st, a := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", key)
		if st != 200 || a["status"] != "succeeded" {
			t.Fatalf("%s: %d %v", key, st, a["_body"])
		}
		return a["id"]
	}
	expiries := func(n int) {
		t.Helper()
		waitFor(t, "expiry "+strconv.Itoa(n), 10*time.Second, func() bool {
			return strings.Count(e.logs.String(), "idempotency keys expired") >= n
		})
	}
	ids["k1"] = propose("k1") // t0
	clock.Advance(24*time.Hour + 50*time.Minute)
	ids["k2"] = propose("k2") // t0+24h50m
	clock.Advance(10 * time.Minute)
	expiries(1) // t0+25h: k1 (25h old) goes, k2 (10m) stays
	if id := propose("k2"); id != ids["k2"] {
		t.Errorf("k2 (10m old) answered %v, want %v", id, ids["k2"])
	}
	if id := propose("k1"); id == ids["k1"] {
		t.Errorf("k1 (25h old) still answered with its first action")
	}
	ids["k3"] = propose("k3") // t0+25h
	clock.Advance(23*time.Hour + 55*time.Minute)
	expiries(2) // t0+48h55m: k2 (24h05m old) goes, k3 (23h55m) stays
	if id := propose("k3"); id != ids["k3"] {
		t.Errorf("k3 (23h55m old) answered %v, want %v", id, ids["k3"])
	}
	if id := propose("k2"); id == ids["k2"] {
		t.Errorf("k2 (24h05m old) still answered with its first action")
	}
	if n := e.up.count(); n != 5 {
		t.Errorf("upstream calls: %d, want 5 (k1, k2, k1 again, k3, k2 again)", n)
	}
}

// TestProposeRetriesALostAnswer: `agentg8 propose` sends an Idempotency-Key
// (a new one unless given) and asks again under it when the answer is lost,
// so the action runs once and the command prints it; a gateway that refuses
// the connection fails the command at once.
func TestProposeRetriesALostAnswer(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	proxy := newLossyProxy(t, e.url)
	env := map[string]string{"AGENTG8_KEY": supportKey, "AGENTG8_URL": proxy.url}
	for _, how := range lossyHows {
		note := "cli-" + strings.ReplaceAll(how, " ", "-")
		proxy.lose(e, note, how)
		code, out, errs := e.cli(env, "propose", "crm.add_note", "--input", `{"customer_id":"cus_1","note":"`+note+`"}`)
		var a map[string]any
		json.Unmarshal([]byte(out), &a)
		if code != 0 || a["status"] != "succeeded" || proxy.effects(e, note) != 1 || proxy.attempts(note) < 2 {
			t.Errorf("answer lost %s: exit %d, %v; upstream calls %d (want 1), attempts %d\n%s", how, code, a["status"], proxy.effects(e, note), proxy.attempts(note), errs)
		}
		if !strings.Contains(errs, "asking the gateway again under the request's idempotency key") {
			t.Errorf("answer lost %s: retry not logged: %s", how, errs)
		}
	}
	// Nothing listens on a closed listener's port: the request never left.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close()
	start := time.Now()
	code, _, errs := e.cli(map[string]string{"AGENTG8_KEY": supportKey, "AGENTG8_URL": "http://" + ln.Addr().String()},
		"propose", "crm.add_note", "--input", `{"customer_id":"cus_1","note":"refused"}`)
	if code != 1 || time.Since(start) > 5*time.Second || strings.Contains(errs, "asking the gateway again") {
		t.Errorf("connection refused: exit %d after %v: %s", code, time.Since(start), errs)
	}
}

// holdUpstream makes the upstream hold each request until release is
// closed; entered gets a value as each arrives.
func holdUpstream(e *testEnv) (entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 1), make(chan struct{})
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write([]byte(`{"note":{}}`))
	})
	return entered, release
}

// claimedActionID is the action ID an idempotency claim holds.
func claimedActionID(t *testing.T, e *testEnv, agent, key string) string {
	t.Helper()
	db := e.openSQLite()
	var id string
	if err := db.QueryRow(`SELECT action_id FROM idempotency WHERE agent = ? AND key = ?`, agent, key).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// An answer that says "try again later" (too many pending approvals) is
// not the key's answer for good: a retry with the key runs once the
// agent has room, under the action ID the first claim named.
func TestIdempotencyRetryAfterTryAgainLater(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "approvals:\n  max_pending_per_agent: 1\n"})
	firstID, _, _ := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 5000}))
	st, p := e.propose(supportKey, "ops.refund", map[string]any{"amount": 6000}, "Idempotency-Key", "k")
	if st != 429 || p["code"] != "too_many_pending" {
		t.Fatalf("second pending: %d %v", st, p["_body"])
	}
	claimed := claimedActionID(t, e, "support-bot", "k")
	if st, a := e.do("POST", "/v1/actions/"+firstID+"/cancel", supportKey, nil); st != 200 {
		t.Fatalf("cancel: %d %v", st, a["_body"])
	}
	id, _, _ := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 6000}, "Idempotency-Key", "k"))
	if id != claimed {
		t.Errorf("the retry created %s; the claim named %s", id, claimed)
	}
	// And that is now the key's answer.
	if again, _, _ := e.pend(e.propose(supportKey, "ops.refund", map[string]any{"amount": 6000}, "Idempotency-Key", "k")); again != id {
		t.Errorf("replay: %s, want %s", again, id)
	}
}

// A request that created its action and then died before answering (here:
// still stuck at the upstream past claimAbandoned) leaves the key in
// progress for a while; after that a retry answers with the action as it
// is, and never runs it again.
func TestIdempotencyClaimAbandonedAfterItsAction(t *testing.T) {
	clock := newTestClock(time.Now().UTC())
	e := newTestEnv(t, envOpts{allowPrivate: true, clock: clock})
	entered, release := holdUpstream(e)
	in := map[string]any{"customer_id": "cus_1", "note": "slow"}
	first := e.proposeLater(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	waitEntered(t, entered, "the first attempt")
	if st, p := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k"); st != 409 || p["code"] != "idempotency_in_progress" {
		t.Errorf("retry while in progress: %d %v", st, p["_body"])
	}
	clock.Advance(2 * time.Minute)
	st, a := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	if st != 200 || a["status"] != "executing" || a["id"] != claimedActionID(t, e, "support-bot", "k") {
		t.Errorf("retry after the claim was abandoned: %d %v", st, a["_body"])
	}
	close(release)
	f := await(t, first, 10*time.Second, "the first attempt")
	if f["_status"] != 200 || f["status"] != "succeeded" || f["id"] != a["id"] {
		t.Errorf("the first attempt: %v %v", f["_status"], f["_body"])
	}
	if st, a := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k"); st != 200 || a["status"] != "succeeded" {
		t.Errorf("replay after the first attempt answered: %d %v", st, a["_body"])
	}
	if n := e.up.count(); n != 1 {
		t.Errorf("%d upstream calls for one key", n)
	}
}

// An action that ran but whose outcome could not be recorded answers
// 503; a retry with the same key must learn about that action, not run
// the request again (the key used to be freed for a retry, which then
// called the upstream a second time). The database refuses the outcome
// with a trigger; once it is dropped, the worker records the outcome the
// gateway saw.
func TestIdempotentRetryAfterALostOutcome(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	db := refuseOutcomes(e)
	in := map[string]any{"customer_id": "cus_1", "note": "once"}
	st, a := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	if st != 503 || a["code"] != "audit_unavailable" {
		t.Fatalf("first attempt: %d %v", st, a["_body"])
	}
	for i := 0; i < 2; i++ {
		st, a := e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
		if st != 200 || a["status"] != "executing" || a["id"] != claimedActionID(t, e, "support-bot", "k") {
			t.Errorf("retry %d: %d %v", i, st, a["_body"])
		}
	}
	if v := e.metric("agentg8_unsettled_executions"); v != "1" {
		t.Errorf("agentg8_unsettled_executions while the outcome is refused: %s", v)
	}
	// Once the store takes writes again, the worker records the outcome
	// this gateway saw — the action does not wait to read outcome_unknown
	// — and a retry gets it as the key's answer.
	if _, err := db.Exec(`DROP TRIGGER refuse_outcome`); err != nil {
		t.Fatal(err)
	}
	id := claimedActionID(t, e, "support-bot", "k")
	waitFor(t, "the outcome to be recorded", 10*time.Second, func() bool {
		_, g := e.do("GET", "/v1/actions/"+id, supportKey, nil)
		return g["status"] == "succeeded"
	})
	if v := e.metric("agentg8_unsettled_executions"); v != "0" {
		t.Errorf("agentg8_unsettled_executions once recorded: %s", v)
	}
	st, a = e.propose(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	if st != 200 || a["status"] != "succeeded" || a["id"] != id || a["output"] == nil {
		t.Errorf("retry after the outcome was recorded: %d %v", st, a["_body"])
	}
	if got := auditTypes(e, id); got != "proposed credential_issued executing succeeded" {
		t.Errorf("audit of the action: %s", got)
	}
	if n := e.up.count(); n != 1 {
		t.Errorf("%d upstream calls for one key", n)
	}
	if code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath); code != 0 {
		t.Errorf("verify: %s %s", out, errs)
	}
}

// TestOutcomeRecordedAtStop: a gateway stopping while it holds an outcome
// the store refused tries once more to record it, so a restart soon after
// the store recovered does not leave the action outcome_unknown (as a
// start on SQLite makes every action it finds executing).
func TestOutcomeRecordedAtStop(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	db := refuseOutcomes(e)
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "x"}, "Idempotency-Key", "k"); st != 503 {
		t.Fatalf("outcome refused: %d %v", st, a["_body"])
	}
	id := claimedActionID(t, e, "support-bot", "k")
	// The store takes writes again just as the gateway stops: the worker's
	// sweep (every second) has most likely not run since.
	if _, err := db.Exec(`DROP TRIGGER refuse_outcome`); err != nil {
		t.Fatal(err)
	}
	e.stop()
	if strings.Contains(e.logs.String(), "stopping with an execution not recorded") {
		t.Errorf("stopped without recording the outcome: %s", e.logs.String())
	}
	e.start()
	if _, a := e.do("GET", "/v1/actions/"+id, supportKey, nil); a["status"] != "succeeded" {
		t.Errorf("after the restart the action is %v, want succeeded", a["status"])
	}
	if n := e.up.count(); n != 1 {
		t.Errorf("%d upstream calls", n)
	}
}

// refuseOutcomes makes the SQLite store refuse to record succeeded
// outcomes until the trigger refuse_outcome is dropped through the
// returned handle.
func refuseOutcomes(e *testEnv) *sql.DB {
	e.t.Helper()
	db := e.openSQLite()
	if _, err := db.Exec(`CREATE TRIGGER refuse_outcome BEFORE UPDATE ON actions WHEN NEW.status = 'succeeded'
		BEGIN SELECT RAISE(ABORT, 'outcome refused by the test'); END`); err != nil {
		e.t.Fatal(err)
	}
	return db
}

// An intent the store refused certainly wrote nothing (an error SQLite
// reports rolls the transaction back): the agent gets 503, no action
// exists, and there is nothing to settle later. Triggers refuse the
// action's row, then the audit record.
func TestRefusedIntentLeavesNothingToSettle(t *testing.T) {
	for _, trigger := range []string{
		`CREATE TRIGGER refuse BEFORE INSERT ON actions WHEN NEW.status = 'executing' BEGIN SELECT RAISE(ABORT, 'intent refused by the test'); END`,
		`CREATE TRIGGER refuse BEFORE INSERT ON audit_records WHEN CAST(NEW.data AS TEXT) LIKE '%"executing"%' BEGIN SELECT RAISE(ABORT, 'record refused by the test'); END`,
	} {
		e := newTestEnv(t, envOpts{allowPrivate: true})
		db := e.openSQLite()
		if _, err := db.Exec(trigger); err != nil {
			t.Fatal(err)
		}
		if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "refused"}); st != 503 || a["code"] != "audit_unavailable" {
			t.Fatalf("refused intent: %d %v", st, a["_body"])
		}
		if v := e.metric("agentg8_unsettled_executions"); v != "0" {
			t.Errorf("agentg8_unsettled_executions after a refused intent: %s (%.60s)", v, trigger)
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM actions`).Scan(&n); err != nil || n != 0 || e.up.count() != 0 {
			t.Errorf("%d actions (%v), %d upstream calls", n, err, e.up.count())
		}
	}
}

func TestPendingApprovalDoesNotExecute(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	st, a := e.propose(supportKey, "ops.refund", map[string]any{"amount": 5000})
	if st != 202 || a["status"] != "pending_approval" {
		t.Fatalf("%d %v", st, a["_body"])
	}
	apr := a["approval"].(map[string]any)
	if !strings.HasPrefix(apr["request_hash"].(string), "sha256:") || apr["required"].([]any)[0].(map[string]any)["group"] != "finance" {
		t.Errorf("approval: %v", apr)
	}
	if e.up.count() != 0 {
		t.Fatal("pending action reached upstream")
	}
	// Small refunds need no approval.
	if st, a := e.propose(supportKey, "ops.refund", map[string]any{"amount": 5}); st != 200 || a["status"] != "succeeded" {
		t.Errorf("small refund: %d %v", st, a["_body"])
	}
	// The proposer can cancel while pending; long-poll sees the change.
	id := a["id"].(string)
	done := make(chan map[string]any, 1)
	go func() {
		_, g := e.do("GET", "/v1/actions/"+id+"?wait=10s", supportKey, nil)
		done <- g
	}()
	time.Sleep(200 * time.Millisecond)
	if st, c := e.do("POST", "/v1/actions/"+id+"/cancel", supportKey, nil); st != 200 || c["status"] != "cancelled" {
		t.Fatalf("cancel: %d %v", st, c["_body"])
	}
	// Cancelling again (the first answer lost, say) answers the same.
	if st, c := e.do("POST", "/v1/actions/"+id+"/cancel", supportKey, nil); st != 200 || c["status"] != "cancelled" {
		t.Errorf("cancel again: %d %v", st, c["_body"])
	}
	select {
	case g := <-done:
		if g["status"] != "cancelled" {
			t.Errorf("long-poll returned %v", g["status"])
		}
	case <-time.After(5 * time.Second):
		t.Error("long-poll was not woken")
	}
}

func TestTasksToolsAndOps(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	st, p := e.do("GET", "/v1/tasks", supportKey, nil)
	if st != 200 {
		t.Fatal(st)
	}
	var names []string
	for _, x := range p["tasks"].([]any) {
		names = append(names, x.(map[string]any)["name"].(string))
	}
	// Every task some permit's scope admits for support-bot, sorted.
	want := "crm.add_note crm.delete_customer crm.get_customer ops.broken ops.refund ops.slow ops.wire"
	if strings.Join(names, " ") != want {
		t.Errorf("tasks = %v", names)
	}
	if _, p := e.do("GET", "/v1/tasks", otherKey, nil); len(p["tasks"].([]any)) != 0 {
		t.Errorf("agent without grants sees tasks: %v", p["_body"])
	}
	_, p = e.do("GET", "/v1/tools?format=openai", supportKey, nil)
	if !strings.Contains(p["_body"].(string), `"name":"crm-add_note"`) {
		t.Errorf("openai names: %s", p["_body"])
	}
	code, out, errs := e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "tools", "export", "--format", "anthropic")
	if code != 0 || !strings.Contains(out, `"input_schema"`) || !strings.Contains(out, `"crm-get_customer"`) {
		t.Errorf("tools export: %d %s %s", code, out, errs)
	}
	code, out, _ = e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "propose", "crm.get_customer", "--input", `{"customer_id":"cus_9"}`)
	if code != 0 || !strings.Contains(out, `"succeeded"`) {
		t.Errorf("propose: %d %s", code, out)
	}
	var act map[string]any
	json.Unmarshal([]byte(out), &act)
	code, out, _ = e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "actions", "get", act["id"].(string))
	if code != 0 || !strings.Contains(out, act["id"].(string)) {
		t.Errorf("actions get: %d %s", code, out)
	}
	if code, _, _ = e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "propose", "crm.delete_customer", "--input", `{}`); code != exitDenied {
		t.Errorf("denied propose exit %d, want 3", code)
	}
	if code, _, _ = e.cli(map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}, "propose", "crm.add_note", "--input", `{}`); code != exitFailure {
		t.Errorf("invalid propose exit %d, want 1", code)
	}
	if code, _, _ = e.cli(nil, "propose"); code != exitUsage {
		t.Errorf("usage exit %d, want 2", code)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if st, _ := e.do("GET", path, "", nil); st != 200 {
			t.Errorf("%s: %d", path, st)
		}
	}
	_, m := e.do("GET", "/metrics", "", nil)
	for _, name := range []string{"agentg8_actions_total", "agentg8_decision_seconds", "agentg8_upstream_seconds", "agentg8_audit_append_seconds"} {
		if !strings.Contains(m["_body"].(string), name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	if strings.Contains(m["_body"].(string), "agentg8_store_") {
		t.Error("pool metrics on SQLite, which has no pool")
	}
	// Audit endpoints: users in auditors only.
	if st, _ := e.do("GET", "/v1/audit", supportKey, nil); st != 403 {
		t.Errorf("agent read audit: %d", st)
	}
	st, p = e.do("GET", "/v1/audit?limit=5", aliceKey, nil)
	if st != 200 || len(p["events"].([]any)) != 5 {
		t.Errorf("audit: %d %v", st, p["_body"])
	}
	if st, p := e.do("GET", "/v1/audit/checkpoint", aliceKey, nil); st != 200 || !strings.HasPrefix(p["_body"].(string), "agentg8 audit log\n") {
		t.Errorf("checkpoint: %d %v", st, p["_body"])
	}
}

// One gateway serves a SQLite store: a second serve on the same file is
// refused (it would mark the first one's executing actions
// outcome_unknown), while other commands still open it.
func TestSecondServerOnSQLiteRefused(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadConfig(writeConfig(t, dir, newRecorder(t).srv.URL, envOpts{allowPrivate: true}), lookup(testEnvVars()))
	if err != nil {
		t.Fatal(err)
	}
	serveInProcess(t, cfg, slog.New(slog.DiscardHandler))
	s, err := startServer(context.Background(), cfg, lookup(testEnvVars()), slog.New(slog.DiscardHandler), agentg8.SystemClock{})
	if err == nil {
		s.http.Close()
		t.Fatal("a second gateway started on the same SQLite file")
	}
	if !errors.Is(err, sqlite.ErrOwned) || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Errorf("second gateway: %v", err)
	}
	e := &testEnv{t: t}
	if code, out, errOut := e.cli(nil, "audit", "verify", "--config", cfg.path); code != 0 {
		t.Errorf("audit verify beside the gateway: %d %s %s", code, out, errOut)
	}
}

// A gateway whose audit signing key did not sign the log's checkpoints (a
// replica whose key file was not copied, a restart after losing the key)
// refuses to start: its checkpoints would make the log fail verification.
func TestAnotherAuditKeyIsRefused(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	e.stop()
	keyFile := filepath.Join(e.dir, "data", "audit.key")
	old, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(keyFile) // a new key is created at start, and refused
	cfg, err := LoadConfig(e.cfgPath, lookup(testEnvVars()))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := startServer(context.Background(), cfg, lookup(testEnvVars()), slog.New(slog.DiscardHandler), agentg8.SystemClock{}); err == nil {
		s.http.Close()
		t.Fatal("a gateway started with another audit key")
	} else if !strings.Contains(err.Error(), "another key") {
		t.Errorf("refusal: %v", err)
	}
	// The key restored, it starts.
	if err := os.WriteFile(keyFile, old, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	if code, out, errOut := e.cli(nil, "audit", "verify", "--config", e.cfgPath); code != 0 {
		t.Errorf("verify: %d %s %s", code, out, errOut)
	}
}
