package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/sqlite"
	"github.com/agentg8/agentg8/store/storetest"
)

func open(t testing.TB) (*audit.Log, *sqlite.Store, *audit.Key) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := audit.LoadOrCreateKey(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	l := audit.Open(st, key, audit.Options{})
	t.Cleanup(l.Close)
	return l, st, key
}

func TestAppendAndVerify(t *testing.T) {
	l, st, key := open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				a := &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: fmt.Sprintf("act_%d_%d", w, i)}
				b := &agentg8.AuditEvent{Type: agentg8.EventExecuting, ActionID: a.ActionID}
				if err := l.Append(ctx, a, b); err != nil {
					t.Error(err)
					return
				}
				if b.Seq != a.Seq+1 {
					t.Errorf("events of one append are not contiguous: %d, %d", a.Seq, b.Seq)
				}
			}
		}(w)
	}
	wg.Wait()
	rep, err := audit.Verify(ctx, st, key.VerifierKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 400 || rep.Tree.N != 400 {
		t.Errorf("report %+v", rep)
	}
	cp, _ := l.Checkpoint(ctx)
	tree, err := audit.ParseCheckpoint(cp, key.VerifierKey)
	if err != nil || tree != rep.Tree {
		t.Errorf("checkpoint %v %v", tree, err)
	}
	// Another key cannot vouch for this log.
	other, _ := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if _, err := audit.Verify(ctx, st, other.VerifierKey, nil); err == nil {
		t.Error("verified with the wrong key")
	}
	// A key reloaded from its file is the same key.
	again, _ := audit.ParseKey(mustSigner(t, key))
	if again.VerifierKey != key.VerifierKey {
		t.Error("key round trip changed the verifier")
	}
}

func mustSigner(t *testing.T, k *audit.Key) string {
	t.Helper()
	return k.SignerKey()
}

// failing wraps a store whose appends fail.
type failing struct{ *sqlite.Store }

func (failing) AppendAudit(context.Context, audit.BuildFunc) error { return errors.New("disk full") }

func TestAppendFailureIsReported(t *testing.T) {
	_, st, key := open(t)
	l := audit.Open(failing{st}, key, audit.Options{})
	defer l.Close()
	if err := l.Append(context.Background(), &agentg8.AuditEvent{Type: "x"}); err == nil {
		t.Fatal("append reported success on a failing store")
	}
}

// BenchmarkAppend measures durable appends (SQLite, synchronous=FULL) with
// 1, 16 and 64 concurrent writers; group commit shares one fsync per batch.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, _, _ := open(b)
			ctx := context.Background()
			storetest.Writers(b, writers, "appends", func() error {
				return l.Append(ctx, &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: "act_bench", Task: "crm.add_note"})
			})
		})
	}
}

// BenchmarkBaselineInsert is the ceiling the audit log is compared with: one
// durable single-row INSERT per operation on the same SQLite settings (WAL,
// synchronous=FULL), with the same numbers of writers.
func BenchmarkBaselineInsert(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			dsn := "file:" + filepath.Join(b.TempDir(), "base.db") + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
			db, err := sql.Open("sqlite", dsn)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(8)
			if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)`); err != nil {
				b.Fatal(err)
			}
			row := []byte(`{"seq":0,"time":"2026-01-01T00:00:00Z","type":"proposed","action_id":"act_bench","task":"crm.add_note"}`)
			storetest.Writers(b, writers, "inserts", func() error {
				_, err := db.Exec(`INSERT INTO t (data) VALUES (?)`, row)
				return err
			})
		})
	}
}

// slowStore holds the first append so later ones pile up into one batch.
type slowStore struct {
	*sqlite.Store
	once sync.Once
}

func (s *slowStore) AppendAudit(ctx context.Context, b audit.BuildFunc) error {
	s.once.Do(func() { time.Sleep(100 * time.Millisecond) })
	return s.Store.AppendAudit(ctx, b)
}

func TestRefusedChangesFailAlone(t *testing.T) {
	_, st, key := open(t)
	ctx := context.Background()
	base := &agentg8.Action{ID: "act_base", Task: "a.b", Status: agentg8.StateApproved, Principal: "p", Version: 1}
	if err := st.CreateAction(ctx, base); err != nil {
		t.Fatal(err)
	}
	l := audit.Open(&slowStore{Store: st}, key, audit.Options{})
	defer l.Close()
	l.Append(ctx, &agentg8.AuditEvent{Type: "warm-up"}) // the slow one
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ch *action.Change
			if i%5 != 0 { // 40 race for one compare-and-set: one wins
				a := *base
				a.Status = agentg8.StateExecuting
				ch = &action.Change{Action: &a, From: agentg8.StateApproved}
			} else {
				ch = &action.Change{Action: &agentg8.Action{ID: fmt.Sprintf("act_%d", i), Task: "a.b", Status: agentg8.StateDenied, Principal: "p"}}
			}
			errs[i] = l.Commit(ctx, ch, &agentg8.AuditEvent{Type: "x", ActionID: fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	won, lost := 0, 0
	for i, err := range errs {
		switch {
		case i%5 == 0 && err != nil:
			t.Errorf("create %d failed: %v", i, err)
		case i%5 == 0:
		case err == nil:
			won++
		case errors.Is(err, action.ErrStateConflict):
			lost++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if won != 1 || lost != 39 {
		t.Errorf("won %d lost %d", won, lost)
	}
	// Exactly the committed events are in the log, and it verifies.
	rep, err := audit.Verify(ctx, st, key.VerifierKey, nil)
	if err != nil || rep.Records != 1+10+1 {
		t.Errorf("verify: %+v %v", rep, err)
	}
}

// BenchmarkVerify measures a full verify of logs of 20,000 and 200,000
// records (SQLite): time per record, and the most live heap seen while it
// runs (sampled after a collection every 20 ms), which should not grow
// with the log (it streams).
func BenchmarkVerify(b *testing.B) {
	for _, records := range []int{20000, 200000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			l, st, key := open(b)
			ctx := context.Background()
			var wg sync.WaitGroup
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < records; i += 64 {
						if err := l.Append(ctx, &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: fmt.Sprintf("act_%d", i), Task: "crm.add_note"}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			l.Close() // seals
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			done := make(chan struct{})
			go func() {
				var m runtime.MemStats
				for {
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
					runtime.GC()
					runtime.ReadMemStats(&m)
					if m.HeapAlloc > peak.Load() {
						peak.Store(m.HeapAlloc)
					}
				}
			}()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rep, err := audit.Verify(ctx, st, key.VerifierKey, nil)
				if err != nil || rep.Records != int64(records) {
					b.Fatalf("verify: %+v %v", rep, err)
				}
			}
			b.StopTimer()
			close(done)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(records), "ns/record")
			b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapAlloc))/(1<<20), "live-heap-MiB")
		})
	}
}
