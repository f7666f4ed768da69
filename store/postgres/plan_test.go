package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/store/storetest"
)

// TestUpdatesProbeThePrimaryKey checks the plans of the statements that
// update actions (one, or a batch's): with the table empty, as in a new
// installation, and the plan generic, as PostgreSQL caches it after a few
// runs, they must still find each action through the primary key — a
// cached scan of the table, or of the status index, would outlive the
// statistics it came from and read ever more rows as the table grows.
func TestUpdatesProbeThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	plan := func(probe bool, stmt, args string) string {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if probe {
			if _, err := tx.Exec(ctx, setPlansSQL); err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range []string{`SET LOCAL plan_cache_mode = force_generic_plan`, `PREPARE upd AS ` + stmt} {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := tx.Query(ctx, `EXPLAIN EXECUTE upd(`+args+`)`)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			out = append(out, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `DEALLOCATE upd`); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "\n")
	}
	one, _, err := updateSQL(&action.Change{Action: &agentg8.Action{ID: "act_1", Status: agentg8.StateSucceeded}, From: agentg8.StateExecuting})
	if err != nil {
		t.Fatal(err)
	}
	setArgs := `'{act_1}', '{bot}', '{crm.x}', '{succeeded}', '{1}', '{1}', '{"\\x7b7d"}', '{NULL}', '{NULL}', '{NULL}', '{0}', '{executing}', '{1}', 1`
	for _, c := range []struct {
		name, stmt, args string
		probe            bool
	}{
		{"one action", one, `'succeeded', 1, '{}', NULL, NULL, NULL, 0, 'act_1', 'executing', 1`, false},
		{"a batch", updateSetSQL, setArgs, true},
	} {
		got := plan(c.probe, c.stmt, c.args)
		if !strings.Contains(got, "Index Scan using actions_pkey on actions") {
			t.Errorf("updating %s does not probe the primary key:\n%s", c.name, got)
		}
		if strings.Contains(got, "actions_status") || strings.Contains(got, "Seq Scan on actions") {
			t.Errorf("updating %s scans:\n%s", c.name, got)
		}
	}
	// Without the settings the batch's join would scan the table: what the
	// settings are there for.
	if got := plan(false, updateSetSQL, setArgs); !strings.Contains(got, "Seq Scan on actions") {
		t.Logf("note: without the settings the batch update also probes the key:\n%s", got)
	}
}

// TestPlanSettingsStayInTheBatch checks that the settings a batch's
// pipeline sets hold for the statements after them in the same pipeline
// (one implicit transaction) and are gone for the next user of the
// connection.
func TestPlanSettingsStayInTheBatch(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	const show = `SELECT current_setting('enable_seqscan') || ' ' || current_setting('plan_cache_mode')`
	b := &pgx.Batch{}
	b.Queue(setPlansSQL)
	b.Queue(show)
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	var in, after string
	if err := br.QueryRow().Scan(&in); err != nil {
		t.Fatal(err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, show).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if in != "off force_generic_plan" || after != "on auto" {
		t.Errorf("settings in the batch %q (want off force_generic_plan), after it %q (want on auto)", in, after)
	}
}

// newStore opens a store on a new database, closed when the test ends.
func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), storetest.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
