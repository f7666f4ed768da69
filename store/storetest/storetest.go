// Package storetest is the conformance suite every store adapter must pass,
// unchanged: SQLite now, PostgreSQL later.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/credential"
)

// Store is everything an adapter provides.
type Store interface {
	action.Store
	audit.Store
	audit.Reader
	credential.SecretStore
	AuditSize(ctx context.Context) (int64, error)
}

var errSize = errors.New("log size is not the batch's start")

// appendBatch appends a prepared batch, failing if the log is not at b.Start.
func appendBatch(ctx context.Context, s audit.BatchStore, b audit.Batch) error {
	return s.AppendAudit(ctx, func(size int64, _ func([]int64) ([]tlog.Hash, error)) (audit.Batch, error) {
		if size != b.Start {
			return b, errSize
		}
		return b, nil
	})
}

// commitChanges appends one record per change (nil: a record without one)
// the way the store appends, as the log does, with made-up data, hashes
// and checkpoint: the store's side of a change does not depend on them.
func commitChanges(ctx context.Context, s Store, changes ...any) error {
	switch st := s.(type) {
	case audit.BatchStore:
		return st.AppendAudit(ctx, func(size int64, _ func([]int64) ([]tlog.Hash, error)) (audit.Batch, error) {
			b := audit.Batch{Start: size, Size: size + int64(len(changes)), Checkpoint: []byte("c"), Changes: changes}
			for i := range changes {
				seq := size + int64(i)
				data := []byte(fmt.Sprint(seq))
				b.Records = append(b.Records, audit.Record{Seq: seq, ActionID: "x", Data: data})
				b.Hashes = append(b.Hashes, audit.IndexedHash{Index: tlog.StoredHashIndex(0, seq), Hash: tlog.RecordHash(data)})
			}
			return b, nil
		})
	case audit.SequencedStore:
		recs := make([]audit.Pending, len(changes))
		for i := range recs {
			recs[i] = audit.Pending{ActionID: "x", Tail: []byte("}")}
		}
		_, err := st.AppendRecords(ctx, recs, changes)
		return err
	}
	return fmt.Errorf("%T appends neither batches nor records", s)
}

// Run exercises a store. newStore returns a fresh, empty store.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("actions", func(t *testing.T) { testActions(t, newStore(t)) })
	t.Run("compare-and-set is exclusive", func(t *testing.T) { testCAS(t, newStore(t)) })
	t.Run("idempotency", func(t *testing.T) { testIdempotency(t, newStore(t)) })
	t.Run("audit", func(t *testing.T) {
		switch s := newStore(t); st := s.(type) {
		case batchStore:
			testBatchAudit(t, st)
		case sequencedStore:
			testSequencedAudit(t, st)
		default:
			t.Fatalf("%T appends neither batches nor records", s)
		}
	})
	t.Run("changes commit with their audit batch", func(t *testing.T) { testChanges(t, newStore(t)) })
	t.Run("approvals", func(t *testing.T) { testApprovals(t, newStore(t)) })
	t.Run("pending bound holds under concurrency", func(t *testing.T) { testPendingBound(t, newStore(t)) })
	t.Run("notifications", func(t *testing.T) { testNotifications(t, newStore(t)) })
	t.Run("secrets", func(t *testing.T) { testSecrets(t, newStore(t)) })
	t.Run("several writers keep one log", func(t *testing.T) { testWriters(t, newStore(t)) })
	t.Run("verify since a trusted checkpoint", func(t *testing.T) { testVerifySince(t, newStore(t)) })
	t.Run("execution leases", func(t *testing.T) { testLeases(t, newStore(t)) })
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newAction(id, principal, task string, st agentg8.State, at time.Time) *agentg8.Action {
	return &agentg8.Action{ID: id, Task: task, Status: st, Principal: principal, Input: json.RawMessage(`{"a":1}`),
		Decision: &agentg8.Decision{Effect: agentg8.Allow, Policies: []string{"p"}}, CreatedAt: at, UpdatedAt: at, Version: 1}
}

func testActions(t *testing.T, s Store) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		p := []string{"bot", "other"}[i%2]
		if err := s.CreateAction(ctx, newAction(fmt.Sprintf("act_%d", i), p, "crm.x", agentg8.StateSucceeded, t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateAction(ctx, newAction("act_0", "bot", "crm.x", agentg8.StateSucceeded, t0)); err == nil {
		t.Error("duplicate id accepted")
	}
	a, err := s.GetAction(ctx, "act_3")
	if err != nil || a.Principal != "other" || string(a.Input) != `{"a":1}` || !a.CreatedAt.Equal(t0.Add(3*time.Second)) || a.Decision.Policies[0] != "p" {
		t.Fatalf("get: %+v %v", a, err)
	}
	if _, err := s.GetAction(ctx, "act_none"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	list, err := s.ListActions(ctx, action.Filter{Principal: "bot", Limit: 10})
	if err != nil || len(list) != 3 || list[0].ID != "act_4" || list[2].ID != "act_0" {
		t.Errorf("list by principal: %v %v", ids(list), err)
	}
	list, _ = s.ListActions(ctx, action.Filter{Limit: 2})
	if len(list) != 2 || list[0].ID != "act_4" {
		t.Errorf("limit: %v", ids(list))
	}
	list, _ = s.ListActions(ctx, action.Filter{Limit: 10, Before: t0.Add(2 * time.Second)})
	if len(list) != 2 || list[0].ID != "act_1" {
		t.Errorf("before: %v", ids(list))
	}
	a.Status = agentg8.StateExecuting
	if err := s.UpdateAction(ctx, a, agentg8.StateApproved); !errors.Is(err, action.ErrStateConflict) {
		t.Errorf("update from wrong state: %v", err)
	}
	if err := s.UpdateAction(ctx, a, agentg8.StateSucceeded); err != nil {
		t.Fatal(err)
	}
	// The version moved on: a writer holding the old one loses.
	if got, _ := s.GetAction(ctx, "act_3"); got.Version != 2 {
		t.Errorf("version after update: %d", got.Version)
	}
	stale := *a
	stale.Status = agentg8.StateFailed
	if err := s.UpdateAction(ctx, &stale, agentg8.StateExecuting); !errors.Is(err, action.ErrStateConflict) {
		t.Errorf("stale version accepted: %v", err)
	}
	in, _ := s.ActionsInState(ctx, agentg8.StateExecuting)
	if len(in) != 1 || in[0].ID != "act_3" {
		t.Errorf("in state: %v", ids(in))
	}
	list, _ = s.ListActions(ctx, action.Filter{Status: agentg8.StateExecuting, Limit: 10})
	if len(list) != 1 {
		t.Errorf("by status: %v", ids(list))
	}
}

func ids(as []*agentg8.Action) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func testCAS(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.CreateAction(ctx, newAction("act_cas", "bot", "crm.x", agentg8.StateApproved, t0)); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := newAction("act_cas", "bot", "crm.x", agentg8.StateExecuting, t0)
			err := s.UpdateAction(ctx, a, agentg8.StateApproved)
			if err == nil {
				wins.Add(1)
			} else if !errors.Is(err, action.ErrStateConflict) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners, want exactly 1", wins.Load())
	}
}

func testIdempotency(t *testing.T, s Store) {
	ctx := context.Background()
	rec := action.IdempotencyRecord{Agent: "bot", Key: "k", PayloadHash: "h1", CreatedAt: t0}
	if prev, err := s.ClaimIdempotency(ctx, rec); err != nil || prev != nil {
		t.Fatalf("first claim: %v %v", prev, err)
	}
	prev, err := s.ClaimIdempotency(ctx, action.IdempotencyRecord{Agent: "bot", Key: "k", PayloadHash: "h2", CreatedAt: t0})
	if err != nil || prev == nil || prev.PayloadHash != "h1" || prev.Result != nil {
		t.Fatalf("second claim: %+v %v", prev, err)
	}
	if prev, _ := s.ClaimIdempotency(ctx, action.IdempotencyRecord{Agent: "other", Key: "k", PayloadHash: "h", CreatedAt: t0}); prev != nil {
		t.Error("keys must be scoped per agent")
	}
	answered := t0.Add(time.Hour)
	if err := s.CompleteIdempotency(ctx, "bot", "k", []byte(`{"x":1}`), answered); err != nil {
		t.Fatal(err)
	}
	prev, _ = s.ClaimIdempotency(ctx, rec)
	if prev == nil || string(prev.Result) != `{"x":1}` || !prev.CreatedAt.Equal(answered) {
		t.Errorf("completed (dated when answered): %+v", prev)
	}
	// Release removes only unanswered claims.
	s.ReleaseIdempotency(ctx, "bot", "k", t0)
	if prev, _ := s.ClaimIdempotency(ctx, rec); prev == nil {
		t.Error("released an answered claim")
	}
	s.ReleaseIdempotency(ctx, "other", "k", t0)
	if prev, _ := s.ClaimIdempotency(ctx, action.IdempotencyRecord{Agent: "other", Key: "k", PayloadHash: "h", CreatedAt: t0}); prev != nil {
		t.Error("release did not free a claim without an action ID")
	}
	// A claim names its action ID; a later claim learns it, and releasing
	// keeps it (so every attempt under the key uses one ID), marking the
	// claim abandoned.
	named := action.IdempotencyRecord{Agent: "bot", Key: "named", PayloadHash: "h", ActionID: "act_named", CreatedAt: t0}
	if prev, err := s.ClaimIdempotency(ctx, named); err != nil || prev != nil {
		t.Fatalf("named claim: %+v %v", prev, err)
	}
	later := named
	later.ActionID, later.CreatedAt = "act_other", t0.Add(time.Minute)
	if prev, _ := s.ClaimIdempotency(ctx, later); prev == nil || prev.ActionID != "act_named" || !prev.CreatedAt.Equal(t0) {
		t.Errorf("claim after a named one: %+v", prev)
	}
	if err := s.ReleaseIdempotency(ctx, "bot", "named", t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if prev, _ := s.ClaimIdempotency(ctx, later); prev == nil || prev.ActionID != "act_named" || prev.Result != nil || !prev.CreatedAt.Equal(t0.Add(-time.Hour)) {
		t.Errorf("released named claim (dated as told): %+v", prev)
	}
	// Concurrent claims: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev, err := s.ClaimIdempotency(ctx, action.IdempotencyRecord{Agent: "bot", Key: "race", PayloadHash: "h", CreatedAt: t0})
			if err != nil {
				t.Error(err)
			} else if prev == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d concurrent claims won", wins.Load())
	}
	// Pruning deletes records dated before the cutoff, answered or not,
	// at most limit at a time. Dated now: bot/k t0+1h, other/k t0,
	// bot/named t0-1h, bot/race t0.
	for i := range 3 {
		old := action.IdempotencyRecord{Agent: "old", Key: fmt.Sprint(i), PayloadHash: "h", CreatedAt: t0.Add(-2 * time.Hour)}
		if prev, err := s.ClaimIdempotency(ctx, old); err != nil || prev != nil {
			t.Fatalf("claim: %+v %v", prev, err)
		}
	}
	if n, err := s.PruneIdempotency(ctx, t0.Add(-time.Hour), 2); err != nil || n != 2 {
		t.Errorf("prune with limit 2: %d %v", n, err)
	}
	if n, err := s.PruneIdempotency(ctx, t0.Add(-time.Hour), 10); err != nil || n != 1 {
		t.Errorf("prune the rest before the cutoff (the released claim dated at it stays): %d %v", n, err)
	}
	if n, err := s.PruneIdempotency(ctx, t0.Add(time.Minute), 10); err != nil || n != 3 {
		t.Errorf("prune before t0+1m (named, race, other/k): %d %v", n, err)
	}
	if prev, _ := s.ClaimIdempotency(ctx, rec); prev == nil || string(prev.Result) != `{"x":1}` {
		t.Errorf("a record dated after the cutoff was pruned: %+v", prev)
	}
	if prev, _ := s.ClaimIdempotency(ctx, later); prev != nil {
		t.Errorf("a pruned key is still claimed: %+v", prev)
	}
}

// checkEmptyLog checks a new store's log has no records and no checkpoint.
func checkEmptyLog(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	if n, err := s.AuditSize(ctx); err != nil || n != 0 {
		t.Fatalf("empty size %d %v", n, err)
	}
	if cp, err := s.LatestAuditCheckpoint(ctx); err != nil || cp != nil {
		t.Fatalf("empty checkpoint %q %v", cp, err)
	}
}

// checkCheckpoints checks the log holds two checkpoints, first and latest.
// checkCheckpoints checks the stored checkpoints, smallest first, and
// that the last is the latest.
func checkCheckpoints(t *testing.T, s Store, want ...string) {
	t.Helper()
	ctx := context.Background()
	cps, _ := s.AuditCheckpoints(ctx, -1, 1000)
	got := make([]string, len(cps))
	for i, c := range cps {
		got[i] = string(c)
	}
	if !slices.Equal(got, want) {
		t.Errorf("checkpoints %q, want %q", got, want)
	}
	if cp, _ := s.LatestAuditCheckpoint(ctx); string(cp) != want[len(want)-1] {
		t.Errorf("latest %q", cp)
	}
}

type batchStore interface {
	Store
	audit.BatchStore
}

func testBatchAudit(t *testing.T, s batchStore) {
	ctx := context.Background()
	checkEmptyLog(t, s)
	h := tlog.RecordHash([]byte("r0"))
	b := audit.Batch{Start: 0, Size: 1, Records: []audit.Record{{Seq: 0, ActionID: "act_1", Data: []byte("r0")}},
		Hashes: []audit.IndexedHash{{Index: 0, Hash: h}}, Checkpoint: []byte("cp1")}
	if err := appendBatch(ctx, s, b); err != nil {
		t.Fatal(err)
	}
	if err := appendBatch(ctx, s, b); !errors.Is(err, errSize) {
		t.Errorf("stale start: %v", err)
	}
	b2 := audit.Batch{Start: 1, Size: 3, Records: []audit.Record{{Seq: 1, ActionID: "act_2", Data: []byte("r1")}, {Seq: 2, ActionID: "act_1", Data: []byte("r2")}},
		Hashes: []audit.IndexedHash{{Index: 1, Hash: tlog.RecordHash([]byte("r1"))}, {Index: 2, Hash: h}}, Checkpoint: []byte("cp3")}
	if err := appendBatch(ctx, s, b2); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.AuditSize(ctx); n != 3 {
		t.Errorf("size %d", n)
	}
	got, err := s.ReadAuditHashes(ctx, []int64{2, 0})
	if err != nil || got[0] != h || got[1] != h {
		t.Errorf("hashes %v %v", got, err)
	}
	if _, err := s.ReadAuditHashes(ctx, []int64{99}); err == nil {
		t.Error("missing hash not reported")
	}
	recs, err := s.ReadAuditRecords(ctx, 0, 10)
	if err != nil || len(recs) != 2 || string(recs[0].Data) != "r1" || recs[1].Seq != 2 {
		t.Errorf("records %+v %v", recs, err)
	}
	checkCheckpoints(t, s, "cp1", "cp3")
}

type sequencedStore interface {
	Store
	audit.SequencedStore
}

// testSequencedAudit checks a store that places records itself and seals
// them apart: positions, stored bytes, sealing under a lock taken without
// waiting, and a failed seal writing nothing.
func testSequencedAudit(t *testing.T, s sequencedStore) {
	ctx := context.Background()
	checkEmptyLog(t, s)
	start, err := s.AppendRecords(ctx, []audit.Pending{{ActionID: "act_1", Tail: []byte(`,"a":1}`)}}, []any{nil})
	if err != nil || start != 0 {
		t.Fatalf("first append: %d %v", start, err)
	}
	start, err = s.AppendRecords(ctx, []audit.Pending{{ActionID: "act_2", Tail: []byte(`,"a":2}`)}, {ActionID: "act_1", Tail: []byte(`,"a":3}`)}}, []any{nil})
	if err != nil || start != 1 {
		t.Fatalf("second append: %d %v", start, err)
	}
	if n, _ := s.AuditSize(ctx); n != 3 {
		t.Errorf("size %d", n)
	}
	recs, err := s.ReadAuditRecords(ctx, -1, 10)
	if err != nil || len(recs) != 3 || string(recs[0].Data) != `{"seq":0,"a":1}` || string(recs[2].Data) != `{"seq":2,"a":3}` ||
		recs[1].Seq != 1 || recs[1].ActionID != "act_2" {
		t.Fatalf("records %+v %v", recs, err)
	}
	hashes := func(from int64, recs []audit.Record) []audit.IndexedHash {
		var out []audit.IndexedHash
		for i, r := range recs {
			out = append(out, audit.IndexedHash{Index: tlog.StoredHashIndex(0, from+int64(i)), Hash: tlog.RecordHash(r.Data)})
		}
		return out
	}
	// A failed seal writes nothing; a limit seals the oldest records first.
	if _, _, err := s.SealAudit(ctx, 10, 0, func(int64, []audit.Record, func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		return nil, nil, errors.New("no key")
	}); err == nil {
		t.Error("a failed seal was not reported")
	}
	n, ok, err := s.SealAudit(ctx, 2, 0, func(size int64, got []audit.Record, _ func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		if size != 0 || len(got) != 2 || got[0].Seq != 0 || got[1].Seq != 1 {
			t.Errorf("first seal got size %d, %d records", size, len(got))
		}
		return hashes(size, got), []byte("cp2"), nil
	})
	if n != 2 || !ok || err != nil {
		t.Fatalf("first seal: %d %v %v", n, ok, err)
	}
	// While one process seals, another does not wait for the lock.
	n, ok, err = s.SealAudit(ctx, 10, 0, func(size int64, got []audit.Record, _ func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		if size != 2 || len(got) != 1 || got[0].Seq != 2 {
			t.Errorf("second seal got size %d, %d records", size, len(got))
		}
		_, ok2, err2 := s.SealAudit(ctx, 10, 0, func(int64, []audit.Record, func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
			t.Error("two seals at once")
			return nil, nil, nil
		})
		if ok2 || err2 != nil {
			t.Errorf("a second sealer got the lock or failed: %v %v", ok2, err2)
		}
		return hashes(size, got), []byte("cp3"), nil
	})
	if n != 1 || !ok || err != nil {
		t.Fatalf("second seal: %d %v %v", n, ok, err)
	}
	if n, ok, err := s.SealAudit(ctx, 10, 0, nil); n != 0 || !ok || err != nil {
		t.Errorf("sealing nothing: %d %v %v", n, ok, err)
	}
	// Seals are spaced across processes: within gap of the last, another
	// sealer stands back.
	if _, err := s.AppendRecords(ctx, []audit.Pending{{ActionID: "act_3", Tail: []byte(`,"a":4}`)}}, []any{nil}); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := s.SealAudit(ctx, 10, time.Hour, func(int64, []audit.Record, func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		t.Error("sealed within the gap")
		return nil, nil, nil
	}); n != 0 || ok || err != nil {
		t.Errorf("seal within the gap: %d %v %v", n, ok, err)
	}
	time.Sleep(20 * time.Millisecond)
	n, ok, err = s.SealAudit(ctx, 10, 10*time.Millisecond, func(size int64, got []audit.Record, _ func([]int64) ([]tlog.Hash, error)) ([]audit.IndexedHash, []byte, error) {
		return hashes(size, got), []byte("cp4"), nil
	})
	if n != 1 || !ok || err != nil {
		t.Errorf("seal after the gap: %d %v %v", n, ok, err)
	}
	got, err := s.ReadAuditHashes(ctx, []int64{tlog.StoredHashIndex(0, 2), 0})
	if err != nil || got[0] != tlog.RecordHash(recs[2].Data) || got[1] != tlog.RecordHash(recs[0].Data) {
		t.Errorf("hashes %v %v", got, err)
	}
	checkCheckpoints(t, s, "cp2", "cp3", "cp4")
}

func testChanges(t *testing.T, s Store) {
	ctx := context.Background()
	a := newAction("act_c", "bot", "crm.x", agentg8.StateExecuting, t0)
	if err := commitChanges(ctx, s, &action.Change{Action: a}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetAction(ctx, "act_c"); err != nil || got.Status != agentg8.StateExecuting {
		t.Fatalf("created: %v %v", got, err)
	}
	// A batch whose second change loses its compare-and-set writes nothing
	// — not even the change before it — and says which change failed.
	done := newAction("act_c", "bot", "crm.x", agentg8.StateSucceeded, t0)
	before := newAction("act_c0", "bot", "crm.x", agentg8.StateExecuting, t0)
	err := commitChanges(ctx, s, &action.Change{Action: before}, &action.Change{Action: done, From: agentg8.StateApproved})
	var ce *audit.ChangeError
	if !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, action.ErrStateConflict) {
		t.Fatalf("want ChangeError{1, ErrStateConflict}, got %v", err)
	}
	if n, _ := s.AuditSize(ctx); n != 1 {
		t.Errorf("records of a refused batch were kept: size %d", n)
	}
	if _, err := s.GetAction(ctx, "act_c0"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("a change in a refused batch was kept: %v", err)
	}
	if got, _ := s.GetAction(ctx, "act_c"); got.Status != agentg8.StateExecuting {
		t.Errorf("state changed: %s", got.Status)
	}
	if err := commitChanges(ctx, s, &action.Change{Action: done, From: agentg8.StateExecuting}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAction(ctx, "act_c"); got.Status != agentg8.StateSucceeded {
		t.Errorf("update: %s", got.Status)
	}
	// Creating an action whose ID is taken is refused as such (two
	// requests under one idempotency claim), alone or among several
	// creates.
	if err := s.CreateAction(ctx, newAction("act_c", "bot", "crm.x", agentg8.StateExecuting, t0)); !errors.Is(err, action.ErrActionExists) {
		t.Errorf("create over an existing ID: %v", err)
	}
	var taken []any
	for i := range 4 {
		taken = append(taken, &action.Change{Action: newAction(fmt.Sprintf("act_n%d", i), "bot", "crm.x", agentg8.StateExecuting, t0)})
	}
	err = commitChanges(ctx, s, append(taken, &action.Change{Action: newAction("act_c", "bot", "crm.x", agentg8.StateExecuting, t0)})...)
	if !errors.As(err, &ce) || ce.Index != 4 || !errors.Is(err, action.ErrActionExists) {
		t.Fatalf("want ChangeError{4, ErrActionExists}, got %v", err)
	}
	if got, _ := s.GetAction(ctx, "act_c"); got.Status != agentg8.StateSucceeded {
		t.Errorf("a refused create changed the action: %s", got.Status)
	}
	// A refused insert (an identical request is already pending) fails its
	// batch too, naming the change, and the store takes the next batch.
	if err := s.CreateAction(ctx, pendingAction("act_p1", "bot", "sha256:dup")); err != nil {
		t.Fatal(err)
	}
	err = commitChanges(ctx, s, nil, nil, &action.Change{Action: pendingAction("act_p2", "bot", "sha256:dup")})
	if !errors.As(err, &ce) || ce.Index != 2 || !errors.Is(err, action.ErrDuplicatePending) {
		t.Fatalf("want ChangeError{2, ErrDuplicatePending}, got %v", err)
	}
	if n, _ := s.AuditSize(ctx); n != 2 {
		t.Errorf("records of a refused batch were kept: size %d", n)
	}
	if err := commitChanges(ctx, s, nil); err != nil {
		t.Fatalf("the next batch: %v", err)
	}
	if n, _ := s.AuditSize(ctx); n != 3 {
		t.Errorf("size after the next batch: %d", n)
	}
	// Several creations and several updates in one batch each land, with
	// their own state and version (stores may write each kind as one
	// statement when a batch has several).
	const many = 6
	var creates, updates []any
	for i := range many {
		creates = append(creates, &action.Change{Action: newAction(fmt.Sprintf("act_m%d", i), "bot", "crm.x", agentg8.StateExecuting, t0),
			Lease: &action.Lease{Owner: "r1", TTL: time.Minute}})
	}
	if err := commitChanges(ctx, s, creates...); err != nil {
		t.Fatal(err)
	}
	for i := range many {
		id := fmt.Sprintf("act_m%d", i)
		if ok, err := s.RenewLease(ctx, id, action.Lease{Owner: "r2", TTL: time.Minute}); ok || err != nil {
			t.Errorf("%s: another owner renewed its lease: %v %v", id, ok, err)
		}
		if ok, err := s.RenewLease(ctx, id, action.Lease{Owner: "r1", TTL: time.Minute}); !ok || err != nil {
			t.Errorf("%s: its owner could not renew its lease: %v %v", id, ok, err)
		}
	}
	final := func(i int) agentg8.State {
		return []agentg8.State{agentg8.StateSucceeded, agentg8.StateFailed, agentg8.StateOutcomeUnknown}[i%3]
	}
	for i := range many {
		updates = append(updates, &action.Change{Action: newAction(fmt.Sprintf("act_m%d", i), "bot", "crm.x", final(i), t0), From: agentg8.StateExecuting})
	}
	if err := commitChanges(ctx, s, append(updates, nil)...); err != nil {
		t.Fatal(err)
	}
	for i := range many {
		if got, err := s.GetAction(ctx, fmt.Sprintf("act_m%d", i)); err != nil || got.Status != final(i) || got.Version != 2 {
			t.Errorf("act_m%d: %+v %v, want %s version 2", i, got, err, final(i))
		}
	}
	// Two updates of one action from the same version among several: the
	// second loses, and the batch (with the others) is refused, naming it.
	updates = updates[:0]
	for i := range many {
		a := newAction(fmt.Sprintf("act_m%d", i), "bot", "crm.x", agentg8.StateCancelled, t0)
		a.Version = 2
		updates = append(updates, &action.Change{Action: a, From: final(i)})
	}
	again := *updates[1].(*action.Change).Action
	again.Status = agentg8.StateFailed
	updates = append(updates, &action.Change{Action: &again, From: final(1)})
	other := newAction("act_m9", "bot", "crm.x", agentg8.StateExecuting, t0)
	err = commitChanges(ctx, s, append([]any{&action.Change{Action: other}}, updates...)...)
	if !errors.As(err, &ce) || ce.Index != many+1 || !errors.Is(err, action.ErrStateConflict) {
		t.Fatalf("want ChangeError{%d, ErrStateConflict}, got %v", many+1, err)
	}
	for i := range many {
		if got, _ := s.GetAction(ctx, fmt.Sprintf("act_m%d", i)); got.Status != final(i) || got.Version != 2 {
			t.Errorf("a refused batch changed act_m%d: %s version %d", i, got.Status, got.Version)
		}
	}
	if _, err := s.GetAction(ctx, "act_m9"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("a change in a refused batch was kept: %v", err)
	}
	// Likewise an identical pending request among several new ones.
	creates = creates[:0]
	for i := range many {
		creates = append(creates, &action.Change{Action: pendingAction(fmt.Sprintf("act_n%d", i), "bot", fmt.Sprintf("sha256:n%d", i%(many-1)))})
	}
	err = commitChanges(ctx, s, creates...)
	if !errors.As(err, &ce) || ce.Index != many-1 || !errors.Is(err, action.ErrDuplicatePending) {
		t.Fatalf("want ChangeError{%d, ErrDuplicatePending}, got %v", many-1, err)
	}
	if _, err := s.GetAction(ctx, "act_n0"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("a change in a refused batch was kept: %v", err)
	}
}

func pendingAction(id, principal, hash string) *agentg8.Action {
	a := newAction(id, principal, "ops.x", agentg8.StatePendingApproval, t0)
	a.Approval = &agentg8.Approval{ID: "apr_" + id, Status: "pending", RequestHash: hash}
	return a
}

func testApprovals(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.CreateAction(ctx, pendingAction("a1", "bot", "sha256:1")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAction(ctx, pendingAction("a2", "bot", "sha256:2")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAction(ctx, pendingAction("a3", "bot", "sha256:1")); !errors.Is(err, action.ErrDuplicatePending) {
		t.Errorf("second pending action with one hash: %v", err)
	}
	if a, err := s.GetActionByApproval(ctx, "apr_a2"); err != nil || a.ID != "a2" {
		t.Errorf("by approval: %v %v", a, err)
	}
	if _, err := s.GetActionByApproval(ctx, "apr_none"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("missing approval: %v", err)
	}
	if a, err := s.PendingByHash(ctx, "sha256:1"); err != nil || a.ID != "a1" {
		t.Errorf("by hash: %v %v", a, err)
	}
	if n, err := s.CountPending(ctx, "bot"); err != nil || n != 2 {
		t.Errorf("count: %d %v", n, err)
	}
	// Once decided, the hash is free for a new request.
	a, _ := s.GetAction(ctx, "a1")
	a.Status = agentg8.StateRejected
	if err := s.UpdateAction(ctx, a, agentg8.StatePendingApproval); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PendingByHash(ctx, "sha256:1"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("decided action still pending by hash: %v", err)
	}
	if err := s.CreateAction(ctx, pendingAction("a4", "bot", "sha256:1")); err != nil {
		t.Errorf("new request after decision: %v", err)
	}
	if n, _ := s.CountPending(ctx, "bot"); n != 2 {
		t.Errorf("count after decision: %d", n)
	}
}

// A bounded pending create (Change.MaxPending) is counted as it is
// written: in one batch, later creates count earlier ones, and concurrent
// batches (replicas) cannot pass the bound together.
func testPendingBound(t *testing.T, s Store) {
	ctx := context.Background()
	bounded := func(id, principal string, max int) *action.Change {
		return &action.Change{Action: pendingAction(id, principal, "sha256:"+id), MaxPending: max}
	}
	refused := func(err error, index int) bool {
		var ce *audit.ChangeError
		return errors.As(err, &ce) && ce.Index == index && errors.Is(err, action.ErrTooManyPending)
	}
	for _, id := range []string{"b1", "b2"} {
		if err := commitChanges(ctx, s, bounded(id, "bot", 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := commitChanges(ctx, s, bounded("b3", "bot", 3)); err != nil {
		t.Fatalf("third of three: %v", err)
	}
	if err := commitChanges(ctx, s, bounded("b4", "bot", 3)); !refused(err, 0) {
		t.Fatalf("fourth of three: want ChangeError{0, ErrTooManyPending}, got %v", err)
	}
	if _, err := s.GetAction(ctx, "b4"); !errors.Is(err, action.ErrNotFound) {
		t.Errorf("refused action was kept: %v", err)
	}
	// Another principal counts its own; in one batch the second create
	// counts the first.
	if err := commitChanges(ctx, s, bounded("o1", "other", 1), bounded("o2", "other", 1)); !refused(err, 1) {
		t.Fatalf("second of one in one batch: want ChangeError{1, ErrTooManyPending}, got %v", err)
	}
	if err := commitChanges(ctx, s, bounded("o1", "other", 1)); err != nil {
		t.Fatalf("first of one: %v", err)
	}
	// Concurrent proposals: exactly the bound passes.
	const n, max = 16, 3
	var passed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := commitChanges(ctx, s, bounded(fmt.Sprintf("c%d", i), "busy", max))
			switch {
			case err == nil:
				passed.Add(1)
			case !refused(err, 0):
				t.Errorf("concurrent create: %v", err)
			}
		}()
	}
	wg.Wait()
	if n, err := s.CountPending(ctx, "busy"); passed.Load() != max || n != max || err != nil {
		t.Errorf("concurrent creates under a bound of %d: %d passed, %d pending (%v)", max, passed.Load(), n, err)
	}
	// A decided action frees its place.
	a, err := s.GetAction(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	a.Status = agentg8.StateRejected
	if err := s.UpdateAction(ctx, a, agentg8.StatePendingApproval); err != nil {
		t.Fatal(err)
	}
	if err := commitChanges(ctx, s, bounded("b5", "bot", 3)); err != nil {
		t.Errorf("after a decision: %v", err)
	}
}

func testNotifications(t *testing.T, s Store) {
	ctx := context.Background()
	a := newAction("an", "bot", "ops.x", agentg8.StatePendingApproval, t0)
	n1 := action.Notification{ID: "n1", ActionID: "an", Channel: "key-one", Position: -1, Event: "approval_requested", Payload: []byte(`{}`), NextAt: t0}
	n2 := action.Notification{ID: "n2", ActionID: "an", Channel: "key-two", Position: -1, Event: "approval_requested", Payload: []byte(`{}`), NextAt: t0.Add(time.Hour)}
	if err := commitChanges(ctx, s, &action.Change{Action: a, Notify: []action.Notification{n1, n2}}); err != nil {
		t.Fatal(err)
	}
	claim := func(at, until time.Duration) []action.Notification {
		t.Helper()
		due, err := s.ClaimNotifications(ctx, t0.Add(at), t0.Add(until), 10)
		if err != nil {
			t.Fatal(err)
		}
		return due
	}
	due := claim(time.Minute, 10*time.Minute)
	if len(due) != 1 || due[0].ID != "n1" || string(due[0].Payload) != "{}" || due[0].Channel != "key-one" || due[0].Position != -1 {
		t.Fatalf("due: %+v", due)
	}
	// Claimed: nobody else gets it until the claim runs out (its deliverer
	// stopped before recording the attempt).
	if again := claim(2*time.Minute, 20*time.Minute); len(again) != 0 {
		t.Errorf("claimed twice: %+v", again)
	}
	if again := claim(10*time.Minute, 20*time.Minute); len(again) != 1 || again[0].ID != "n1" {
		t.Errorf("after the claim ran out: %+v", again)
	}
	due[0].Attempts, due[0].LastError, due[0].NextAt = 1, "boom", t0.Add(2*time.Hour)
	if err := s.UpdateNotification(ctx, due[0]); err != nil {
		t.Fatal(err)
	}
	due = claim(90*time.Minute, 100*time.Minute)
	if len(due) != 1 || due[0].ID != "n2" || due[0].Channel != "key-two" {
		t.Errorf("rescheduled: %+v", due)
	}
	if err := s.DeleteNotification(ctx, due[0].ID); err != nil { // delivered
		t.Fatal(err)
	}
	// Deleted for good: not due however late it is.
	due = claim(200*365*24*time.Hour, 0) // and due again at once
	if len(due) != 1 || due[0].ID != "n1" || due[0].Attempts != 1 || due[0].LastError != "boom" {
		t.Errorf("after delivery: %+v", due)
	}

	// Concurrent deliverers take disjoint sets.
	b := newAction("bn", "bot", "ops.x", agentg8.StatePendingApproval, t0)
	var many []action.Notification
	for i := 0; i < 20; i++ {
		many = append(many, action.Notification{ID: fmt.Sprintf("m%02d", i), ActionID: "bn", Channel: "k", Position: -1, Event: "e", Payload: []byte(`{}`), NextAt: t0.Add(5 * time.Hour)})
	}
	if err := commitChanges(ctx, s, &action.Change{Action: b, Notify: many}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := s.ClaimNotifications(ctx, t0.Add(6*time.Hour), t0.Add(7*time.Hour), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, n := range got {
					seen[n.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 21 { // the 20, and n1 (due again at 2h)
		t.Errorf("claimed %d distinct notifications, want 21", len(seen))
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s claimed %d times", id, c)
		}
	}
}

func testSecrets(t *testing.T, s Store) {
	ctx := context.Background()
	key := make([]byte, 32)
	box, err := credential.NewSecretBox(s, key, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Set(ctx, "crm.key", "first-value-123"); err != nil {
		t.Fatal(err)
	}
	if err := box.Set(ctx, "crm.key", "second-value-456"); err != nil {
		t.Fatal(err)
	}
	box.Set(ctx, "b", "other-value-789")
	if v, err := box.Get(ctx, "crm.key"); err != nil || v != "second-value-456" {
		t.Errorf("get: %q %v", v, err)
	}
	raw, _ := s.GetSecret(ctx, "crm.key")
	if strings.Contains(string(raw.Ciphertext), "second-value") {
		t.Error("secret stored in clear")
	}
	// A ciphertext moved to another name does not open.
	s.PutSecret(ctx, credential.SecretRecord{Name: "b", Nonce: raw.Nonce, Ciphertext: raw.Ciphertext, UpdatedAt: t0})
	if _, err := box.Get(ctx, "b"); err == nil {
		t.Error("moved ciphertext opened")
	}
	other, _ := credential.NewSecretBox(s, append([]byte{1}, key[1:]...), nil)
	if _, err := other.Get(ctx, "crm.key"); err == nil {
		t.Error("opened with the wrong key")
	}
	list, err := box.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "b" || list[1].Ciphertext != nil || !list[1].UpdatedAt.Equal(t0) {
		t.Errorf("list: %+v %v", list, err)
	}
	if err := box.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := box.Delete(ctx, "b"); !errors.Is(err, credential.ErrNoSecret) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := box.Get(ctx, "b"); err == nil {
		t.Error("deleted secret still readable")
	}
}

// testWriters appends from several logs at once, as replicas do, and checks
// the result is one verifiable log.
func testWriters(t *testing.T, s Store) {
	ctx := context.Background()
	key, err := audit.LoadOrCreateKey(t.TempDir() + "/audit.key")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		l := audit.Open(s, key, audit.Options{})
		defer l.Close()
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					if err := l.Append(ctx, &agentg8.AuditEvent{Type: "x", ActionID: fmt.Sprintf("w%d", w)}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	rep, err := audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || rep.Records != 300 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// recordsFrom notes the earliest positions a verifier read records and
// checkpoints after.
type recordsFrom struct {
	audit.Reader
	after, cpsAfter int64
}

func (r *recordsFrom) ReadAuditRecords(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	r.after = min(r.after, after)
	return r.Reader.ReadAuditRecords(ctx, after, limit)
}

func (r *recordsFrom) AuditCheckpoints(ctx context.Context, after int64, limit int) ([][]byte, error) {
	r.cpsAfter = min(r.cpsAfter, after)
	return r.Reader.AuditCheckpoints(ctx, after, limit)
}

// testVerifySince checks the part of a log after a trusted checkpoint:
// only the records after it are read; a trusted checkpoint the log does
// not extend (another history signed with the key), one larger than the
// log, or one signed with another key is refused.
func testVerifySince(t *testing.T, s Store) {
	ctx := context.Background()
	key, err := audit.LoadOrCreateKey(t.TempDir() + "/audit.key")
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(n int) {
		t.Helper()
		l := audit.Open(s, key, audit.Options{})
		defer l.Close() // seals what it appended
		for i := 0; i < n; i++ {
			if err := l.Append(ctx, &agentg8.AuditEvent{Type: "x", ActionID: fmt.Sprintf("v%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sign := func(k *audit.Key, n int64, h tlog.Hash) []byte {
		t.Helper()
		b, err := note.Sign(&note.Note{Text: audit.FormatTree(tlog.Tree{N: n, Hash: h})}, k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	appendN(40)
	trusted, err := s.LatestAuditCheckpoint(ctx)
	if tt, perr := audit.ParseCheckpoint(trusted, key.VerifierKey); err != nil || perr != nil || tt.N != 40 {
		t.Fatalf("checkpoint after 40 records: %+v %v %v", tt, err, perr)
	}
	appendN(25)
	r := &recordsFrom{Reader: s, after: math.MaxInt64, cpsAfter: math.MaxInt64}
	rep, err := audit.VerifySince(ctx, r, key.VerifierKey, trusted, nil)
	// Read: the last record the trusted checkpoint covers (it must still be
	// there) and those after it; the checkpoints after it.
	if err != nil || rep.From != 40 || rep.Records != 65 || r.after != 38 || r.cpsAfter != 40 {
		t.Fatalf("since 40: %+v %v (read records after %d, checkpoints after %d)", rep, err, r.after, r.cpsAfter)
	}
	for after, want := range map[int64]bool{-1: true, 40: false} { // holds size 40?
		cps, err := s.AuditCheckpoints(ctx, after, 1000)
		found := false
		for _, cp := range cps {
			tt, perr := audit.ParseCheckpoint(cp, key.VerifierKey)
			if perr != nil || tt.N <= after {
				t.Errorf("checkpoints after %d: one of size %d (%v)", after, tt.N, perr)
			}
			found = found || tt.N == 40
		}
		if err != nil || found != want || len(cps) == 0 {
			t.Errorf("checkpoints after %d: %d, size 40 among them %v, err %v", after, len(cps), found, err)
		}
	}
	full, err := audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || full.Tree != rep.Tree {
		t.Fatalf("full verify %+v %v, incremental %+v", full, err, rep.Tree)
	}
	latest, _ := s.LatestAuditCheckpoint(ctx)
	if rep, err := audit.VerifySince(ctx, s, key.VerifierKey, latest, nil); err != nil || rep.Records != 65 || rep.From != 65 {
		t.Errorf("since the latest: %+v %v", rep, err)
	}
	var p *audit.Problem
	if _, err := audit.VerifySince(ctx, s, key.VerifierKey, sign(key, 40, tlog.Hash{1}), nil); !errors.As(err, &p) || !strings.Contains(p.Msg, "does not extend") {
		t.Errorf("another history of 40 records: %v", err)
	}
	if _, err := audit.VerifySince(ctx, s, key.VerifierKey, sign(key, 1000, tlog.Hash{2}), nil); !errors.As(err, &p) {
		t.Errorf("a checkpoint larger than the log: %v", err)
	}
	other, err := audit.LoadOrCreateKey(t.TempDir() + "/other.key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.VerifySince(ctx, s, key.VerifierKey, sign(other, 40, full.Tree.Hash), nil); !errors.As(err, &p) || !strings.Contains(p.Msg, "trusted checkpoint") {
		t.Errorf("signed with another key: %v", err)
	}
}

func testLeases(t *testing.T, s Store) {
	ctx := context.Background()
	a := newAction("act_l", "bot", "ops.x", agentg8.StateExecuting, t0)
	// Real time (the store's clock): the check between the first expiry and
	// the renewed one has 0.4 s either side for a loaded machine's
	// scheduling (a 100 ms margin once failed in CI).
	lease := action.Lease{Owner: "r1", TTL: 2 * time.Second}
	if err := commitChanges(ctx, s, &action.Change{Action: a, Lease: &lease}); err != nil {
		t.Fatal(err)
	}
	if ex, _ := s.ExpiredLeases(ctx); len(ex) != 0 {
		t.Errorf("fresh lease expired: %v", ids(ex))
	}
	if ok, err := s.RenewLease(ctx, "act_l", action.Lease{Owner: "r2", TTL: time.Second}); ok || err != nil {
		t.Errorf("another owner renewed: %v %v", ok, err)
	}
	time.Sleep(time.Second)
	if ok, err := s.RenewLease(ctx, "act_l", lease); !ok || err != nil {
		t.Errorf("owner renewal: %v %v", ok, err)
	}
	time.Sleep(1400 * time.Millisecond) // past the first expiry, within the renewed one
	if ex, _ := s.ExpiredLeases(ctx); len(ex) != 0 {
		t.Errorf("renewed lease expired")
	}
	time.Sleep(time.Second)
	ex, err := s.ExpiredLeases(ctx)
	if err != nil || len(ex) != 1 || ex[0].ID != "act_l" {
		t.Fatalf("expired: %v %v", ids(ex), err)
	}
	// An update that requires the lease's owner (settling an execution
	// whose record was not confirmed) is refused for anyone else — also
	// in a batch of several updates, which a store may write as one
	// statement — and the batch with it; it applies for the owner.
	var others []any
	for i := range 4 {
		o := newAction(fmt.Sprintf("act_l%d", i), "bot", "ops.x", agentg8.StateExecuting, t0)
		if err := s.CreateAction(ctx, o); err != nil {
			t.Fatal(err)
		}
		o.Status = agentg8.StateSucceeded
		others = append(others, &action.Change{Action: o, From: agentg8.StateExecuting})
	}
	settled := *ex[0]
	settled.Status = agentg8.StateFailed
	err = commitChanges(ctx, s, append(others, &action.Change{Action: &settled, From: agentg8.StateExecuting, Owner: "r2"})...)
	var ce *audit.ChangeError
	if !errors.As(err, &ce) || ce.Index != 4 || !errors.Is(err, action.ErrStateConflict) {
		t.Fatalf("another owner's settling: want ChangeError{4, ErrStateConflict}, got %v", err)
	}
	if got, _ := s.GetAction(ctx, "act_l"); got.Status != agentg8.StateExecuting {
		t.Errorf("refused settling wrote %s", got.Status)
	}
	if err := commitChanges(ctx, s, append(others, &action.Change{Action: &settled, From: agentg8.StateExecuting, Owner: "r1"})...); err != nil {
		t.Fatalf("owner's settling: %v", err)
	}
	if got, _ := s.GetAction(ctx, "act_l"); got.Status != agentg8.StateFailed {
		t.Errorf("owner's settling: %s", got.Status)
	}
	// A write without a lease (the outcome) clears it.
	if ex, _ := s.ExpiredLeases(ctx); len(ex) != 0 {
		t.Errorf("finished action still listed: %v", ids(ex))
	}
	// Without a lease, no owner is found.
	settled.Status = agentg8.StateSucceeded
	if err := commitChanges(ctx, s, &action.Change{Action: &settled, From: agentg8.StateFailed, Owner: "r1"}); !errors.Is(err, action.ErrStateConflict) {
		t.Errorf("settling an action without a lease: %v", err)
	}
}

// CheckReleasedClaimKept checks, after a migration, that the claim of
// agent and key given up (dated 0) under an older schema names actionID,
// is kept by pruning a day back and reads as abandoned (dated an hour back).
func CheckReleasedClaimKept(t *testing.T, s Store, agent, key, actionID string) {
	t.Helper()
	ctx := context.Background()
	if n, err := s.PruneIdempotency(ctx, time.Now().Add(-24*time.Hour), 100); err != nil || n != 0 {
		t.Errorf("pruning a day back deleted %d (%v); want the released claim kept", n, err)
	}
	prev, err := s.ClaimIdempotency(ctx, action.IdempotencyRecord{Agent: agent, Key: key, PayloadHash: "h", ActionID: "act_new", CreatedAt: time.Now()})
	if err != nil || prev == nil || prev.ActionID != actionID {
		t.Fatalf("released claim after migration: %+v %v", prev, err)
	}
	if age := time.Since(prev.CreatedAt); age < 59*time.Minute || age > 2*time.Hour {
		t.Errorf("released claim dated %v back, want an hour", age)
	}
}
