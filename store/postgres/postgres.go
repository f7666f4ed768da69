// Package postgres is the store for several stateless replicas on one
// PostgreSQL: the same contract as the SQLite store, SQL written for this
// dialect, embedded migrations safe to run from many replicas at once,
// execution leases on the database's clock, and LISTEN/NOTIFY so a poller on
// one replica is woken by a change made on another.
package postgres

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/credential"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Channel is the NOTIFY channel for action changes.
const Channel = "agentg8_actions"

// Store is the PostgreSQL store.
type Store struct {
	pool *pgxpool.Pool
}

var (
	_ action.Store           = (*Store)(nil)
	_ audit.SequencedStore   = (*Store)(nil)
	_ audit.Reader           = (*Store)(nil)
	_ credential.SecretStore = (*Store)(nil)
)

// MinConns is the fewest connections a store's pool has (pgxpool's
// default is 4 on a small machine; pool_max_conns in the URL raises it).
const MinConns = 16

// Open connects and migrates.
func Open(ctx context.Context, url string) (*Store, error) {
	// pgx reads PGSSLMODE and the other PG* variables from the process's
	// environment, so the check does too.
	if _, err := CheckTransport(url, os.Getenv); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if cfg.MaxConns < MinConns {
		cfg.MaxConns = MinConns
	}
	// Named in pg_stat_activity and the server's logs, unless the URL
	// names it otherwise.
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "agentg8"
	}
	cfg.ConnConfig.DialFunc = dialer().DialContext
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error { s.pool.Close(); return nil }

// Ping checks the database is reachable.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Migrate applies embedded migrations under an advisory lock, so replicas
// starting together migrate once.
func (s *Store) Migrate(ctx context.Context) error { return s.migrate(ctx, 1<<30) }

// migrate applies the migrations up to version upto. A schema already
// there is only read: no lock, no DDL, so a role granted only what the
// gateway does (GrantRuntime) can start it.
func (s *Store) migrate(ctx context.Context, upto int) error {
	latest := latestVersion()
	var at int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&at)
	var pe *pgconn.PgError
	switch {
	case err == nil && at >= min(upto, latest):
		return nil
	case err != nil && !(errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42501")):
		// Not a new database (undefined_table) nor a role that may not read
		// the version: the database cannot be reached or read at all.
		return fmt.Errorf("postgres: %w", err)
	}
	err = s.applyMigrations(ctx, upto)
	if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		return fmt.Errorf("the schema is at version %d and this build needs %d, which this database user may not apply: run `agentg8 migrate --store <the owner's URL>` first (%w)", at, latest, err)
	}
	return err
}

// latestVersion is the version the embedded migrations reach.
func latestVersion() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	v := 0
	for _, n := range names {
		if n, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(n, "migrations/"), "_", 2)[0]); err == nil {
			v = max(v, n)
		}
	}
	return v
}

// applyMigrations applies, under an advisory lock, what is missing up to
// version upto.
func (s *Store) applyMigrations(ctx context.Context, upto int) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7471020815)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	sort.Strings(names)
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", n)
		}
		if v > upto {
			break
		}
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, v).Scan(&done); err != nil {
			return err
		}
		if done {
			continue
		}
		body, _ := migrations.ReadFile(n)
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func keys(a *agentg8.Action) (aprID, hash *string) {
	if a.Approval != nil {
		return &a.Approval.ID, &a.Approval.RequestHash
	}
	return nil, nil
}

// insertSQL is the statement that creates an action. Conflicts do nothing
// (no error), so a refused change never aborts the transaction.
func insertSQL(ch *action.Change) (string, []any, error) {
	data, err := ch.Encode()
	if err != nil {
		return "", nil, err
	}
	a := ch.Action
	aprID, hash := keys(a)
	owner, ttl := leaseArgs(ch.Lease)
	return `INSERT INTO actions (id, principal, task, status, created_at, updated_at, data, version, approval_id, request_hash, lease_owner, lease_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, CASE WHEN $10::text IS NULL THEN NULL ELSE now() + $11 * interval '1 microsecond' END)
		ON CONFLICT DO NOTHING`,
		[]any{a.ID, a.Principal, a.Task, string(a.Status), a.CreatedAt.UnixNano(), a.UpdatedAt.UnixNano(), data, aprID, hash, owner, ttl}, nil
}

// updateSQL is the compare-and-set on status and version. Both are
// compared with IS NOT DISTINCT FROM (the same here: neither is null) so
// that only the id can lead to the row: an empty table's statistics make
// the status index look as good as the key, and a plan cached then would
// walk every action in that status (TestUpdatesProbeThePrimaryKey).
func updateSQL(ch *action.Change) (string, []any, error) {
	data, err := ch.Encode()
	if err != nil {
		return "", nil, err
	}
	a, from := ch.Action, ch.From
	aprID, hash := keys(a)
	owner, ttl := leaseArgs(ch.Lease)
	args := []any{string(a.Status), a.UpdatedAt.UnixNano(), data, aprID, hash, owner, ttl, a.ID, string(from), a.Version}
	sql := `UPDATE actions SET status = $1, updated_at = $2, data = $3, version = version + 1, approval_id = $4, request_hash = $5,
		lease_owner = $6, lease_until = CASE WHEN $6::text IS NULL THEN NULL ELSE now() + $7 * interval '1 microsecond' END
		WHERE id = $8 AND (status, version) IS NOT DISTINCT FROM ($9::text, $10::bigint)`
	if ch.Owner != "" {
		// Rare (settling an unconfirmed execution): a statement of its own
		// rather than one more parameter on every update.
		sql += ` AND lease_owner = $11`
		args = append(args, ch.Owner)
	}
	return sql, args, nil
}

// refused explains a change whose statement touched no row.
func refused(ch *action.Change) error {
	if ch.From != "" {
		return action.ErrStateConflict
	}
	if ch.Action.Approval != nil && ch.Action.Status == agentg8.StatePendingApproval {
		return action.ErrDuplicatePending
	}
	return action.ErrActionExists
}

func applyOne(ctx context.Context, q querier, ch *action.Change) error {
	sql, args, err := changeSQL(ch)
	if err != nil {
		return err
	}
	tag, err := q.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("write action: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return refused(ch)
	}
	return nil
}

func changeSQL(ch *action.Change) (string, []any, error) {
	if ch.From == "" {
		return insertSQL(ch)
	}
	return updateSQL(ch)
}

func leaseArgs(l *action.Lease) (*string, int64) {
	if l == nil {
		return nil, 0
	}
	return &l.Owner, l.TTL.Microseconds()
}

// CreateAction inserts an action.
func (s *Store) CreateAction(ctx context.Context, a *agentg8.Action) error {
	return applyOne(ctx, s.pool, &action.Change{Action: a})
}

// UpdateAction is a compare-and-set on status and version.
func (s *Store) UpdateAction(ctx context.Context, a *agentg8.Action, from agentg8.State) error {
	return applyOne(ctx, s.pool, &action.Change{Action: a, From: from})
}

const cols = `data, version`

func (s *Store) one(ctx context.Context, where string, arg any) (*agentg8.Action, error) {
	var data []byte
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT `+cols+` FROM actions WHERE `+where, arg).Scan(&data, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, action.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get action: %w", err)
	}
	return decode(data, v)
}

func decode(data []byte, v int64) (*agentg8.Action, error) {
	var a agentg8.Action
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("decode action: %w", err)
	}
	a.Version = v
	return &a, nil
}

func (s *Store) many(ctx context.Context, sql string, args ...any) ([]*agentg8.Action, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*agentg8.Action{}
	for rows.Next() {
		var data []byte
		var v int64
		if err := rows.Scan(&data, &v); err != nil {
			return nil, err
		}
		a, err := decode(data, v)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// GetAction returns an action.
func (s *Store) GetAction(ctx context.Context, id string) (*agentg8.Action, error) {
	return s.one(ctx, `id = $1`, id)
}

// GetActionByApproval returns the action an approval belongs to.
func (s *Store) GetActionByApproval(ctx context.Context, id string) (*agentg8.Action, error) {
	return s.one(ctx, `approval_id = $1`, id)
}

// PendingByHash returns the pending action with this request hash.
func (s *Store) PendingByHash(ctx context.Context, hash string) (*agentg8.Action, error) {
	return s.one(ctx, `request_hash = $1 AND status = 'pending_approval'`, hash)
}

// CountPending counts an agent's pending approvals.
func (s *Store) CountPending(ctx context.Context, principal string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM actions WHERE principal = $1 AND status = 'pending_approval'`, principal).Scan(&n)
	return n, err
}

// ListActions lists actions newest first.
func (s *Store) ListActions(ctx context.Context, f action.Filter) ([]*agentg8.Action, error) {
	before := f.Before
	if before.IsZero() {
		before = time.Unix(0, 1<<62)
	}
	// Only the filters given go into the SQL, so that the planner can use
	// the index that serves them (an agent's list: principal, created_at).
	where, args := []string{`created_at < $1`}, []any{before.UnixNano()}
	for _, c := range []struct{ col, val string }{{"principal", f.Principal}, {"task", f.Task}, {"status", string(f.Status)}} {
		if c.val != "" {
			args = append(args, c.val)
			where = append(where, fmt.Sprintf("%s = $%d", c.col, len(args)))
		}
	}
	args = append(args, f.Limit)
	return s.many(ctx, `SELECT `+cols+` FROM actions WHERE `+strings.Join(where, ` AND `)+
		fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d`, len(args)), args...)
}

// ActionsInState lists actions in a state, oldest first.
func (s *Store) ActionsInState(ctx context.Context, st agentg8.State) ([]*agentg8.Action, error) {
	return s.many(ctx, `SELECT `+cols+` FROM actions WHERE status = $1 ORDER BY created_at`, string(st))
}

// RenewLease extends an executing action's lease on the database clock.
func (s *Store) RenewLease(ctx context.Context, id string, l action.Lease) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE actions SET lease_until = now() + $1 * interval '1 microsecond'
		WHERE id = $2 AND status = 'executing' AND lease_owner = $3`, l.TTL.Microseconds(), id, l.Owner)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// ExpiredLeases lists executing actions whose lease ran out (database clock).
func (s *Store) ExpiredLeases(ctx context.Context) ([]*agentg8.Action, error) {
	return s.many(ctx, `SELECT `+cols+` FROM actions WHERE status = 'executing' AND (lease_until IS NULL OR lease_until < now())`)
}

// TakeToken takes one token from key's bucket, which holds up to
// perMinute tokens and refills at perMinute a minute, on the database's
// clock, shared by every replica; false when the bucket is empty.
func (s *Store) TakeToken(ctx context.Context, key string, perMinute int) (bool, error) {
	rows, err := s.pool.Query(ctx, `INSERT INTO rate_limits AS r (agent, tokens, at) VALUES ($1, $2::float8 - 1, now())
		ON CONFLICT (agent) DO UPDATE SET
			tokens = LEAST($2::float8, r.tokens + extract(epoch FROM now() - r.at) * $2::float8 / 60) - 1, at = now()
		WHERE LEAST($2::float8, r.tokens + extract(epoch FROM now() - r.at) * $2::float8 / 60) >= 1
		RETURNING tokens`, key, perMinute)
	if err != nil {
		return false, fmt.Errorf("rate limit: %w", err)
	}
	defer rows.Close()
	took := rows.Next()
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("rate limit: %w", err)
	}
	return took, nil
}

// Session is a console sign-in.
type Session struct {
	Principal agentg8.Principal
	CSRF      string
	Expires   time.Time
}

// PutSession stores a console sign-in under the hash of its token, and
// drops sign-ins expired at now.
func (s *Store) PutSession(ctx context.Context, token string, ses Session, now time.Time) error {
	p, err := json.Marshal(ses.Principal)
	if err != nil {
		return err
	}
	h := sha256.Sum256([]byte(token))
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM console_sessions WHERE expires_at < $1`, now.UnixNano())
	b.Queue(`INSERT INTO console_sessions (token_hash, user_id, principal, csrf, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		h[:], ses.Principal.ID, p, ses.CSRF, ses.Expires.UnixNano())
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store console session: %w", err)
	}
	return nil
}

// GetSession returns the console sign-in stored under token, or nil.
func (s *Store) GetSession(ctx context.Context, token string) (*Session, error) {
	h := sha256.Sum256([]byte(token))
	var p []byte
	var exp int64
	ses := &Session{}
	err := s.pool.QueryRow(ctx, `SELECT principal, csrf, expires_at FROM console_sessions WHERE token_hash = $1`, h[:]).Scan(&p, &ses.CSRF, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read console session: %w", err)
	}
	if err := json.Unmarshal(p, &ses.Principal); err != nil {
		return nil, fmt.Errorf("read console session: %w", err)
	}
	ses.Expires = time.Unix(0, exp)
	return ses, nil
}

// DeleteUserSessions ends every console sign-in of a user.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete console sessions: %w", err)
	}
	return nil
}

// DeleteSession ends a console sign-in.
func (s *Store) DeleteSession(ctx context.Context, token string) error {
	h := sha256.Sum256([]byte(token))
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE token_hash = $1`, h[:]); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}

// Now is the database's clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT now()`).Scan(&t)
	return t.UTC(), err
}

// ClaimIdempotency inserts a claim or returns the existing one.
func (s *Store) ClaimIdempotency(ctx context.Context, rec action.IdempotencyRecord) (*action.IdempotencyRecord, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO idempotency (agent, key, payload_hash, action_id, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		rec.Agent, rec.Key, rec.PayloadHash, rec.ActionID, rec.CreatedAt.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("claim idempotency: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	var prev action.IdempotencyRecord
	var created int64
	err = s.pool.QueryRow(ctx, `SELECT agent, key, payload_hash, action_id, result, created_at FROM idempotency WHERE agent = $1 AND key = $2`,
		rec.Agent, rec.Key).Scan(&prev.Agent, &prev.Key, &prev.PayloadHash, &prev.ActionID, &prev.Result, &created)
	if err != nil {
		return nil, fmt.Errorf("read idempotency: %w", err)
	}
	prev.CreatedAt = time.Unix(0, created).UTC()
	return &prev, nil
}

// CompleteIdempotency stores the answer for a claim.
func (s *Store) CompleteIdempotency(ctx context.Context, agent, key string, result []byte, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE idempotency SET result = $1, created_at = $2 WHERE agent = $3 AND key = $4`, result, at.UnixNano(), agent, key)
	return err
}

// ReleaseIdempotency marks an unanswered claim abandoned, dated at (it keeps
// its action ID), or deletes one made before claims had action IDs.
func (s *Store) ReleaseIdempotency(ctx context.Context, agent, key string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `WITH kept AS (UPDATE idempotency SET created_at = $3 WHERE agent = $1 AND key = $2 AND result IS NULL AND action_id <> '')
		DELETE FROM idempotency WHERE agent = $1 AND key = $2 AND result IS NULL AND action_id = ''`, agent, key, at.UnixNano())
	return err
}

// PruneIdempotency deletes up to limit records dated before before.
func (s *Store) PruneIdempotency(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency WHERE (agent, key) IN (SELECT agent, key FROM idempotency WHERE created_at < $1 LIMIT $2)`, before.UnixNano(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// AuditSize is the number of audit records.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT size FROM audit_head WHERE id = 1`).Scan(&n)
	return n, err
}

// readHashes reads each hash out of the run that holds it.
func readHashes(ctx context.Context, q querier, idx []int64) ([]tlog.Hash, error) {
	rows, err := q.Query(ctx, `SELECT i.idx, substring(r.hashes FROM ((i.idx - r.start) * 32 + 1)::int FOR 32)
		FROM unnest($1::bigint[]) AS i(idx)
		CROSS JOIN LATERAL (SELECT start, hashes FROM audit_hash_runs WHERE start <= i.idx ORDER BY start DESC LIMIT 1) r`, idx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := map[int64][]byte{}
	for rows.Next() {
		var i int64
		var h []byte
		if err := rows.Scan(&i, &h); err != nil {
			return nil, err
		}
		got[i] = h
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(idx))
	for k, i := range idx {
		h, ok := got[i]
		if !ok || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("audit hash %d missing", i)
		}
		copy(out[k][:], h)
	}
	return out, nil
}

// ReadAuditHashes returns stored hashes.
func (s *Store) ReadAuditHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, s.pool, idx)
}

// AppendRecords appends records at the log's head with their state
// changes in one transaction: the statements go as one pipeline ending in
// a single Sync, which PostgreSQL runs as one implicit transaction and
// commits at the Sync (explicit BEGIN and COMMIT would cost two statements
// more per batch) — one round trip. The database gives the records their
// positions as it runs the pipeline (the head row is moved last, so its
// lock is held only from there to the commit, never across a round trip),
// which is what lets several replicas append without taking turns. Changed
// actions are announced with NOTIFY at the commit. Hashes and checkpoints
// come later, from SealAudit.
//
// A change that loses its compare-and-set fails its statement (a guard
// divides by the number of rows it wrote); PostgreSQL then skips the rest
// of the pipeline and rolls the transaction back: nothing of the batch is
// written, and the log retries it without that change. When a batch has
// several changes of a kind, they are written by one set statement, whose
// guard cannot say which change lost; the batch is then tried again one
// statement per change.
//
// A batch PostgreSQL aborted as a deadlock victim or a serialization
// failure was rolled back whole, so it is tried again (up to three times).
// Batches lock rows in one order, so deadlocks between replicas' batches
// should not happen; this covers other sessions on the same rows.
func (s *Store) AppendRecords(ctx context.Context, recs []audit.Pending, changes []any) (start int64, err error) {
	defer func() { err = notWritten(err) }()
	for try := 1; ; try++ {
		start, err = s.appendRecords(ctx, recs, changes, true)
		if errors.Is(err, errSetRefused) {
			// Some change was refused, and a set statement cannot say which:
			// try again one statement per change, which names it (or, if
			// what refused it changed meanwhile, commits).
			start, err = s.appendRecords(ctx, recs, changes, false)
		}
		var pe *pgconn.PgError
		if try == 3 || !errors.As(err, &pe) || pe.Code != "40P01" && pe.Code != "40001" {
			return start, err
		}
	}
}

// notWritten marks err with audit.ErrNotWritten when the batch cannot
// have committed: PostgreSQL reported an error (the batch's implicit
// transaction was rolled back), or pgx failed before sending anything. A
// connection lost after the batch was sent, or a deadline passed while
// waiting for its answer, leaves it in doubt: unmarked.
func notWritten(err error) error {
	var pe *pgconn.PgError
	if err != nil && !errors.Is(err, audit.ErrNotWritten) && (errors.As(err, &pe) || pgconn.SafeToRetry(err)) {
		return fmt.Errorf("%w: %w", audit.ErrNotWritten, err)
	}
	return err
}

// minSet is the fewest changes of one kind (new actions, updates) a batch
// writes with one set statement.
const minSet = 4

// errSetRefused is a set statement's guard failing: it wrote fewer rows
// than it had changes.
var errSetRefused = errors.New("a change in the batch was refused")

// appendRecords writes one batch, with set statements for its new actions
// and its updates when it has several of a kind (each statement costs its
// own bind, executor start and answer), or one statement per change.
func (s *Store) appendRecords(ctx context.Context, recs []audit.Pending, changes []any, sets bool) (start int64, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: no connection: %w", audit.ErrNotWritten, err)
	}
	defer release(ctx, conn)
	type slot struct {
		index int
		ch    *action.Change // nil for statements that cannot be refused
		set   bool           // a set statement's guard
		bound bool           // a pending bound's guard (Change.MaxPending)
	}
	batch := &pgx.Batch{}
	var slots []slot
	var changed []string
	var notes []action.Notification
	// A set statement of one or two rows costs more than twice a
	// single-row statement (measured), so it is used for a kind of change
	// only when the batch has several.
	var creates int
	var order []int
	owned := false // an update requires a lease owner (Change.Owner)
	for i, c := range changes {
		if c == nil {
			continue
		}
		ch, ok := c.(*action.Change)
		if !ok {
			return 0, &audit.ChangeError{Index: i, Err: fmt.Errorf("unsupported change %T", c)}
		}
		if ch.From == "" {
			creates++
		}
		owned = owned || ch.Owner != ""
		order = append(order, i)
		if ch.Announced() {
			changed = append(changed, ch.Action.ID+" "+string(ch.Action.Status))
		}
	}
	// Every batch takes its row locks in one order — new actions by request
	// hash, then updated actions by ID — so two replicas' batches touching
	// the same actions (duplicate approval clicks on two replicas) wait for
	// each other instead of deadlocking (TestBatchesDoNotDeadlock).
	slices.SortFunc(order, func(i, j int) int { return lockOrder(changes[i].(*action.Change), changes[j].(*action.Change)) })
	// New pending actions under a bound are counted with their principal
	// locked (an advisory lock, held to the commit), so that batches on
	// other replicas count after this one commits. The locks come first,
	// in principal order, before any row lock: still one global order.
	var bounded []string
	for _, i := range order[:creates] {
		if ch := changes[i].(*action.Change); ch.Bounded() {
			bounded = append(bounded, ch.Action.Principal)
		}
	}
	slices.Sort(bounded)
	for _, p := range slices.Compact(bounded) {
		batch.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, pendingLocks, p)
		slots = append(slots, slot{index: -1})
	}
	// Creates, then updates (order is sorted so): each kind as one set
	// statement when the batch has several, else one statement per change
	// (always for updates when one requires a lease owner: rare, and only
	// updateSQL checks it).
	planned := false
	for k, part := range [][]int{order[:creates], order[creates:]} {
		// Bounded creates are guarded one by one (the guard names its change).
		if !sets || len(part) < minSet || k == 0 && len(bounded) > 0 || k == 1 && owned {
			for _, i := range part {
				ch := changes[i].(*action.Change)
				sql, args, err := changeSQL(ch)
				if err != nil {
					return 0, &audit.ChangeError{Index: i, Err: err}
				}
				if ch.Bounded() {
					batch.Queue(`SELECT 1 / (count(*) < $2)::int FROM actions WHERE principal = $1 AND status = 'pending_approval'`,
						ch.Action.Principal, ch.MaxPending)
					slots = append(slots, slot{index: i, bound: true})
				}
				batch.Queue(`WITH c AS (`+sql+` RETURNING 1) SELECT 1 / count(*) FROM c`, args...)
				slots = append(slots, slot{index: i, ch: ch})
				for _, n := range ch.Notify {
					queueNotification(batch, n)
					slots = append(slots, slot{index: i})
				}
			}
			continue
		}
		var set changeSet
		for _, i := range part {
			ch := changes[i].(*action.Change)
			if err := set.add(ch); err != nil {
				return 0, &audit.ChangeError{Index: i, Err: err}
			}
			notes = append(notes, ch.Notify...)
		}
		if !planned {
			batch.Queue(setPlansSQL)
			slots = append(slots, slot{index: -1})
			planned = true
		}
		stmt, update := updateSetSQL, true
		if changes[part[0]].(*action.Change).From == "" {
			stmt, update = insertSetSQL, false
		}
		batch.Queue(stmt, set.args(update)...)
		slots = append(slots, slot{index: -1, set: true})
	}
	for _, n := range notes {
		queueNotification(batch, n)
		slots = append(slots, slot{index: -1})
	}
	// Changed actions are announced when the transaction commits.
	if len(changed) > 0 {
		batch.Queue(`SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id`, Channel, changed)
		slots = append(slots, slot{index: -1})
	}
	aids, tails := make([]string, len(recs)), make([][]byte, len(recs))
	for i, r := range recs {
		aids[i], tails[i] = r.ActionID, r.Tail
	}
	// A record's bytes are {"seq":<position> and its tail, as audit.place
	// writes them.
	batch.Queue(`WITH h AS (UPDATE audit_head SET size = size + $1 WHERE id = 1 RETURNING size - $1 AS start),
		ins AS (INSERT INTO audit_records (seq, action_id, data)
			SELECT h.start + t.i - 1, t.aid, convert_to('{"seq":' || (h.start + t.i - 1), 'UTF8') || t.tail
			FROM h, unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS t(aid, tail, i))
		SELECT start FROM h`, int64(len(recs)), aids, tails)
	br := conn.SendBatch(ctx, batch)
	for _, sl := range slots {
		if _, err := br.Exec(); err != nil {
			br.Close()
			var pe *pgconn.PgError
			reported := errors.As(err, &pe)         // else the connection failed: not the change's doing
			guard := reported && pe.Code == "22012" // a guard: fewer rows written than changes
			switch {
			case guard && sl.bound:
				return 0, &audit.ChangeError{Index: sl.index, Err: action.ErrTooManyPending}
			case guard && sl.set:
				return 0, errSetRefused
			case guard && sl.ch != nil:
				return 0, &audit.ChangeError{Index: sl.index, Err: refused(sl.ch)}
			case reported && sl.index >= 0:
				return 0, &audit.ChangeError{Index: sl.index, Err: err}
			}
			return 0, fmt.Errorf("append audit: %w", err)
		}
	}
	if err := br.QueryRow().Scan(&start); err != nil {
		br.Close()
		return 0, fmt.Errorf("append audit: %w", err)
	}
	if err := br.Close(); err != nil { // the commit
		return 0, fmt.Errorf("append audit: commit: %w", err)
	}
	return start, nil
}

// pendingLocks is the advisory-lock class (its first key) of principals'
// pending bounds; the second key is the principal's hashtext.
const pendingLocks = 0x61673870 // "ag8p"

// lockOrder orders a batch's changes as their statements lock rows: new
// actions first, by the pending-request hash their unique index locks
// (then ID), then updated actions by ID.
func lockOrder(a, b *action.Change) int {
	if ca, cb := a.From == "", b.From == ""; ca != cb {
		if ca {
			return -1
		}
		return 1
	}
	if a.From == "" {
		_, ha := keys(a.Action)
		_, hb := keys(b.Action)
		if c := cmp.Compare(deref(ha), deref(hb)); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.Action.ID, b.Action.ID)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func queueNotification(b *pgx.Batch, n action.Notification) {
	b.Queue(`INSERT INTO notifications (id, action_id, channel_key, channel, event, payload, attempts, next_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		n.ID, n.ActionID, n.Channel, n.Position, n.Event, n.Payload, n.Attempts, n.NextAt.UnixNano())
}

// changeSet is a batch's new actions, or its updates, as column arrays for
// one statement.
type changeSet struct {
	n                                int
	ids, principals, tasks, statuses []string
	created, updated, ttls, versions []int64
	data                             [][]byte
	approvals, hashes, owners        []*string
	from                             []string
}

func (c *changeSet) add(ch *action.Change) error {
	data, err := ch.Encode()
	if err != nil {
		return err
	}
	a := ch.Action
	aprID, hash := keys(a)
	owner, ttl := leaseArgs(ch.Lease)
	c.n++
	c.ids, c.principals, c.tasks, c.statuses = append(c.ids, a.ID), append(c.principals, a.Principal), append(c.tasks, a.Task), append(c.statuses, string(a.Status))
	c.created, c.updated, c.ttls, c.versions = append(c.created, a.CreatedAt.UnixNano()), append(c.updated, a.UpdatedAt.UnixNano()), append(c.ttls, ttl), append(c.versions, a.Version)
	c.data, c.approvals, c.hashes, c.owners = append(c.data, data), append(c.approvals, aprID), append(c.hashes, hash), append(c.owners, owner)
	c.from = append(c.from, string(ch.From))
	return nil
}

// args are insertSetSQL's arguments, or updateSetSQL's (which also
// compare each action's state and version).
func (c *changeSet) args(update bool) []any {
	if !update {
		return []any{c.ids, c.principals, c.tasks, c.statuses, c.created, c.updated, c.data, c.approvals, c.hashes, c.owners, c.ttls, c.n}
	}
	return []any{c.ids, c.principals, c.tasks, c.statuses, c.created, c.updated, c.data, c.approvals, c.hashes, c.owners, c.ttls, c.from, c.versions, c.n}
}

// insertSetSQL creates a batch's new actions (insertSQL for many); the
// guard fails the statement unless every one was written.
const insertSetSQL = `WITH c AS (INSERT INTO actions (id, principal, task, status, created_at, updated_at, data, version, approval_id, request_hash, lease_owner, lease_until)
	SELECT u.id, u.principal, u.task, u.status, u.created_at, u.updated_at, u.data, 1, u.approval_id, u.request_hash, u.lease_owner,
		CASE WHEN u.lease_owner IS NULL THEN NULL ELSE now() + u.ttl * interval '1 microsecond' END
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bytea[], $8::text[], $9::text[], $10::text[], $11::bigint[])
		AS u(id, principal, task, status, created_at, updated_at, data, approval_id, request_hash, lease_owner, ttl)
	ON CONFLICT DO NOTHING RETURNING 1)
SELECT 1 / (count(*) = $12)::int FROM c`

// setPlansSQL sets how the rest of the transaction plans the set
// statements. Joins probe the primary key for each change whatever the
// statistics say (TestUpdatesProbeThePrimaryKey): a plan made while the
// table was nearly empty would scan it, and stay cached as it grows. And
// the plan is always the generic one, made once per connection — the plan
// that test checks — rather than one per batch where PostgreSQL judges
// that cheaper.
const setPlansSQL = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
	set_config('enable_mergejoin', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)`

// updateSetSQL is updateSQL's compare-and-set for many actions; the guard
// fails the statement unless every one was written.
const updateSetSQL = `WITH c AS (UPDATE actions a SET status = u.status, updated_at = u.updated_at, data = u.data, version = a.version + 1,
		approval_id = u.approval_id, request_hash = u.request_hash, lease_owner = u.lease_owner,
		lease_until = CASE WHEN u.lease_owner IS NULL THEN NULL ELSE now() + u.ttl * interval '1 microsecond' END
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bytea[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bigint[])
		AS u(id, principal, task, status, created_at, updated_at, data, approval_id, request_hash, lease_owner, ttl, from_status, version)
	WHERE a.id = u.id AND (a.status, a.version) IS NOT DISTINCT FROM (u.from_status, u.version)
	RETURNING 1)
SELECT 1 / (count(*) = $14)::int FROM c`

// SealAudit seals the records after the sealed size. The seal row is taken
// with SKIP LOCKED: a replica that finds another sealing does not wait (ok
// is false) and tries again later; appends never wait for a seal. Records
// become visible in position order (each append moves the head only after
// the previous one committed), so what is read is a gapless run.
func (s *Store) SealAudit(ctx context.Context, limit int, gap time.Duration, seal audit.SealFunc) (n int, ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, false, err
	}
	defer release(ctx, conn)
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	// A sealer stopped mid-way (SIGSTOP, a hung host) must not keep the
	// others from sealing: the database ends its transaction.
	b.Queue(`SET LOCAL idle_in_transaction_session_timeout = '10s'`)
	// Records are read only if the seal row was free and the last seal is
	// gap old: a replica that finds another sealing, or just done, reads
	// nothing. A last seal in the future means the database's clock was
	// set back: seal rather than wait for it to catch up.
	b.Queue(`WITH s AS (SELECT sealed FROM audit_seal WHERE id = 1
			AND (sealed_at <= clock_timestamp() - $2 * interval '1 microsecond' OR sealed_at > clock_timestamp()) FOR UPDATE SKIP LOCKED)
		SELECT s.sealed, r.seq, r.action_id, r.data FROM s LEFT JOIN LATERAL
			(SELECT seq, action_id, data FROM audit_records WHERE seq >= s.sealed ORDER BY seq LIMIT $1) r ON true`, limit, gap.Microseconds())
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	var sealed int64
	var recs []audit.Record
	locked := false
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		for err == nil && rows.Next() {
			var seq *int64
			var aid *string
			var data []byte
			if err = rows.Scan(&sealed, &seq, &aid, &data); err == nil && seq != nil {
				recs = append(recs, audit.Record{Seq: *seq, ActionID: *aid, Data: data})
			}
			locked = true
		}
		if err == nil {
			err = rows.Err()
		}
		if rows != nil {
			rows.Close()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, false, fmt.Errorf("seal audit: %w", err)
	}
	if !locked {
		return 0, false, nil
	}
	if len(recs) == 0 {
		return 0, true, nil
	}
	hashes, cp, err := seal(sealed, recs, func(idx []int64) ([]tlog.Hash, error) { return readHashes(ctx, conn, idx) })
	if err != nil {
		return 0, false, fmt.Errorf("seal audit: %w", err)
	}
	size := sealed + int64(len(recs))
	w := &pgx.Batch{}
	starts, runs := audit.HashRuns(hashes)
	for i := range starts {
		w.Queue(`INSERT INTO audit_hash_runs (start, hashes) VALUES ($1, $2)`, starts[i], runs[i])
	}
	w.Queue(`INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2) ON CONFLICT (size) DO NOTHING`, size, cp)
	w.Queue(`UPDATE audit_seal SET sealed = $1, sealed_at = clock_timestamp() WHERE id = 1`, size)
	w.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, w).Close(); err != nil {
		return 0, false, fmt.Errorf("seal audit: %w", err)
	}
	return len(recs), true, nil
}

// release returns a connection to the pool with no transaction open.
func release(ctx context.Context, conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() != 'I' {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}
	conn.Release()
}

// LatestAuditCheckpoint returns the newest checkpoint, or nil.
func (s *Store) LatestAuditCheckpoint(ctx context.Context) ([]byte, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// AuditCheckpoints returns up to limit checkpoints larger than after,
// smallest first.
func (s *Store) AuditCheckpoints(ctx context.Context, after int64, limit int) ([][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT note FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT $2`, after, limit)
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

func records(rows pgx.Rows, err error) ([]audit.Record, error) {
	if err != nil {
		return nil, err
	}
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

// ReadAuditRecords returns records after position after.
func (s *Store) ReadAuditRecords(ctx context.Context, after int64, limit int) ([]audit.Record, error) {
	return records(s.pool.Query(ctx, `SELECT seq, action_id, data FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit))
}

// AuditRecordsForAction returns an action's records.
func (s *Store) AuditRecordsForAction(ctx context.Context, id string, after int64, limit int) ([]audit.Record, error) {
	return records(s.pool.Query(ctx, `SELECT seq, action_id, data FROM audit_records WHERE action_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, after, limit))
}

// ClaimNotifications takes due notifications for one deliverer: rows
// another replica is claiming are skipped, not waited for.
func (s *Store) ClaimNotifications(ctx context.Context, now, until time.Time, limit int) ([]action.Notification, error) {
	rows, err := s.pool.Query(ctx, `WITH due AS (SELECT id, next_at FROM notifications WHERE NOT delivered AND next_at <= $1
			ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		UPDATE notifications n SET next_at = $3 FROM due WHERE n.id = due.id
		RETURNING n.id, n.action_id, n.channel_key, n.channel, n.event, n.payload, n.attempts, due.next_at, n.last_error`, now.UnixNano(), limit, until.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []action.Notification
	for rows.Next() {
		var n action.Notification
		var next int64
		if err := rows.Scan(&n.ID, &n.ActionID, &n.Channel, &n.Position, &n.Event, &n.Payload, &n.Attempts, &next, &n.LastError); err != nil {
			return nil, err
		}
		n.NextAt = time.Unix(0, next).UTC()
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b action.Notification) int { return a.NextAt.Compare(b.NextAt) })
	return out, nil
}

// UpdateNotification records a failed delivery attempt.
func (s *Store) UpdateNotification(ctx context.Context, n action.Notification) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifications SET attempts = $1, next_at = $2, last_error = $3 WHERE id = $4`,
		n.Attempts, n.NextAt.UnixNano(), n.LastError, n.ID)
	return err
}

// DeleteNotification removes a delivered or given-up notification.
func (s *Store) DeleteNotification(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM notifications WHERE id = $1`, id)
	return err
}

// GetSecret returns an encrypted secret.
func (s *Store) GetSecret(ctx context.Context, name string) (*credential.SecretRecord, error) {
	r := credential.SecretRecord{Name: name}
	var at int64
	err := s.pool.QueryRow(ctx, `SELECT nonce, ciphertext, updated_at FROM secrets WHERE name = $1`, name).Scan(&r.Nonce, &r.Ciphertext, &at)
	if errors.Is(err, pgx.ErrNoRows) {
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
	_, err := s.pool.Exec(ctx, `INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`,
		r.Name, r.Nonce, r.Ciphertext, r.UpdatedAt.UnixNano())
	return err
}

// ListSecrets lists secrets by name.
func (s *Store) ListSecrets(ctx context.Context) ([]credential.SecretRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, updated_at FROM secrets ORDER BY name`)
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

// DeleteSecret removes a secret.
func (s *Store) DeleteSecret(ctx context.Context, name string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM secrets WHERE name = $1`, name)
	return tag.RowsAffected() > 0, err
}

// RegisterTokenKeys records the IDs of a replica's token-signing keys as
// seen now, unless keys were seen within fresh (by running replicas, which
// refresh theirs with TouchTokenKeys) and none of kids is among them: then
// it records nothing and ok is false. It returns the fresh IDs. Starts are
// serialised (an advisory lock), so two replicas starting at once cannot
// both register.
func (s *Store) RegisterTokenKeys(ctx context.Context, kids []string, fresh time.Duration) (others []string, ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, tokenKeysLock); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT kid FROM token_keys WHERE last_seen > now() - $1 * interval '1 microsecond' ORDER BY kid`, fresh.Microseconds())
		if err != nil {
			return err
		}
		others, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(others) > 0 && !slices.ContainsFunc(kids, func(k string) bool { return slices.Contains(others, k) }) {
			return nil
		}
		ok = true
		return touchTokenKeys(ctx, tx, kids)
	})
	if err != nil {
		return nil, false, fmt.Errorf("register token keys: %w", err)
	}
	return others, ok, nil
}

// TouchTokenKeys marks a running replica's token keys as seen now.
func (s *Store) TouchTokenKeys(ctx context.Context, kids []string) error {
	return touchTokenKeys(ctx, s.pool, kids)
}

func touchTokenKeys(ctx context.Context, q querier, kids []string) error {
	_, err := q.Exec(ctx, `INSERT INTO token_keys (kid) SELECT unnest($1::text[]) ON CONFLICT (kid) DO UPDATE SET last_seen = now()`, kids)
	return err
}

// tokenKeysLock is the advisory-lock class that serialises
// RegisterTokenKeys.
const tokenKeysLock = 0x6167386b // "ag8k"

// Listen calls fn with the id and new state of every action changed by any
// replica whose change is announced (action.Change.Announced), until ctx
// ends; it reconnects after errors. Announcements made while it was not
// listening are lost, so each time it listens (again) it calls fn with an
// empty id: anything may have changed.
func (s *Store) Listen(ctx context.Context, fn func(actionID string, st agentg8.State)) {
	for ctx.Err() == nil {
		pc, err := s.pool.Acquire(ctx)
		if err == nil {
			// The listening connection leaves the pool for good.
			conn := pc.Hijack()
			if _, err = conn.Exec(ctx, `LISTEN `+Channel); err == nil {
				fn("", "")
			}
			for err == nil {
				var n *pgconn.Notification
				n, err = conn.WaitForNotification(ctx)
				if err == nil {
					id, st, _ := strings.Cut(n.Payload, " ") // "id state"
					fn(id, agentg8.State(st))
				}
			}
			conn.Close(context.Background())
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Clock returns a clock that follows the database's: the local clock plus
// the offset measured against now(), refreshed every 10 seconds, so
// replicas with skewed clocks decide expiry alike.
func (s *Store) Clock(local agentg8.Clock) agentg8.Clock {
	c := &dbClock{s: s, local: local}
	c.Now() // measured before anyone reads it
	return c
}

type dbClock struct {
	s       *Store
	local   agentg8.Clock
	mu      sync.Mutex
	offset  time.Duration
	synced  time.Time // when the offset was last measured (or a try failed, less 9 s)
	syncing bool
}

// Now is the local time corrected by the last measured offset to the
// database's clock, measured again every 10 s. One caller measures while
// the others go on with the offset they have: a database that does not
// answer (a partition: up to 2 s per try) must not hold up every caller
// of Now, one after another. A failed try is repeated a second later.
func (c *dbClock) Now() time.Time {
	local := c.local.Now()
	c.mu.Lock()
	due := !c.syncing && (local.Sub(c.synced) > 10*time.Second || local.Before(c.synced))
	c.syncing = c.syncing || due
	offset := c.offset
	c.mu.Unlock()
	if !due {
		return local.Add(offset).UTC()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	db, err := c.s.Now(ctx)
	cancel()
	after := c.local.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncing = false
	if err != nil {
		c.synced = after.Add(-9 * time.Second)
		return after.Add(c.offset).UTC()
	}
	c.offset = db.Sub(local.Add(after.Sub(local) / 2))
	c.synced = after
	return after.Add(c.offset).UTC()
}

// PoolStat reports the connection pool's state, for metrics.
func (s *Store) PoolStat() *pgxpool.Stat { return s.pool.Stat() }
