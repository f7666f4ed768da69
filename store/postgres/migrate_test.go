package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/storetest"
)

// v2Store seals the way schema version 2 did: one row per tree hash in
// audit_hashes. Appends are the same in both versions.
type v2Store struct{ *Store }

func (s v2Store) SealAudit(ctx context.Context, limit int, _ time.Duration, seal audit.SealFunc) (int, bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, false, err
	}
	defer tx.Rollback(ctx)
	var sealed int64
	if err := tx.QueryRow(ctx, `SELECT sealed FROM audit_seal WHERE id = 1 FOR UPDATE`).Scan(&sealed); err != nil {
		return 0, false, err
	}
	recs, err := records(tx.Query(ctx, `SELECT seq, action_id, data FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2`, sealed, limit))
	if err != nil || len(recs) == 0 {
		return 0, err == nil, err
	}
	hashes, cp, err := seal(sealed, recs, func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			var h []byte
			if err := tx.QueryRow(ctx, `SELECT hash FROM audit_hashes WHERE idx = $1`, x).Scan(&h); err != nil {
				return nil, fmt.Errorf("hash %d: %w", x, err)
			}
			copy(out[i][:], h)
		}
		return out, nil
	})
	if err != nil {
		return 0, false, err
	}
	for _, h := range hashes {
		if _, err := tx.Exec(ctx, `INSERT INTO audit_hashes (idx, hash) VALUES ($1, $2)`, h.Index, h.Hash[:]); err != nil {
			return 0, false, err
		}
	}
	size := sealed + int64(len(recs))
	if _, err := tx.Exec(ctx, `INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2)`, size, cp); err != nil {
		return 0, false, err
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_seal SET sealed = $1 WHERE id = 1`, size); err != nil {
		return 0, false, err
	}
	return len(recs), true, tx.Commit(ctx)
}

func appendEvents(t *testing.T, l *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.Append(context.Background(), &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: fmt.Sprintf("act_%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// storeAtVersion is a store on a new database with the migrations up to
// version applied, as an older AgentG8 left it, and the database's URL.
func storeAtVersion(t *testing.T, version int) (string, *Store) {
	t.Helper()
	url := storetest.PostgresDB(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	old := &Store{pool: pool}
	t.Cleanup(func() { old.Close() })
	if err := old.migrate(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return url, old
}

// TestUpgradeKeepsTheAuditLog: a log sealed under schema version 2 (a row
// per hash) is carried into hash runs by migration 3, still verifies, and
// grows on; a second run of the migrations changes nothing.
func TestUpgradeKeepsTheAuditLog(t *testing.T) {
	ctx := context.Background()
	url, old := storeAtVersion(t, 2)
	pool := old.pool
	key, err := audit.LoadOrCreateKey(t.TempDir() + "/audit.key")
	if err != nil {
		t.Fatal(err)
	}
	l := audit.Open(v2Store{old}, key, audit.Options{})
	appendEvents(t, l, 0, 21) // several seals: runs of one and of many
	l.Close()
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_hashes`).Scan(&rows); err != nil || rows < 21 {
		t.Fatalf("version 2 log: %d hash rows, %v", rows, err)
	}

	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || rep.Records != 21 {
		t.Fatalf("after migration: %+v %v", rep, err)
	}
	var runs int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_hash_runs`).Scan(&runs); err != nil || runs != 1 {
		t.Fatalf("migrated hashes: %d runs, %v", runs, err)
	}
	l = audit.Open(s, key, audit.Options{})
	appendEvents(t, l, 21, 9)
	l.Close()
	rep, err = audit.Verify(ctx, s, key.VerifierKey, nil)
	if err != nil || rep.Records != 30 {
		t.Fatalf("after appending on: %+v %v", rep, err)
	}
}

// TestUpgradeKeepsQueuedNotifications: a notification queued under schema 6
// (its channel by position) comes out of migration 7 with its position and
// no channel key, for the worker to map; new ones carry their key.
func TestUpgradeKeepsQueuedNotifications(t *testing.T) {
	ctx := context.Background()
	url, old := storeAtVersion(t, 6)
	// n1 is queued; n2 was delivered and n3 given up, which versions
	// before 8 kept (with their payloads) and 8 deletes.
	if _, err := old.pool.Exec(ctx, `INSERT INTO notifications (id, action_id, channel, event, payload, attempts, next_at, delivered) VALUES
		('n1', 'a1', 1, 'approval_requested', '{}', 2, 0, false),
		('n2', 'a1', 0, 'approval_requested', '{}', 1, 0, true),
		('n3', 'a1', 0, 'approval_requested', '{}', 12, 9000000000000000000, false)`); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	due, err := s.ClaimNotifications(ctx, time.Unix(1, 0), time.Unix(2, 0), 10)
	if err != nil || len(due) != 1 || due[0].Channel != "" || due[0].Position != 1 || due[0].Attempts != 2 {
		t.Fatalf("after migration: %+v %v", due, err)
	}
	var ids string
	if err := s.pool.QueryRow(ctx, `SELECT string_agg(id, ',') FROM notifications`).Scan(&ids); err != nil || ids != "n1" {
		t.Errorf("notifications kept: %q %v, want only the queued n1", ids, err)
	}
}

// TestUpgradeKeepsReleasedClaims: a claim given up before version 11
// (dated 0) is dated an hour back by it, so pruning keeps it for the
// retention like any other record, and it still reads as abandoned.
func TestUpgradeKeepsReleasedClaims(t *testing.T) {
	ctx := context.Background()
	url, old := storeAtVersion(t, 10)
	if _, err := old.pool.Exec(ctx, `INSERT INTO idempotency (agent, key, payload_hash, action_id, created_at) VALUES ('bot', 'k', 'h', 'act_1', 0)`); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckReleasedClaimKept(t, s, "bot", "k", "act_1")
}
