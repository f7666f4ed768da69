package postgres

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// runtimePrivileges is what the gateway does to each table once the schema
// is migrated, and so all a role that runs it needs. The audit log's
// tables take inserts only: a role with these privileges cannot change or
// remove a record, a tree hash or a checkpoint (verification would catch
// it; this prevents it). Every table the migrations create is listed
// (TestRuntimePrivilegesCoverEveryTable checks).
var runtimePrivileges = map[string]string{
	"schema_migrations": "SELECT",
	"audit_records":     "SELECT, INSERT",
	"audit_hash_runs":   "SELECT, INSERT",
	"audit_checkpoints": "SELECT, INSERT",
	"audit_head":        "SELECT, UPDATE", // the next position
	"audit_seal":        "SELECT, UPDATE", // how far sealed, and when
	"actions":           "SELECT, INSERT, UPDATE",
	"idempotency":       "SELECT, INSERT, UPDATE, DELETE",
	"notifications":     "SELECT, INSERT, UPDATE, DELETE",
	"secrets":           "SELECT, INSERT, UPDATE, DELETE",
	"rate_limits":       "SELECT, INSERT, UPDATE",
	"console_sessions":  "SELECT, INSERT, UPDATE, DELETE",
	"token_keys":        "SELECT, INSERT, UPDATE",
}

// GrantRuntime grants role what the gateway needs on the migrated schema
// (runtimePrivileges, and the schema's use) and takes back anything more it
// held on those tables, so that replicas can run as a role that cannot
// alter the schema or rewrite the audit log. Run it as the schema's owner,
// again after each upgrade's migrations.
func (s *Store) GrantRuntime(ctx context.Context, role string) error {
	r := pgx.Identifier{role}.Sanitize()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	defer tx.Rollback(ctx)
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	// Privileges do not bind an owner or a superuser: granting to one
	// would look like least privilege and be none.
	super, owns, err := unbound(ctx, tx, role)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	if owns || super {
		return fmt.Errorf("grant: %s owns the schema's tables or is a superuser, so no grant can limit it; create a role of its own for the replicas", role)
	}
	stmts := []string{"GRANT USAGE ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + r}
	for _, t := range slices.Sorted(maps.Keys(runtimePrivileges)) {
		stmts = append(stmts, "REVOKE ALL ON "+t+" FROM "+r, "GRANT "+runtimePrivileges[t]+" ON "+t+" TO "+r)
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("grant: %s: %w", q, err)
		}
	}
	return tx.Commit(ctx)
}

// Unbounded says why this store's role is not bound by the least-privilege
// grants (GrantRuntime): it is a superuser, or owns the schema's tables —
// either may change or delete audit records, which verification then only
// detects. Empty when the role is bounded.
func (s *Store) Unbounded(ctx context.Context) (string, error) {
	var user string
	if err := s.pool.QueryRow(ctx, `SELECT current_user::text`).Scan(&user); err != nil {
		return "", err
	}
	super, owns, err := unbound(ctx, s.pool, user)
	switch {
	case err != nil:
		return "", err
	case super:
		return fmt.Sprintf("the gateway connects to PostgreSQL as %s, a superuser", user), nil
	case owns:
		return fmt.Sprintf("the gateway connects to PostgreSQL as %s, which owns the audit tables", user), nil
	}
	return "", nil
}

// unbound reports whether role is a superuser, and whether it owns the
// audit tables (or is a member of the role that does): no grant binds it.
func unbound(ctx context.Context, q querier, role string) (super, owns bool, err error) {
	err = q.QueryRow(ctx, `SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = $1), false),
		EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'audit_records' AND pg_has_role($1, tableowner, 'USAGE'))`, role).Scan(&super, &owns)
	return super, owns, err
}

// MissingPrivileges lists what this store's role lacks of what the gateway
// does (runtimePrivileges), as "PRIVILEGE on table": after an upgrade whose
// migration added a table, a role granted before lacks it until `migrate
// --grant` runs again — better refused at start than failing requests.
func (s *Store) MissingPrivileges(ctx context.Context) ([]string, error) {
	var tables, privs []string
	for _, t := range slices.Sorted(maps.Keys(runtimePrivileges)) {
		for _, p := range strings.Split(runtimePrivileges[t], ", ") {
			tables, privs = append(tables, t), append(privs, p)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT p || ' on ' || t FROM unnest($1::text[], $2::text[]) AS x(t, p)
		WHERE NOT has_table_privilege(current_user, t, p)`, tables, privs)
	if err != nil {
		return nil, fmt.Errorf("privileges: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
