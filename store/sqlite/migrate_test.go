package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/sqlite"
	"github.com/agentg8/agentg8/store/storetest"
)

// v4Store writes the audit log the way schema version 4 did: one row per
// tree hash in audit_hashes.
type v4Store struct{ db *sql.DB }

func (s v4Store) AppendAudit(ctx context.Context, build audit.BuildFunc) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var size int64
	if err := tx.QueryRow(`SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_records`).Scan(&size); err != nil {
		return err
	}
	b, err := build(size, func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			var h []byte
			if err := tx.QueryRow(`SELECT hash FROM audit_hashes WHERE idx = ?`, x).Scan(&h); err != nil {
				return nil, err
			}
			copy(out[i][:], h)
		}
		return out, nil
	})
	if err != nil {
		return err
	}
	for _, r := range b.Records {
		if _, err := tx.Exec(`INSERT INTO audit_records (seq, action_id, data) VALUES (?, ?, ?)`, r.Seq, r.ActionID, r.Data); err != nil {
			return err
		}
	}
	for _, h := range b.Hashes {
		if _, err := tx.Exec(`INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`, h.Index, h.Hash[:]); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(`INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)`, b.Size, b.Checkpoint); err != nil {
		return err
	}
	return tx.Commit()
}

func (s v4Store) LatestAuditCheckpoint(ctx context.Context) ([]byte, error) {
	var n []byte
	err := s.db.QueryRow(`SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&n)
	return n, err
}

// dbAtVersion creates the SQLite database p with the migrations up to
// version applied, as an older AgentG8 left it.
func dbAtVersion(t *testing.T, p string, version int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+p+"?_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= version; v++ {
		files, _ := filepath.Glob(fmt.Sprintf("migrations/%04d_*.sql", v))
		body, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatal(err)
		}
		db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, v)
	}
	return db
}

// upgradedFrom makes a database at version with setup run in it, and
// opens it as a store (migrating it); it returns the file and the store.
func upgradedFrom(t *testing.T, version int, setup string) (string, *sqlite.Store) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "old.db")
	db := dbAtVersion(t, p, version)
	if _, err := db.Exec(setup); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := sqlite.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return p, st
}

// TestUpgradeKeepsTheAuditLog: a log written under schema version 4 is
// carried into hash runs by migration 5, still verifies, and grows on.
func TestUpgradeKeepsTheAuditLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "old.db")
	db := dbAtVersion(t, p, 4)
	key, err := audit.LoadOrCreateKey(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(st audit.Store, n int) {
		l := audit.Open(st, key, audit.Options{})
		defer l.Close()
		for i := 0; i < n; i++ {
			if err := l.Append(ctx, &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: fmt.Sprintf("act_%d", i)},
				&agentg8.AuditEvent{Type: agentg8.EventDenied, ActionID: fmt.Sprintf("act_%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(v4Store{db}, 37)
	db.Close()

	st, err := sqlite.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := audit.Verify(ctx, st, key.VerifierKey, nil)
	if err != nil || rep.Records != 74 {
		t.Fatalf("after upgrade: %+v %v", rep, err)
	}
	appendN(st, 21) // reads hashes of the old layout to extend the tree
	rep, err = audit.Verify(ctx, st, key.VerifierKey, nil)
	if err != nil || rep.Records != 116 {
		t.Fatalf("after more appends: %+v %v", rep, err)
	}
	idx := []int64{0, 1, tlog.StoredHashIndex(0, 73), tlog.StoredHashIndex(0, 115)}
	if _, err := st.ReadAuditHashes(ctx, idx); err != nil {
		t.Fatalf("hashes across both layouts: %v", err)
	}
}

// TestUpgradeKeepsQueuedNotifications: a notification queued under schema 6
// (its channel by position) comes out of migration 7 with its position and
// no channel key, for the worker to map.
func TestUpgradeKeepsQueuedNotifications(t *testing.T) {
	ctx := context.Background()
	// n1 is queued; n2 was delivered and n3 given up, which versions
	// before 8 kept (with their payloads) and 8 deletes.
	p, st := upgradedFrom(t, 6, `INSERT INTO notifications (id, action_id, channel, event, payload, attempts, next_at, delivered, last_error) VALUES
		('n1', 'a1', 1, 'approval_requested', X'7B7D', 2, 0, 0, ''),
		('n2', 'a1', 0, 'approval_requested', X'7B7D', 1, 0, 1, ''),
		('n3', 'a1', 0, 'approval_requested', X'7B7D', 12, 9000000000000000000, 0, 'boom')`)
	due, err := st.ClaimNotifications(ctx, time.Unix(1, 0), time.Unix(2, 0), 10)
	if err != nil || len(due) != 1 || due[0].Channel != "" || due[0].Position != 1 || due[0].Attempts != 2 {
		t.Fatalf("after migration: %+v %v", due, err)
	}
	st.Close()
	raw, err := sql.Open("sqlite", "file:"+p)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var ids string
	if err := raw.QueryRow(`SELECT group_concat(id) FROM notifications`).Scan(&ids); err != nil || ids != "n1" {
		t.Errorf("notifications kept: %q %v, want only the queued n1", ids, err)
	}
}

// TestUpgradeKeepsReleasedClaims: a claim given up before version 10
// (dated 0) is dated an hour back by it, so pruning keeps it for the
// retention like any other record, and it still reads as abandoned.
func TestUpgradeKeepsReleasedClaims(t *testing.T) {
	_, st := upgradedFrom(t, 9, `INSERT INTO idempotency (agent, key, payload_hash, action_id, created_at) VALUES ('bot', 'k', 'h', 'act_1', 0)`)
	storetest.CheckReleasedClaimKept(t, st, "bot", "k", "act_1")
}
