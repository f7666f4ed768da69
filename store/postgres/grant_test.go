package postgres

import (
	"context"
	"maps"
	"slices"
	"testing"
)

// Every table the migrations create is in runtimePrivileges (a table left
// out would be unusable by a runtime role), and nothing else is.
func TestRuntimePrivilegesCoverEveryTable(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, `SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(maps.Keys(runtimePrivileges)); !slices.Equal(tables, want) {
		t.Errorf("tables %v, runtimePrivileges lists %v", tables, want)
	}
	var at int
	if err := s.pool.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&at); err != nil || at != latestVersion() || at < 9 {
		t.Errorf("schema at %d (%v), latest %d", at, err, latestVersion())
	}
}
