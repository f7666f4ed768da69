package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/postgres"
	"github.com/agentg8/agentg8/store/storetest"
)

func newTestDB(t testing.TB) string { return storetest.PostgresDB(t) }

// openStore opens a store on url (one replica's), closed at the test's end.
func openStore(t *testing.T, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// adminPool is a plain pool on url, as an operator's psql would be.
func adminPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func newKey(t *testing.T) *audit.Key {
	t.Helper()
	key, err := audit.LoadOrCreateKey(t.TempDir() + "/audit.key")
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := postgres.Open(context.Background(), newTestDB(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMigrateConcurrently(t *testing.T) {
	u := newTestDB(t)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			s, err := postgres.Open(context.Background(), u)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

type skewed struct{ d time.Duration }

func (s skewed) Now() time.Time { return time.Now().Add(s.d) }

// A replica whose own clock is an hour off still decides by the database's.
func TestClockFollowsTheDatabase(t *testing.T) {
	s, err := postgres.Open(context.Background(), newTestDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, err := s.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{time.Hour, -3 * time.Hour} {
		got := s.Clock(skewed{d}).Now()
		if diff := got.Sub(db); diff < -2*time.Second || diff > 2*time.Second {
			t.Errorf("skew %s: clock says %s, database %s", d, got, db)
		}
	}
}

// While the database does not answer (a partition), one caller of the
// clock measures it again and the others go on with the offset they have:
// they used to queue behind the measurement, up to 2 s each in turn.
func TestClockDoesNotWaitOnAPartition(t *testing.T) {
	proxy, url := storetest.NewProxy(t, newTestDB(t))
	s := openStore(t, url)
	db, err := s.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	local := storetest.NewClock(db.Add(-time.Hour)) // an hour behind the database
	c := s.Clock(local)
	if got := c.Now(); got.Sub(db) < -2*time.Second || got.Sub(db) > 2*time.Second {
		t.Fatalf("clock says %s, database %s", got, db)
	}
	proxy.Cut()
	local.Advance(11 * time.Second) // the offset is due to be measured again
	measuring := make(chan time.Time)
	go func() { measuring <- c.Now() }()
	waitUntil(t, "the measurement to reach the cut", func() bool { return proxy.Held() > 0 })
	for i := 0; i < 5; i++ {
		got := c.Now() // answers without waiting for the measurement
		if d := got.Sub(db.Add(11 * time.Second)); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("during the measurement the clock says %s, want about %s", got, db.Add(11*time.Second))
		}
	}
	select {
	case <-measuring:
		t.Fatal("the measurement ended while the database was cut off") // then the test proves nothing
	default:
	}
	got := <-measuring // it gives up after 2 s, keeping the offset
	if d := got.Sub(db.Add(11 * time.Second)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("after a failed measurement the clock says %s", got)
	}
	proxy.Heal()
}

// Records a replica appended but did not live to seal stay uncovered —
// verify says so — until the next log on the database seals them.
func TestUnsealedRecordsAreSealedByTheNextLog(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newTestDB(t))
	key := newKey(t)
	l := audit.Open(s, key, audit.Options{})
	if err := l.Append(ctx, &agentg8.AuditEvent{Type: "proposed", ActionID: "act_1"}); err != nil {
		t.Fatal(err)
	}
	l.Close() // seals
	// A replica that dies right after its append commits:
	ev := &agentg8.AuditEvent{Type: "proposed", ActionID: "act_2"}
	b, _ := json.Marshal(ev)
	tail := `,"time":"2026-01-01T00:00:00Z",` + strings.TrimPrefix(string(b), `{"seq":0,"time":"0001-01-01T00:00:00Z",`)
	if _, err := s.AppendRecords(ctx, []audit.Pending{{ActionID: "act_2", Tail: []byte(tail)}}, []any{nil}); err != nil {
		t.Fatal(err)
	}
	var p *audit.Problem
	if _, err := audit.Verify(ctx, s, key.VerifierKey, nil); !errors.As(err, &p) || p.Seq != 1 || !strings.Contains(p.Msg, "not covered") {
		t.Fatalf("unsealed record: %v", err)
	}
	l = audit.Open(s, key, audit.Options{})
	defer l.Close()
	rep, err := audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || rep.Records != 2 {
		t.Fatalf("after the next log started: %+v %v", rep, err)
	}
}

// Changes committed through one store are announced to listeners on
// another (a second replica); a batch that fails announces nothing, and
// neither do an unapproved action's creation and end of execution
// (action.Change.Announced).
func TestChangesAreAnnounced(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := newTestDB(t)
	a, b := openStore(t, url), openStore(t, url)
	heard, listening := make(chan string, 16), make(chan struct{}, 4)
	go b.Listen(ctx, func(id string, st agentg8.State) {
		if id == "" { // listening (again): anything may have changed
			listening <- struct{}{}
			return
		}
		heard <- id + " " + string(st)
	})
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not say it listens")
	}
	rec := []audit.Pending{{ActionID: "x", Tail: []byte("}")}}
	now := time.Now().UTC()
	act := &agentg8.Action{ID: "act_1", Principal: "bot", Task: "t", Status: agentg8.StatePendingApproval, CreatedAt: now, UpdatedAt: now}
	write := func(ch *action.Change) {
		t.Helper()
		if _, err := a.AppendRecords(ctx, rec, []any{ch}); err != nil {
			t.Fatal(err)
		}
	}
	announce := func(id string) {
		t.Helper()
		fresh := *act
		fresh.ID = id
		fresh.Approval = &agentg8.Approval{ID: "apr_" + id, RequestHash: "sha256:" + id}
		write(&action.Change{Action: &fresh})
	}
	// LISTEN is in force before the empty call; announce until heard all
	// the same.
	for i := 0; ; i++ {
		id := fmt.Sprintf("act_%d", i)
		announce(id)
		select {
		case got := <-heard:
			var n int
			if _, err := fmt.Sscanf(got, "act_%d pending_approval", &n); err != nil || n > i {
				t.Fatalf("heard %q, want one of act_0…%s pending_approval", got, id)
			}
		case <-time.After(200 * time.Millisecond):
			if i == 50 {
				t.Fatal("no change was announced to the other store")
			}
			continue
		}
		break
	}
	time.Sleep(300 * time.Millisecond) // late notices of earlier tries
	for len(heard) > 0 {
		<-heard
	}
	stale := *act
	stale.Status = agentg8.StateSucceeded
	if _, err := a.AppendRecords(ctx, rec, []any{&action.Change{Action: &stale, From: agentg8.StateApproved}}); !errors.Is(err, action.ErrStateConflict) {
		t.Fatalf("stale change: %v", err)
	}
	// An allowed action, start to end: nothing to announce.
	run := *act
	run.ID, run.Status = "act_run", agentg8.StateExecuting
	write(&action.Change{Action: &run})
	run.Status, run.Version = agentg8.StateSucceeded, 1
	write(&action.Change{Action: &run, From: agentg8.StateExecuting})
	announce("act_last")
	if got := <-heard; got != "act_last pending_approval" {
		t.Fatalf("heard %q after a refused change and an allowed action, want only the next approval", got)
	}
}

// When seals keep failing, the log says so and stops taking appends (fail
// closed) until a seal succeeds again; nothing is lost meanwhile.
func TestFailingSealsStopAppends(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	s, admin, key := openStore(t, url), adminPool(t, url), newKey(t)
	var mu sync.Mutex
	seen := map[string]int{}
	l := audit.Open(s, key, audit.Options{SealGrace: 300 * time.Millisecond, ObserveSeal: func(r string, n int) {
		mu.Lock()
		seen[r]++
		mu.Unlock()
	}})
	defer l.Close()
	ev := func(id string) *agentg8.AuditEvent {
		return &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: id}
	}
	if err := l.Append(ctx, ev("act_1")); err != nil {
		t.Fatal(err)
	}
	// The hash table goes missing: seals fail, appends still work for the
	// grace period, then are refused.
	if _, err := admin.Exec(ctx, `ALTER TABLE audit_hash_runs RENAME TO audit_hash_runs_away`); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, ev("act_2")); err != nil {
		t.Fatalf("append within the grace period: %v", err)
	}
	waitUntil(t, "appends to be refused", func() bool { return l.Health() != nil })
	if err := l.Append(ctx, ev("act_3")); err == nil || !strings.Contains(err.Error(), "not been sealed") {
		t.Fatalf("append while seals fail: %v", err)
	}
	if n, _ := s.AuditSize(ctx); n != 2 {
		t.Errorf("log size %d while refusing, want 2", n)
	}
	// Repaired: the sealer's next try seals act_2, and appends resume.
	if _, err := admin.Exec(ctx, `ALTER TABLE audit_hash_runs_away RENAME TO audit_hash_runs`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "seals to resume", func() bool { return l.Health() == nil })
	if err := l.Append(ctx, ev("act_3")); err != nil {
		t.Fatalf("append after repair: %v", err)
	}
	rep, err := audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || rep.Records != 3 {
		t.Fatalf("verify after repair: %+v %v", rep, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["error"] == 0 || seen["sealed"] == 0 {
		t.Errorf("seal results observed: %v", seen)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// The rate limit's buckets live in the database, shared by replicas, and
// refill on the database's clock.
func TestSharedRateLimit(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	a, b := openStore(t, url), openStore(t, url)
	var mu sync.Mutex
	took := 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			ok, err := s.TakeToken(ctx, "bot", 5)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				took++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if took != 5 {
		t.Fatalf("%d tokens taken from a bucket of 5 through two replicas", took)
	}
	if ok, _ := a.TakeToken(ctx, "other-bot", 5); !ok {
		t.Error("buckets are per key")
	}
	// A minute later (on the database's clock) the bucket is full again,
	// and holds no more than its size.
	if _, err := adminPool(t, url).Exec(ctx, `UPDATE rate_limits SET at = at - interval '10 minutes' WHERE agent = 'bot'`); err != nil {
		t.Fatal(err)
	}
	took = 0
	for i := 0; i < 8; i++ {
		if ok, _ := b.TakeToken(ctx, "bot", 5); ok {
			took++
		}
	}
	if took != 5 {
		t.Errorf("%d tokens after refilling, want 5", took)
	}
}

// A last seal stamped in the future (the database's clock was set back)
// does not hold sealing off until the clock catches up.
func TestSealAfterClockStepBack(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	s := openStore(t, url)
	if _, err := s.AppendRecords(ctx, []audit.Pending{{ActionID: "act_1", Tail: []byte(`}`)}}, []any{nil}); err != nil {
		t.Fatal(err)
	}
	if _, err := adminPool(t, url).Exec(ctx, `UPDATE audit_seal SET sealed_at = now() + interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	n, ok, err := s.SealAudit(ctx, 10, 10*time.Millisecond, func(size int64, recs []audit.Record, _ func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		return []audit.IndexedHash{{Index: 0, Hash: tlog.RecordHash(recs[0].Data)}}, []byte("cp"), nil
	})
	if n != 1 || !ok || err != nil {
		t.Fatalf("seal after the clock went back: %d %v %v", n, ok, err)
	}
}

// Console sign-ins: stored under the token's hash, read back, and ended
// one at a time or all of a user's at once.
func TestConsoleSessions(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newTestDB(t))
	now := time.Now()
	put := func(token, user string) {
		p := agentg8.Principal{Kind: agentg8.KindUser, ID: user, Groups: []string{"finance"}}
		if err := s.PutSession(ctx, token, postgres.Session{Principal: p, CSRF: "c-" + token, Expires: now.Add(time.Hour)}, now); err != nil {
			t.Fatal(err)
		}
	}
	put("t1", "alice")
	put("t2", "alice")
	put("t3", "fred")
	if got, err := s.GetSession(ctx, "t1"); err != nil || got == nil || got.Principal.ID != "alice" || got.CSRF != "c-t1" ||
		got.Principal.Groups[0] != "finance" || !got.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("read back: %+v %v", got, err)
	}
	if err := s.DeleteUserSessions(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]bool{"t1": false, "t2": false, "t3": true} {
		if got, err := s.GetSession(ctx, token); err != nil || (got != nil) != want {
			t.Errorf("%s after ending alice's sign-ins: %+v %v", token, got, err)
		}
	}
	if err := s.DeleteSession(ctx, "t3"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSession(ctx, "t3"); got != nil {
		t.Error("a signed-out session is still there")
	}
	// Expired sign-ins are dropped when another is stored.
	put("t4", "fred")
	if err := s.PutSession(ctx, "t5", postgres.Session{Principal: agentg8.Principal{ID: "fred"}, Expires: now.Add(time.Hour)}, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSession(ctx, "t4"); got != nil {
		t.Error("an expired session was kept")
	}
}

// Two replicas' batches that update the same actions, listed in opposite
// orders (duplicate approval clicks through two replicas), must not
// deadlock: each batch locks rows in one global order, so one waits for
// the other and then loses its compare-and-set — a refusal for that
// change, never a failed batch. Rounds of two updates use one statement
// per change, rounds of five the set statement.
func TestBatchesDoNotDeadlock(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	a, b := openStore(t, url), openStore(t, url)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	now := time.Now().UTC()
	recs := func(n int) []audit.Pending {
		out := make([]audit.Pending, n)
		for i := range out {
			out[i] = audit.Pending{ActionID: "act", Tail: []byte(`}`)}
		}
		return out
	}
	for round := 0; round < 20; round++ {
		n := []int{2, 5}[round%2]
		var creates []any
		var acts []*agentg8.Action
		for i := 0; i < n; i++ {
			x := &agentg8.Action{ID: fmt.Sprintf("act_%02d_%d", round, i), Task: "ops.x", Principal: "bot", Status: agentg8.StateApproved,
				Input: json.RawMessage(`{}`), CreatedAt: now, UpdatedAt: now, Version: 1}
			acts = append(acts, x)
			creates = append(creates, &action.Change{Action: x})
		}
		if _, err := a.AppendRecords(ctx, recs(1), creates); err != nil {
			t.Fatal(err)
		}
		updates := func(reverse bool) []any {
			var out []any
			for i := range acts {
				if reverse {
					i = len(acts) - 1 - i
				}
				x := *acts[i]
				x.Status = agentg8.StateExecuting
				out = append(out, &action.Change{Action: &x, From: agentg8.StateApproved, Lease: &action.Lease{Owner: "r", TTL: time.Minute}})
			}
			return out
		}
		// A third session holds every row, so both batches start and wait
		// at their first lock, and run interleaved once it lets go.
		hold, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, `SELECT 1 FROM actions WHERE id LIKE $1 FOR UPDATE`, fmt.Sprintf("act_%02d_%%", round)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k, s := range []*postgres.Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[k] = s.AppendRecords(ctx, recs(n), updates(k == 1))
			}()
		}
		for waiting := 0; waiting < 2; {
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
		}
		hold.Rollback(ctx)
		wg.Wait()
		won := 0
		for _, err := range errs {
			var ce *audit.ChangeError
			switch {
			case err == nil:
				won++
			case !errors.As(err, &ce) || !errors.Is(err, action.ErrStateConflict):
				t.Fatalf("round %d (%d updates): a batch failed: %v", round, n, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d batches committed, want exactly one (errors %v)", round, won, errs)
		}
	}
}

// A batch chosen as a deadlock's victim (here against another session
// taking the same rows in the other order) was rolled back whole, and is
// tried again: it commits once the other session is done.
func TestDeadlockVictimIsRetried(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	s := openStore(t, url)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	now := time.Now().UTC()
	var creates, updates []any
	for i := 0; i < 2; i++ {
		x := &agentg8.Action{ID: fmt.Sprintf("act_%d", i), Task: "ops.x", Principal: "bot", Status: agentg8.StateApproved,
			Input: json.RawMessage(`{}`), CreatedAt: now, UpdatedAt: now, Version: 1}
		creates = append(creates, &action.Change{Action: x})
		y := *x
		y.Status = agentg8.StateRejected
		updates = append(updates, &action.Change{Action: &y, From: agentg8.StateApproved})
	}
	rec := []audit.Pending{{ActionID: "act_0", Tail: []byte(`}`)}}
	if _, err := s.AppendRecords(ctx, rec, creates); err != nil {
		t.Fatal(err)
	}
	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	// The other session waits long before checking for deadlocks, so the
	// batch (1 s, the default) is the one PostgreSQL aborts.
	if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '20s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT 1 FROM actions WHERE id = 'act_1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.AppendRecords(ctx, rec, updates); done <- err }() // locks act_0, waits for act_1
	for waiting := 0; waiting < 1; {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Exec(ctx, `UPDATE actions SET updated_at = updated_at WHERE id = 'act_0'`); err != nil {
		t.Fatal(err) // granted once the batch, the victim, rolled back
	}
	other.Rollback(ctx)
	if err := <-done; err != nil {
		t.Fatalf("the batch after the deadlock: %v", err)
	}
	var rejected int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM actions WHERE status = 'rejected'`).Scan(&rejected); err != nil || rejected != 2 {
		t.Fatalf("rejected actions: %d %v", rejected, err)
	}
}

// Token keys count while running replicas refresh them: a key set sharing
// none of the fresh ones is refused, and registers nothing; stale ones no
// longer count until touched again.
func TestTokenKeysRegistry(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	s, admin := openStore(t, url), adminPool(t, url)
	const fresh = time.Minute
	register := func(kids ...string) ([]string, bool) {
		t.Helper()
		others, ok, err := s.RegisterTokenKeys(ctx, kids, fresh)
		if err != nil {
			t.Fatal(err)
		}
		return others, ok
	}
	if others, ok := register("a", "b"); !ok || len(others) != 0 {
		t.Fatalf("first registration: %v %v", others, ok)
	}
	if others, ok := register("c"); ok || fmt.Sprint(others) != "[a b]" {
		t.Fatalf("a set sharing none: %v %v", others, ok)
	}
	if _, ok := register("c", "b"); !ok { // rotated: b kept
		t.Fatal("a rotated set was refused")
	}
	age := func() {
		t.Helper()
		if _, err := admin.Exec(ctx, `UPDATE token_keys SET last_seen = now() - interval '2 minutes'`); err != nil {
			t.Fatal(err)
		}
	}
	age()
	if err := s.TouchTokenKeys(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if others, ok := register("d"); ok || fmt.Sprint(others) != "[a]" {
		t.Fatalf("while a is in use: %v %v", others, ok)
	}
	age()
	if others, ok := register("d"); !ok || len(others) != 0 {
		t.Fatalf("with every key stale: %v %v", others, ok)
	}
}

// TestAppendSaysWhatCannotHaveCommitted: a batch the database refused (an
// error it reports rolls the batch back), or one that got no connection,
// is marked audit.ErrNotWritten; a batch whose connection was lost after it
// was sent is not — it may have committed — and that is what it did here.
func TestAppendSaysWhatCannotHaveCommitted(t *testing.T) {
	ctx := context.Background()
	url := newTestDB(t)
	s := openStore(t, url)
	admin := adminPool(t, url)
	rec := func(tail string) []audit.Pending { return []audit.Pending{{ActionID: "act", Tail: []byte(tail)}} }
	if _, err := admin.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON audit_records FOR EACH ROW WHEN (position('refuse' in convert_from(NEW.data, 'UTF8')) > 0) EXECUTE FUNCTION refuse()`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendRecords(ctx, rec(`,"x":"refuse"}`), []any{nil}); !errors.Is(err, audit.ErrNotWritten) {
		t.Errorf("refused by the database: %v", err)
	}
	// The proxy lets the batch reach the database, holds its answer, then
	// drops the connection.
	proxy, viaProxy := storetest.NewProxy(t, url)
	p := openStore(t, viaProxy)
	before, err := s.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxy.CutAnswersAfter("in doubt")
	done := make(chan error, 1)
	now := time.Now().UTC()
	created := &action.Change{Action: &agentg8.Action{ID: "act_d", Task: "ops.x", Principal: "bot", Status: agentg8.StateExecuting,
		Input: json.RawMessage(`{}`), CreatedAt: now, UpdatedAt: now}}
	go func() { _, err := p.AppendRecords(ctx, rec(`,"x":"in doubt"}`), []any{created}); done <- err }()
	waitUntil(t, "the batch to commit", func() bool { n, _ := s.AuditSize(ctx); return n == before+1 })
	proxy.Drop()
	// Nor is the lost connection the change's refusal.
	var ce *audit.ChangeError
	if err := <-done; err == nil || errors.Is(err, audit.ErrNotWritten) || errors.As(err, &ce) {
		t.Errorf("lost after it was sent (and committed): %v", err)
	}
	// No connection to be had (here: the caller gave up first).
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.AppendRecords(gaveUp, rec(`}`), []any{nil}); !errors.Is(err, audit.ErrNotWritten) {
		t.Errorf("no connection: %v", err)
	}
}
