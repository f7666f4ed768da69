// Package sqlite is the embedded store: modernc SQLite in WAL mode with
// synchronous=FULL, embedded migrations, and SQL written for this dialect.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/credential"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the SQLite implementation of the action and audit stores.
type Store struct {
	db   *sql.DB
	path string
	own  *os.File // Own's lock, held until Close
	// Statements of the write path, prepared once: parsing SQL per
	// statement cost the audit writer (the single writer every action
	// waits on) about a sixth of its time.
	st struct {
		size, record, hashRun, readRun, checkpoint, insert, update *sql.Stmt
	}
}

var (
	_ action.Store = (*Store)(nil)
	_ audit.Store  = (*Store)(nil)
	_ audit.Reader = (*Store)(nil)
)

// Open opens (creating if needed) the database at path and migrates it.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	s := &Store{db: db, path: path}
	if err := s.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.st.size, `SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_records`},
		{&s.st.record, `INSERT INTO audit_records (seq, action_id, data) VALUES (?, ?, ?)`},
		{&s.st.hashRun, `INSERT INTO audit_hash_runs (start, hashes) VALUES (?, ?)`},
		{&s.st.readRun, `SELECT start, hashes FROM audit_hash_runs WHERE start <= ? ORDER BY start DESC LIMIT 1`},
		{&s.st.checkpoint, `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)`},
		{&s.st.insert, `INSERT INTO actions (id, principal, task, status, created_at, updated_at, data, version, approval_id, request_hash, lease_owner, lease_until)
			VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)`},
		{&s.st.update, `UPDATE actions SET status = ?, updated_at = ?, data = ?, version = version + 1, approval_id = ?, request_hash = ?, lease_owner = ?, lease_until = ?
			WHERE id = ? AND status = ? AND version = ? AND (?11 IS NULL OR lease_owner = ?11)`},
	} {
		st, err := s.db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		*p.dst = st
	}
	return nil
}

// Close closes the database (and ends Own's claim).
func (s *Store) Close() error {
	if s.own != nil {
		s.own.Close()
	}
	return s.db.Close()
}

// ErrOwned is Own's answer when another process serves the database.
var ErrOwned = errors.New("another agentg8 serve is using this SQLite database")

// Own claims the database for this process until Close: a gateway
// (serve) decides alone what is executing — at start it marks every action
// left executing outcome_unknown — so two must never serve one file.
// Other commands (audit verify, secrets set) do not claim it. The claim is
// an exclusive flock on path + ".lock", which the kernel drops if the
// process dies.
func (s *Store) Own() error {
	f, err := os.OpenFile(s.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("claim sqlite %s: %w", s.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w (%s, locked by %s.lock): one process serves a SQLite store; for several replicas use PostgreSQL", ErrOwned, s.path, s.path)
		}
		return fmt.Errorf("claim sqlite %s: %w", s.path, err)
	}
	s.own = f
	return nil
}

// Ping checks the database is reachable (readiness).
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Migrate applies embedded migrations not yet applied.
func (s *Store) Migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", n)
		}
		body, err := migrations.ReadFile(n)
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var done int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, v).Scan(&done); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate: %w", err)
		}
		if done > 0 {
			tx.Rollback()
			continue
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, time.Now().Unix()); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

// CreateAction inserts a new action.
func (s *Store) CreateAction(ctx context.Context, a *agentg8.Action) error {
	return insertAction(ctx, s.st.insert, &action.Change{Action: a})
}

// leaseCols are the lease columns' values: NULLs without a lease.
func leaseCols(l *action.Lease) (owner sql.NullString, until sql.NullInt64) {
	if l != nil {
		owner = sql.NullString{String: l.Owner, Valid: true}
		until = sql.NullInt64{Int64: time.Now().Add(l.TTL).UnixNano(), Valid: true}
	}
	return owner, until
}

func insertAction(ctx context.Context, st *sql.Stmt, ch *action.Change) error {
	data, err := ch.Encode()
	if err != nil {
		return err
	}
	a := ch.Action
	aprID, hash := approvalKeys(a)
	owner, until := leaseCols(ch.Lease)
	_, err = st.ExecContext(ctx, a.ID, a.Principal, a.Task, string(a.Status), a.CreatedAt.UnixNano(), a.UpdatedAt.UnixNano(), data, aprID, hash, owner, until)
	if err != nil {
		if strings.Contains(err.Error(), "actions.request_hash") {
			return action.ErrDuplicatePending
		}
		if strings.Contains(err.Error(), "actions.id") {
			return action.ErrActionExists
		}
		return fmt.Errorf("insert action: %w", err)
	}
	return nil
}

func approvalKeys(a *agentg8.Action) (id, hash sql.NullString) {
	if a.Approval != nil {
		id = sql.NullString{String: a.Approval.ID, Valid: true}
		hash = sql.NullString{String: a.Approval.RequestHash, Valid: true}
	}
	return id, hash
}

const actionCols = `data, version`

func decodeAction(data []byte, version int64) (*agentg8.Action, error) {
	var a agentg8.Action
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("decode action: %w", err)
	}
	a.Version = version
	return &a, nil
}

func (s *Store) getAction(ctx context.Context, query string, arg any) (*agentg8.Action, error) {
	var data []byte
	var version int64
	err := s.db.QueryRowContext(ctx, query, arg).Scan(&data, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, action.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get action: %w", err)
	}
	return decodeAction(data, version)
}

// GetAction returns an action or action.ErrNotFound.
func (s *Store) GetAction(ctx context.Context, id string) (*agentg8.Action, error) {
	return s.getAction(ctx, `SELECT `+actionCols+` FROM actions WHERE id = ?`, id)
}

// GetActionByApproval returns the action an approval belongs to.
func (s *Store) GetActionByApproval(ctx context.Context, approvalID string) (*agentg8.Action, error) {
	return s.getAction(ctx, `SELECT `+actionCols+` FROM actions WHERE approval_id = ?`, approvalID)
}

// PendingByHash returns the pending action with this request hash.
func (s *Store) PendingByHash(ctx context.Context, requestHash string) (*agentg8.Action, error) {
	return s.getAction(ctx, `SELECT `+actionCols+` FROM actions WHERE request_hash = ? AND status = 'pending_approval'`, requestHash)
}

// CountPending counts an agent's pending approvals.
func (s *Store) CountPending(ctx context.Context, principal string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, countPendingSQL, principal).Scan(&n)
	return n, err
}

const countPendingSQL = `SELECT count(*) FROM actions WHERE principal = ? AND status = 'pending_approval'`

// ListActions lists actions newest first.
func (s *Store) ListActions(ctx context.Context, f action.Filter) ([]*agentg8.Action, error) {
	before := f.Before
	if before.IsZero() {
		before = time.Unix(0, 1<<62)
	}
	// Only the filters given go into the SQL, so that SQLite can pick the
	// index that serves them (principal, created_at) for an agent's list.
	where, args := []string{`created_at < ?`}, []any{before.UnixNano()}
	for _, c := range []struct{ col, val string }{{"principal", f.Principal}, {"task", f.Task}, {"status", string(f.Status)}} {
		if c.val != "" {
			where, args = append(where, c.col+` = ?`), append(args, c.val)
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+actionCols+` FROM actions WHERE `+strings.Join(where, ` AND `)+`
		ORDER BY created_at DESC, id DESC LIMIT ?`, append(args, f.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", err)
	}
	return scanActions(rows)
}

func scanActions(rows *sql.Rows) ([]*agentg8.Action, error) {
	defer rows.Close()
	out := []*agentg8.Action{}
	for rows.Next() {
		var data []byte
		var version int64
		if err := rows.Scan(&data, &version); err != nil {
			return nil, err
		}
		a, err := decodeAction(data, version)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ActionsInState lists every action in state st, oldest first. The states
// the worker scans are written into the SQL, so that SQLite can use the
// partial indexes on them (it cannot with a bound parameter).
func (s *Store) ActionsInState(ctx context.Context, st agentg8.State) ([]*agentg8.Action, error) {
	where, args := `status = ?`, []any{string(st)}
	switch st {
	case agentg8.StatePendingApproval, agentg8.StateApproved, agentg8.StateExecuting:
		where, args = `status = '`+string(st)+`'`, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+actionCols+` FROM actions WHERE `+where+` ORDER BY created_at`, args...)
	if err != nil {
		return nil, fmt.Errorf("actions in state: %w", err)
	}
	return scanActions(rows)
}

// UpdateAction is a compare-and-set on the action's status. It clears any
// execution lease, as a Change without one does.
func (s *Store) UpdateAction(ctx context.Context, a *agentg8.Action, from agentg8.State) error {
	return updateAction(ctx, s.st.update, &action.Change{Action: a, From: from})
}

func updateAction(ctx context.Context, st *sql.Stmt, ch *action.Change) error {
	data, err := ch.Encode()
	if err != nil {
		return err
	}
	a, from := ch.Action, ch.From
	aprID, hash := approvalKeys(a)
	owner, until := leaseCols(ch.Lease)
	held := sql.NullString{String: ch.Owner, Valid: ch.Owner != ""}
	res, err := st.ExecContext(ctx, string(a.Status), a.UpdatedAt.UnixNano(), data, aprID, hash, owner, until, a.ID, string(from), a.Version, held)
	if err != nil {
		if strings.Contains(err.Error(), "actions.request_hash") {
			return action.ErrDuplicatePending
		}
		return fmt.Errorf("update action: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return action.ErrStateConflict
	}
	return nil
}

// ClaimIdempotency inserts the claim or returns the existing record.
func (s *Store) ClaimIdempotency(ctx context.Context, rec action.IdempotencyRecord) (*action.IdempotencyRecord, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO idempotency (agent, key, payload_hash, action_id, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		rec.Agent, rec.Key, rec.PayloadHash, rec.ActionID, rec.CreatedAt.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("claim idempotency: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil, nil
	}
	var prev action.IdempotencyRecord
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT agent, key, payload_hash, action_id, result, created_at FROM idempotency WHERE agent = ? AND key = ?`,
		rec.Agent, rec.Key).Scan(&prev.Agent, &prev.Key, &prev.PayloadHash, &prev.ActionID, &prev.Result, &created)
	if err != nil {
		return nil, fmt.Errorf("read idempotency: %w", err)
	}
	prev.CreatedAt = time.Unix(0, created).UTC()
	return &prev, nil
}

// CompleteIdempotency stores the answer for a claim.
func (s *Store) CompleteIdempotency(ctx context.Context, agent, key string, result []byte, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE idempotency SET result = ?, created_at = ? WHERE agent = ? AND key = ?`, result, at.UnixNano(), agent, key)
	return err
}

// ReleaseIdempotency marks an unanswered claim abandoned, dated at (it keeps
// its action ID), or deletes one made before claims had action IDs.
func (s *Store) ReleaseIdempotency(ctx context.Context, agent, key string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE idempotency SET created_at = ? WHERE agent = ? AND key = ? AND result IS NULL AND action_id <> ''`, at.UnixNano(), agent, key); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM idempotency WHERE agent = ? AND key = ? AND result IS NULL AND action_id = ''`, agent, key)
	return err
}

// PruneIdempotency deletes up to limit records dated before before.
func (s *Store) PruneIdempotency(ctx context.Context, before time.Time, limit int) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE created_at < ? LIMIT ?)`, before.UnixNano(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// AuditSize is the number of audit records.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_records`).Scan(&n)
	return n, err
}

// ReadAuditHashes returns stored tree hashes by index.
func (s *Store) ReadAuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, s.st.readRun, indexes)
}

// readHashes finds each index in the run that holds it.
func readHashes(ctx context.Context, st *sql.Stmt, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var start int64
	var run []byte
	for i, x := range indexes {
		if len(run) == 0 || x < start || x >= start+int64(len(run)/tlog.HashSize) {
			if err := st.QueryRowContext(ctx, x).Scan(&start, &run); err != nil {
				return nil, fmt.Errorf("audit hash %d: %w", x, err)
			}
			if len(run)%tlog.HashSize != 0 {
				return nil, fmt.Errorf("audit hash run at %d: bad length", start)
			}
		}
		off := (x - start) * tlog.HashSize
		if off < 0 || off+tlog.HashSize > int64(len(run)) {
			return nil, fmt.Errorf("audit hash %d: not stored", x)
		}
		copy(out[i][:], run[off:])
	}
	return out, nil
}

// AppendAudit builds and writes a batch under SQLite's write lock.
func (s *Store) AppendAudit(ctx context.Context, build audit.BuildFunc) (err error) {
	// A transaction SQLite did not commit is rolled back; there is no
	// connection whose answer could be lost.
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w: %w", audit.ErrNotWritten, err)
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	// A cancellable context makes the driver start a watcher goroutine and a
	// progress handler for every statement; a batch runs dozens. SQLite's
	// busy_timeout bounds the wait for the write lock, and a statement
	// cannot be interrupted inside a write or fsync anyway.
	ctx = context.WithoutCancel(ctx)
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var size int64
	if err := tx.StmtContext(ctx, s.st.size).QueryRowContext(ctx).Scan(&size); err != nil {
		return err
	}
	readRun := tx.StmtContext(ctx, s.st.readRun)
	read := func(idx []int64) ([]tlog.Hash, error) { return readHashes(ctx, readRun, idx) }
	b, err := build(size, read)
	if err != nil {
		return err
	}
	rec := tx.StmtContext(ctx, s.st.record)
	for _, r := range b.Records {
		if _, err := rec.ExecContext(ctx, r.Seq, r.ActionID, r.Data); err != nil {
			return fmt.Errorf("insert audit record: %w", err)
		}
	}
	hashRun := tx.StmtContext(ctx, s.st.hashRun)
	starts, runs := audit.HashRuns(b.Hashes)
	for i := range starts {
		if _, err := hashRun.ExecContext(ctx, starts[i], runs[i]); err != nil {
			return fmt.Errorf("insert audit hashes: %w", err)
		}
	}
	if _, err := tx.StmtContext(ctx, s.st.checkpoint).ExecContext(ctx, b.Size, b.Checkpoint); err != nil {
		return fmt.Errorf("insert checkpoint: %w", err)
	}
	var insert, update *sql.Stmt
	for i, c := range b.Changes {
		if c == nil {
			continue
		}
		ch, ok := c.(*action.Change)
		if !ok {
			return &audit.ChangeError{Index: i, Err: fmt.Errorf("unsupported change %T", c)}
		}
		if ch.From == "" {
			if insert == nil {
				insert = tx.StmtContext(ctx, s.st.insert)
			}
			err = underPendingBound(ctx, tx, ch)
			if err == nil {
				err = insertAction(ctx, insert, ch)
			}
		} else {
			if update == nil {
				update = tx.StmtContext(ctx, s.st.update)
			}
			err = updateAction(ctx, update, ch)
		}
		for _, n := range ch.Notify {
			if err == nil {
				err = insertNotification(ctx, tx, n)
			}
		}
		if err != nil {
			return &audit.ChangeError{Index: i, Err: err}
		}
	}
	return tx.Commit()
}

// underPendingBound refuses a new pending action whose principal has
// Change.MaxPending pending already; counted in the batch's transaction,
// which holds the database's one write lock.
func underPendingBound(ctx context.Context, tx *sql.Tx, ch *action.Change) error {
	if !ch.Bounded() {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, countPendingSQL, ch.Action.Principal).Scan(&n); err != nil {
		return fmt.Errorf("count pending: %w", err)
	}
	if n >= ch.MaxPending {
		return action.ErrTooManyPending
	}
	return nil
}

// execer is what both *sql.DB and *sql.Tx offer.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertNotification(ctx context.Context, db execer, n action.Notification) error {
	_, err := db.ExecContext(ctx, `INSERT INTO notifications (id, action_id, channel_key, channel, event, payload, attempts, next_at, delivered, last_error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '')`, n.ID, n.ActionID, n.Channel, n.Position, n.Event, n.Payload, n.Attempts, n.NextAt.UnixNano())
	if err != nil {
		return fmt.Errorf("queue notification: %w", err)
	}
	return nil
}

// ClaimNotifications takes due notifications, oldest first, moving each
// to until (one process writes SQLite, but the claim keeps the contract).
func (s *Store) ClaimNotifications(ctx context.Context, now, until time.Time, limit int) ([]action.Notification, error) {
	// The worker asks every second: take the write lock only when
	// something is due.
	var due int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM notifications WHERE delivered = 0 AND next_at <= ? LIMIT 1)`, now.UnixNano()).Scan(&due); err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	if due == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, action_id, channel_key, channel, event, payload, attempts, next_at, last_error FROM notifications
		WHERE delivered = 0 AND next_at <= ? ORDER BY next_at LIMIT ?`, now.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	var out []action.Notification
	for rows.Next() {
		var n action.Notification
		var next int64
		if err := rows.Scan(&n.ID, &n.ActionID, &n.Channel, &n.Position, &n.Event, &n.Payload, &n.Attempts, &next, &n.LastError); err != nil {
			rows.Close()
			return nil, err
		}
		n.NextAt = time.Unix(0, next).UTC()
		out = append(out, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, n := range out {
		if _, err := tx.ExecContext(ctx, `UPDATE notifications SET next_at = ? WHERE id = ?`, until.UnixNano(), n.ID); err != nil {
			return nil, fmt.Errorf("claim notifications: %w", err)
		}
	}
	return out, tx.Commit()
}

// UpdateNotification records a failed delivery attempt.
func (s *Store) UpdateNotification(ctx context.Context, n action.Notification) error {
	_, err := s.db.ExecContext(ctx, `UPDATE notifications SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?`,
		n.Attempts, n.NextAt.UnixNano(), n.LastError, n.ID)
	return err
}

// DeleteNotification removes a delivered or given-up notification.
func (s *Store) DeleteNotification(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM notifications WHERE id = ?`, id)
	return err
}

// LatestAuditCheckpoint returns the newest signed checkpoint, or nil.
func (s *Store) LatestAuditCheckpoint(ctx context.Context) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// AuditCheckpoints returns up to limit checkpoints larger than after,
// smallest first.
func (s *Store) AuditCheckpoints(ctx context.Context, after int64, limit int) ([][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT note FROM audit_checkpoints WHERE size > ? ORDER BY size LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// ReadAuditRecords returns records after position after, in stored order.
func (s *Store) ReadAuditRecords(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, action_id, data FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	return scanRecords(rows)
}

// AuditRecordsForAction returns an action's records in order.
func (s *Store) AuditRecordsForAction(ctx context.Context, actionID string, after int64, limit int) ([]audit.Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, action_id, data FROM audit_records WHERE action_id = ? AND seq > ? ORDER BY seq LIMIT ?`, actionID, after, limit)
	if err != nil {
		return nil, err
	}
	return scanRecords(rows)
}

func scanRecords(rows *sql.Rows) ([]audit.Record, error) {
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var r audit.Record
		if err := rows.Scan(&r.Seq, &r.ActionID, &r.Data); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

var _ credential.SecretStore = (*Store)(nil)

// GetSecret returns an encrypted secret.
func (s *Store) GetSecret(ctx context.Context, name string) (*credential.SecretRecord, error) {
	r := credential.SecretRecord{Name: name}
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT nonce, ciphertext, updated_at FROM secrets WHERE name = ?`, name).Scan(&r.Nonce, &r.Ciphertext, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, credential.ErrNoSecret
	}
	if err != nil {
		return nil, err
	}
	r.UpdatedAt = time.Unix(0, at).UTC()
	return &r, nil
}

// PutSecret inserts or replaces an encrypted secret.
func (s *Store) PutSecret(ctx context.Context, r credential.SecretRecord) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`,
		r.Name, r.Nonce, r.Ciphertext, r.UpdatedAt.UnixNano())
	return err
}

// ListSecrets returns every secret, by name.
func (s *Store) ListSecrets(ctx context.Context) ([]credential.SecretRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, updated_at FROM secrets ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []credential.SecretRecord
	for rows.Next() {
		var r credential.SecretRecord
		var at int64
		if err := rows.Scan(&r.Name, &at); err != nil {
			return nil, err
		}
		r.UpdatedAt = time.Unix(0, at).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteSecret removes a secret; false when there was none.
func (s *Store) DeleteSecret(ctx context.Context, name string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE name = ?`, name)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// RenewLease extends an executing action's lease if the owner still holds it.
func (s *Store) RenewLease(ctx context.Context, id string, l action.Lease) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE actions SET lease_until = ? WHERE id = ? AND status = 'executing' AND lease_owner = ?`,
		time.Now().Add(l.TTL).UnixNano(), id, l.Owner)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ExpiredLeases lists executing actions whose lease has run out.
func (s *Store) ExpiredLeases(ctx context.Context) ([]*agentg8.Action, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+actionCols+` FROM actions WHERE status = 'executing' AND (lease_until IS NULL OR lease_until < ?)`,
		time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	return scanActions(rows)
}
