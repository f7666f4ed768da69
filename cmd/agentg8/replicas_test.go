package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/store/storetest"
)

// pgDB creates an empty database on the test cluster.
func pgDB(t *testing.T) string { return storetest.PostgresDB(t) }

func TestReplicasOnPostgres(t *testing.T) {
	db := pgDB(t)
	bin := buildBinary(t)
	up := newRecorder(t)
	var effects sync.Map // amount -> count
	var total atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/customers/slow" {
			time.Sleep(5 * time.Second) // 2.5 lease TTLs
			w.Write([]byte(`{"slow":true}`))
			return
		}
		if r.URL.Path == "/customers/hang" {
			entered <- struct{}{}
			<-release
			w.Write([]byte(`{"late":true}`))
			return
		}
		var b struct{ Amount int }
		json.NewDecoder(r.Body).Decode(&b)
		n, _ := effects.LoadOrStore(b.Amount, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		total.Add(1)
		w.Write([]byte(`{"ok":true}`))
	})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true,
		extraConfig: "approvals:\n  max_pending_per_agent: 1000\nexecution:\n  lease_ttl: 2s\n"})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: "+db)
	var reps []*proc
	for i := 0; i < 3; i++ {
		reps = append(reps, startProc(t, bin, cfg))
	}
	env := func(i int) *testEnv { return &testEnv{t: t, url: reps[i%3].url} }

	// 200 approval-requiring actions, proposed and approved through
	// different replicas, with duplicate clicks.
	const n = 200
	type pending struct{ id, apr, hash string }
	ps := make([]pending, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, a := env(i).propose(supportKey, "ops.wire", map[string]any{"amount": i})
			if st != 202 {
				t.Errorf("propose %d: %d %v", i, st, a["_body"])
				return
			}
			apr := a["approval"].(map[string]any)
			ps[i] = pending{a["id"].(string), apr["id"].(string), apr["request_hash"].(string)}
		}()
	}
	wg.Wait()
	// A long-poll on one replica is woken by an approval on another.
	woke := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		env(1).do("GET", "/v1/actions/"+ps[0].id+"?wait=30s", supportKey, nil)
		woke <- time.Since(start)
	}()
	time.Sleep(300 * time.Millisecond)
	var answers sync.Map // "status code" → count, for a failure's message
	for i, p := range ps {
		for j, key := range []string{franKey, fredKey, franKey} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, a := env(i+j).approve(key, p.apr, p.hash, true)
				c, _ := answers.LoadOrStore(fmt.Sprintf("%d %v", st, a["code"]), new(atomic.Int32))
				c.(*atomic.Int32).Add(1)
			}()
		}
	}
	wg.Wait()
	select {
	case d := <-woke:
		if d > 10*time.Second {
			t.Errorf("cross-replica long-poll took %s", d)
		}
	case <-time.After(20 * time.Second):
		t.Error("long-poll on another replica was not woken")
	}
	if !waitUntil(60*time.Second, func() bool { return total.Load() >= n }) {
		states := map[string][]string{}
		for _, p := range ps {
			_, a := env(0).do("GET", "/v1/actions/"+p.id, supportKey, nil)
			st, _ := a["status"].(string)
			states[st] = append(states[st], p.id)
		}
		var got []string
		answers.Range(func(k, v any) bool {
			got = append(got, fmt.Sprintf("%v ×%d", k, v.(*atomic.Int32).Load()))
			return true
		})
		for st, ids := range states {
			t.Logf("%s: %d, e.g. %s", st, len(ids), ids[0])
		}
		for i, r := range reps {
			for _, l := range strings.Split(r.logs.String(), "\n") {
				if strings.Contains(l, "ERROR") || strings.Contains(l, "WARN") {
					t.Logf("replica %d: %s", i, l)
				}
			}
		}
		t.Fatalf("%d of %d approved actions ran after 60 s; approve answers: %v", total.Load(), n, got)
	}
	time.Sleep(2 * time.Second) // any duplicate would show up now
	if total.Load() != n {
		t.Fatalf("%d upstream effects for %d actions", total.Load(), n)
	}
	effects.Range(func(k, v any) bool {
		if c := v.(*atomic.Int32).Load(); c != 1 {
			t.Errorf("amount %v executed %d times", k, c)
		}
		return true
	})
	// Duplicate clicks on several replicas contend for the same rows; they
	// must wait, not deadlock (a deadlock fails a whole batch).
	for i, r := range reps {
		if l := r.logs.String(); strings.Contains(l, "deadlock") || strings.Contains(l, "audit unavailable") {
			t.Errorf("replica %d logged a failed audit batch: %s", i, l)
		}
	}

	// A live replica renews its lease: an execution longer than the lease
	// is not taken over.
	st, slow := env(1).propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "slow"})
	if st != 200 || slow["status"] != "succeeded" {
		t.Fatalf("slow execution: %d %v", st, slow)
	}
	_, ev := env(2).do("GET", "/v1/audit?action_id="+slow["id"].(string), aliceKey, nil)
	if b, _ := ev["_body"].(string); strings.Contains(b, `"type":"lease_lost"`) || strings.Contains(b, `"type":"outcome_unknown"`) {
		t.Errorf("a renewed lease was taken over: %s", b)
	}

	// A replica stopped mid-execution past its lease: another declares the
	// outcome unknown; when it resumes it cannot record a second outcome,
	// and the upstream saw one call.
	var hangID string
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, a := env(0).propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "hang"})
		hangID, _ = a["id"].(string)
	}()
	<-entered
	reps[0].cmd.Process.Signal(syscall.SIGSTOP)
	var id string
	waitFor(t, "the stuck action to be taken over", 20*time.Second, func() bool {
		_, l := env(1).do("GET", "/v1/actions?task=crm.get_customer", supportKey, nil)
		acts, _ := l["actions"].([]any)
		if len(acts) == 0 {
			return false
		}
		a := acts[0].(map[string]any)
		id = a["id"].(string)
		return a["status"] == "outcome_unknown"
	})
	reps[0].cmd.Process.Signal(syscall.SIGCONT)
	close(release)
	<-done
	if hangID != "" && hangID != id {
		t.Errorf("ids differ: %s %s", hangID, id)
	}
	_, g := env(2).do("GET", "/v1/actions/"+id, supportKey, nil)
	if g["status"] != "outcome_unknown" {
		t.Errorf("after resume: %v", g["status"])
	}
	hangCalls := 0
	for _, r := range up.all() {
		if r.Path == "/customers/hang" {
			hangCalls++
		}
	}
	if hangCalls != 1 {
		t.Errorf("hanging action sent %d times", hangCalls)
	}
	waitFor(t, "the lost lease to be audited", 10*time.Second, func() bool {
		_, ev := env(2).do("GET", "/v1/audit?action_id="+id, aliceKey, nil)
		b, _ := ev["_body"].(string)
		return strings.Contains(b, `"type":"lease_lost"`) && strings.Contains(b, `"type":"outcome_unknown"`)
	})
	// The replicas seal between them, and say so; each is ready.
	sealed := 0
	for i := range reps {
		if st, _ := env(i).do("GET", "/readyz", "", nil); st != 200 {
			t.Errorf("replica %d not ready: %d", i, st)
		}
		_, m := env(i).do("GET", "/metrics", "", nil)
		body, _ := m["_body"].(string)
		// (Replica 0 was stopped: a seal it had begun may have been ended
		// by the database meanwhile.)
		if i > 0 && strings.Contains(body, `agentg8_audit_seals_total{result="error"}`) {
			t.Errorf("replica %d reports failed seals", i)
		}
		if strings.Contains(body, `agentg8_audit_seals_total{result="sealed"}`) {
			sealed++
		}
	}
	if sealed == 0 {
		t.Error("no replica reports a seal")
	}
	// One verifiable log across every replica's writes.
	for _, p := range reps {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	code, out, errs := (&testEnv{t: t}).cli(testEnvVars(), "audit", "verify", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("verify across replicas: %s %s", out, errs)
	}
	t.Log(strings.TrimSpace(out), fmt.Sprintf("; %d effects", total.Load()))
}

// inProcessReplicas starts n gateways in this process on one new
// PostgreSQL database and returns an environment for each, and the
// database's URL.
func inProcessReplicas(t *testing.T, up *recorder, extra string, n int) ([]*testEnv, string) {
	servers, db := startReplicas(t, up.srv.URL, extra, n)
	var envs []*testEnv
	for _, s := range servers {
		envs = append(envs, &testEnv{t: t, url: "http://" + s.ln.Addr().String()})
	}
	return envs, db
}

// An agent's rate limit holds across replicas: on PostgreSQL the buckets
// are in the database, so two replicas do not double the limit.
func TestRateLimitIsSharedByReplicas(t *testing.T) {
	up := newRecorder(t)
	envs, db := inProcessReplicas(t, up, "limits:\n  actions_per_minute: 4\n", 2)
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		st, _ := envs[i%2].propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		codes[st]++
	}
	if codes[200] != 4 || codes[429] != 6 {
		t.Errorf("answers %v, want 4 × 200 and 6 × 429", codes)
	}
	if up.count() != 4 {
		t.Errorf("upstream calls %d, want 4", up.count())
	}
	// A limit that cannot be checked is no pass: the proposal fails closed.
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `ALTER TABLE rate_limits RENAME TO rate_limits_away`); err != nil {
		t.Fatal(err)
	}
	if st, p := envs[0].propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 503 || p["code"] != "audit_unavailable" {
		t.Errorf("unchecked limit: %d %v", st, p["_body"])
	}
	if up.count() != 4 {
		t.Errorf("upstream calls %d after the failed check, want 4", up.count())
	}
}

// A reloaded rate limit applies to the shared buckets without refilling
// them: raising it on every replica leaves the agent the one token it had.
func TestReloadedRateLimitIsShared(t *testing.T) {
	servers, _ := startReplicas(t, newRecorder(t).srv.URL, "limits:\n  actions_per_minute: 3\n", 2)
	env := func(i int) *testEnv { return &testEnv{t: t, url: "http://" + servers[i%2].ln.Addr().String()} }
	propose := func(i int) int {
		st, _ := env(i).propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		return st
	}
	for i := 0; i < 2; i++ {
		if st := propose(i); st != 200 {
			t.Fatalf("proposal %d under the limit: %d", i+1, st)
		}
	}
	replaceIn(t, servers[0].cfg.path, "actions_per_minute: 3", "actions_per_minute: 10")
	for _, s := range servers {
		s.reload(context.Background())
	}
	if n := countReloads(env(0), "auditors, resolvers and limits (changed)"); n != 2 {
		t.Fatalf("reloads applied: %d, want one per replica", n)
	}
	if st := propose(0); st != 200 {
		t.Errorf("the token left: %d", st)
	}
	if st := propose(1); st != 429 {
		t.Errorf("past the bucket after the reload: %d (a reload must not refill it)", st)
	}
}

// A console sign-in on one replica holds on the others, and signing out
// on one ends it on all; the database keeps only a hash of the token.
func TestConsoleSessionsAreSharedByReplicas(t *testing.T) {
	envs, db := inProcessReplicas(t, newRecorder(t), "", 2)
	fran := consoleSignIn(t, envs[0].url, franKey)
	other := &consoleClient{t: t, base: envs[1].url, ck: fran.ck, hc: fran.hc} // the same browser
	if st, _ := other.get("/console/"); st != 200 {
		t.Fatalf("the other replica: %d", st)
	}
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var hashed, raw int
	sum := sha256.Sum256([]byte(fran.ck.Value))
	pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE token_hash = $1),
		count(*) FILTER (WHERE position(convert_to($2, 'UTF8') IN token_hash || principal || convert_to(csrf, 'UTF8')) > 0)
		FROM console_sessions`, sum[:], fran.ck.Value).Scan(&hashed, &raw)
	if hashed != 1 || raw != 0 {
		t.Errorf("stored sessions: %d under the token's hash, %d holding the token", hashed, raw)
	}
	// Sign out on the second replica, with the form token its page carries.
	if st, _ := other.post("/console/", "/console/logout", url.Values{}); st != 303 {
		t.Fatalf("sign-out: %d", st)
	}
	if st, _ := fran.get("/console/"); st != 303 {
		t.Errorf("signed out on one replica, still in on the other: %d", st)
	}
}

// Every replica's worker wakes when an approval is requested anywhere, and
// all of them deliver queued notices: each notice must go out once, not
// once per replica.
func TestNotificationsAreSentOnceByReplicas(t *testing.T) {
	hook := newWebhook(t)
	envs, _ := inProcessReplicas(t, newRecorder(t), fmt.Sprintf("notify:\n  - {type: webhook, url: %q}\n", hook.srv.URL), 3)
	const n = 12
	for i := 0; i < n; i++ {
		st, a := envs[i%3].propose(supportKey, "ops.wire", map[string]any{"amount": i})
		pendingOf(t, st, a)
	}
	waitFor(t, "every notice", 10*time.Second, func() bool { return len(hook.received()) >= n })
	time.Sleep(2 * time.Second) // later duplicates would show up by now
	per := map[any]int{}
	for _, m := range hook.received() {
		per[m["action_id"]]++
	}
	if len(hook.received()) != n || len(per) != n {
		t.Errorf("%d notices for %d actions (%d distinct), want one each: %v", len(hook.received()), n, len(per), per)
	}
}

// The end of an unapproved action's execution is not announced to other
// replicas (action.Change.Announced), yet a long-poll on another replica
// that finds it executing learns of its end within about a second, not at
// the end of its wait.
func TestLongPollSeesUnannouncedEnd(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write([]byte(`{"id":"cus_1"}`))
	}))
	defer up.Close()
	servers, _ := startReplicas(t, up.URL, "", 2)
	ctx := context.Background()
	bot := agentg8.Principal{Kind: agentg8.KindAgent, ID: "support-bot", Groups: []string{"support"}, ActFor: []string{"support"}}
	proposed := make(chan error, 1)
	go func() {
		a, err := servers[0].service.Propose(ctx, bot, action.Proposal{Task: "crm.get_customer", Input: json.RawMessage(`{"customer_id":"cus_1"}`)})
		if err == nil && a.Status != agentg8.StateSucceeded {
			err = fmt.Errorf("action ended %s", a.Status)
		}
		proposed <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the action did not reach the upstream")
	}
	list, err := servers[1].service.List(ctx, bot, action.Filter{Status: agentg8.StateExecuting})
	if err != nil || len(list) != 1 {
		close(release)
		t.Fatalf("executing actions seen on the other replica: %v %v", list, err)
	}
	polled := longPoll(servers[1].service, bot, list[0].ID)
	time.Sleep(300 * time.Millisecond) // the poll is waiting
	released := time.Now()
	close(release)
	if err := <-proposed; err != nil {
		t.Fatal(err)
	}
	got := <-polled
	if got.err != nil || got.a.Status != agentg8.StateSucceeded {
		t.Fatalf("long-poll answered %v %v", got.a, got.err)
	}
	if after := got.at.Sub(released); after > 3*time.Second {
		t.Errorf("long-poll learnt of the end %s after it; want about a second", after)
	}
}

// approvals.max_pending_per_agent holds across replicas: concurrent
// proposals through two replicas leave exactly the bound pending, and
// every other proposal is refused with 429 too_many_pending (the store's
// refusal included, when both passed the early count).
func TestPendingBoundAcrossReplicas(t *testing.T) {
	up := newRecorder(t)
	servers, _ := startReplicas(t, up.srv.URL, "approvals:\n  max_pending_per_agent: 2\n", 2)
	const n = 24
	var pending atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := &testEnv{t: t, url: "http://" + servers[i%2].ln.Addr().String()}
			st, a := env.propose(supportKey, "ops.wire", map[string]any{"amount": i})
			switch {
			case st == 202:
				pending.Add(1)
			case st != 429 || a["code"] != "too_many_pending":
				t.Errorf("proposal %d: %d %v", i, st, a)
			}
		}()
	}
	wg.Wait()
	if got := pending.Load(); got != 2 {
		t.Errorf("%d proposals pending across two replicas, want 2", got)
	}
	if up.count() != 0 {
		t.Errorf("upstream called %d times before any approval", up.count())
	}
}

// A replica whose token-signing keys share none with the running replicas'
// (its key file was not copied, so it made its own) is refused at start;
// one whose key file was rotated (the previous key kept) starts, and so
// does any once the keys registered are stale (a cluster stopped whole).
func TestReplicaWithOtherTokenKeysRefused(t *testing.T) {
	up := newRecorder(t)
	db := pgDB(t)
	config := func() (*Config, string) {
		dir := t.TempDir()
		path := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true})
		replaceIn(t, path, "store: sqlite:data/agentg8.db", "store: "+db)
		cfg, err := LoadConfig(path, lookup(testEnvVars()))
		if err != nil {
			t.Fatal(err)
		}
		return cfg, dir
	}
	first, _ := config()
	serveInProcess(t, first, slog.New(slog.DiscardHandler))
	start := func(cfg *Config) error {
		s, err := startServer(context.Background(), cfg, lookup(testEnvVars()), slog.New(slog.DiscardHandler), agentg8.SystemClock{})
		if err == nil {
			s.http.Close()
			t.Fatal("a replica with its own token keys started")
		}
		return err
	}
	copyFile := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(to), 0o700)
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The audit key copied, the token keys not: refused.
	second, _ := config()
	copyFile(first.signingKeyPath(), second.signingKeyPath())
	if err := start(second); !strings.Contains(err.Error(), "token keys") || !strings.Contains(err.Error(), second.tokenKeysPath()) {
		t.Fatalf("refusal: %v", err)
	}
	// Refused again at its next start: it registered nothing.
	start(second)
	// The first replica's key file, rotated: starts (serveInProcess fails
	// the test otherwise), and mints with the new key.
	copyFile(first.tokenKeysPath(), second.tokenKeysPath())
	if _, err := credential.RotateKeySet(second.tokenKeysPath(), second.Tokens.Algorithm); err != nil {
		t.Fatal(err)
	}
	serveInProcess(t, second, slog.New(slog.DiscardHandler))

	// Keys no running replica has marked lately no longer count: a cluster
	// stopped whole can start again on new keys.
	third, _ := config()
	copyFile(first.signingKeyPath(), third.signingKeyPath())
	start(third)
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `UPDATE token_keys SET last_seen = now() - $1 * interval '1 second'`, (defaultTokenKeysTouch * 4).Seconds()); err != nil {
		t.Fatal(err)
	}
	serveInProcess(t, third, slog.New(slog.DiscardHandler))
}

// A running replica keeps marking its token keys, so they still count long
// after the replica started; once it stops, they go stale and a replica
// with other keys may start.
func TestRunningReplicaKeepsItsTokenKeys(t *testing.T) {
	up := newRecorder(t)
	db := pgDB(t)
	config := func() *Config {
		path := writeConfig(t, t.TempDir(), up.srv.URL, envOpts{allowPrivate: true})
		replaceIn(t, path, "store: sqlite:data/agentg8.db", "store: "+db)
		cfg, err := LoadConfig(path, lookup(testEnvVars()))
		if err != nil {
			t.Fatal(err)
		}
		cfg.tokenKeysTouch = 250 * time.Millisecond // marks last 750 ms
		return cfg
	}
	first := config()
	ctx, stop := context.WithCancel(context.Background())
	s, err := startServer(ctx, first, lookup(testEnvVars()), slog.New(slog.DiscardHandler), agentg8.SystemClock{})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx) }()
	second := config()
	b, err := os.ReadFile(first.signingKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(second.signingKeyPath()), 0o700)
	if err := os.WriteFile(second.signingKeyPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() error {
		s, err := startServer(context.Background(), second, lookup(testEnvVars()), slog.New(slog.DiscardHandler), agentg8.SystemClock{})
		if err == nil { // serve on an ended context: shut down at once
			ended, cancel := context.WithCancel(context.Background())
			cancel()
			s.serve(ended)
		}
		return err
	}
	// Three times the marks' lifetime after the first registered its keys,
	// they still count: it marked them meanwhile.
	time.Sleep(2250 * time.Millisecond)
	if err := start(); err == nil || !strings.Contains(err.Error(), "token keys") {
		t.Fatalf("a replica with other token keys started beside a running one: %v", err)
	}
	stop()
	<-done
	// Stopped, the first replica's marks lapse.
	waitFor(t, "the stopped replica's token keys to go stale", 10*time.Second, func() bool { return start() == nil })
}

// A replica whose LISTEN connection dropped (a database restart, a killed
// backend) misses what was announced meanwhile; once it listens again it
// wakes every long-poll to re-read, so one waiting there learns of an
// approval given on another replica in that gap within about a second,
// not at the end of its wait.
func TestLongPollSeesChangesMissedWhileNotListening(t *testing.T) {
	up := newRecorder(t)
	servers, db := startReplicas(t, up.srv.URL, "", 2)
	ctx := context.Background()
	bot := agentg8.Principal{Kind: agentg8.KindAgent, ID: "support-bot", Groups: []string{"support"}, ActFor: []string{"support"}}
	fran := agentg8.Principal{Kind: agentg8.KindUser, ID: "fran", Groups: []string{"finance"}}
	a, err := servers[0].service.Propose(ctx, bot, action.Proposal{Task: "ops.wire", Input: json.RawMessage(`{"amount":5}`)})
	if err != nil || a.Status != agentg8.StatePendingApproval {
		t.Fatalf("proposal: %v %v", a, err)
	}
	polled := longPoll(servers[1].service, bot, a.ID)
	time.Sleep(300 * time.Millisecond) // the poll is waiting
	pool, err := pgxpool.New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	listeners := `FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`
	waitFor(t, "both replicas to listen", 10*time.Second, func() bool {
		var n int
		return pool.QueryRow(ctx, `SELECT count(*) `+listeners).Scan(&n) == nil && n == 2
	})
	var ended []bool
	rows, err := pool.Query(ctx, `SELECT pg_terminate_backend(pid, 5000) `+listeners)
	if err == nil {
		ended, err = pgx.CollectRows(rows, pgx.RowTo[bool])
	}
	if err != nil || len(ended) != 2 || !ended[0] || !ended[1] {
		t.Fatalf("listeners ended: %v %v", ended, err)
	}
	approved := time.Now()
	if _, err := servers[0].service.Decide(ctx, fran, a.Approval.ID, true, a.Approval.RequestHash, ""); err != nil {
		t.Fatal(err)
	}
	got := <-polled
	if got.err != nil || got.a.Status == agentg8.StatePendingApproval {
		t.Fatalf("long-poll answered %v %v", got.a, got.err)
	}
	if after := got.at.Sub(approved); after > 5*time.Second {
		t.Errorf("long-poll learnt of the approval %s after it; want about a second", after)
	}
}

// polled is a long-poll's answer and when it came.
type polled struct {
	a   *agentg8.Action
	err error
	at  time.Time
}

// longPoll starts a 20-second long-poll on id through svc.
func longPoll(svc *action.Service, p agentg8.Principal, id string) <-chan polled {
	ch := make(chan polled, 1)
	go func() {
		a, err := svc.Get(context.Background(), p, id, 20*time.Second)
		ch <- polled{a, err, time.Now()}
	}()
	return ch
}

// Each replica shows the digest of the tasks, policies and config it
// decides with (agentg8_catalog_info, and in catalog_reloaded events):
// after a policy changes, a replica not yet reloaded shows the old digest,
// so replicas deciding differently can be alerted on; once every replica
// is reloaded they agree again.
func TestCatalogDigestShowsReplicasApart(t *testing.T) {
	servers, _ := startReplicas(t, newRecorder(t).srv.URL, "", 2)
	digestRE := regexp.MustCompile(`(?m)^agentg8_catalog_info\{digest="([0-9a-f]{16})"\} 1$`)
	digest := func(i int) string {
		t.Helper()
		e := &testEnv{t: t, url: "http://" + servers[i].ln.Addr().String()}
		_, m := e.do("GET", "/metrics", "", nil)
		all := digestRE.FindAllStringSubmatch(m["_body"].(string), -1)
		if len(all) != 1 {
			t.Fatalf("replica %d shows %d catalog digests", i, len(all))
		}
		return all[0][1]
	}
	before := digest(0)
	if digest(1) != before {
		t.Fatal("replicas on one config show different digests")
	}
	appendFile(t, filepath.Join(filepath.Dir(servers[0].cfg.path), "policies", "main.cedar"),
		"\n@id(\"late\")\nforbid (principal, action, resource) when { context.input has never };\n")
	servers[0].reload(context.Background())
	after := digest(0)
	if after == before || digest(1) != before {
		t.Fatalf("after reloading one replica: %s and %s (before %s)", after, digest(1), before)
	}
	servers[1].reload(context.Background())
	if digest(1) != after {
		t.Errorf("after reloading both: %s and %s", after, digest(1))
	}
	e := &testEnv{t: t, url: "http://" + servers[0].ln.Addr().String()}
	if n := countReloads(e, "catalog "+after); n != 2 {
		t.Errorf("catalog_reloaded events naming %s: %d, want one per replica", after, n)
	}
}

// What a replica listens on and its store URL are its own: they do not
// change the digest; a task, a policy or a setting does.
func TestCatalogDigestIgnoresWhereAReplicaRuns(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	digest := func() string {
		t.Helper()
		cfg, err := LoadConfig(path, lookup(testEnvVars()))
		if err != nil {
			t.Fatal(err)
		}
		reg, eng, errs := loadCatalog(cfg)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return catalogDigest(cfg, reg, eng)
	}
	base := digest()
	replaceIn(t, path, "listen: 127.0.0.1:0", "listen: 127.0.0.1:8123")
	replaceIn(t, path, "store: sqlite:data/agentg8.db", "store: sqlite:elsewhere.db")
	if got := digest(); got != base {
		t.Errorf("listen and store changed the digest: %s → %s", base, got)
	}
	appendFile(t, path, "limits:\n  actions_per_minute: 7\n")
	limited := digest()
	if limited == base {
		t.Error("a limit did not change the digest")
	}
	replaceIn(t, filepath.Join(dir, "tasks", "tasks.yaml"), "A transfer that always needs approval.", "A transfer, always approved first.")
	if digest() == limited {
		t.Error("a task's description did not change the digest")
	}
}
