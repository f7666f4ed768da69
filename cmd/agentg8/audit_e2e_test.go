package main

import (
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// copyDB copies the (closed) database to a new file and returns its path.
func copyDB(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
	return dst
}

func execSQL(t *testing.T, path string, stmts ...string) {
	t.Helper()
	// The gateway's worker may be writing: wait for it rather than fail.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	for i := 0; i < 4; i++ {
		e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
		e.propose(supportKey, "crm.delete_customer", map[string]any{"customer_id": "c"})
	}
	e.propose(supportKey, "crm.nope", map[string]any{})
	e.stop()
	db := filepath.Join(e.dir, "data", "agentg8.db")
	saved := filepath.Join(t.TempDir(), "checkpoint")
	code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--save-checkpoint", saved)
	if code != 0 || !strings.HasPrefix(out, "ok: 25 records") {
		t.Fatalf("untouched log: %d %s %s", code, out, errs)
	}

	cases := []struct {
		name  string
		sql   []string
		first string // the message must name this record
	}{
		{"modified record", []string{`UPDATE audit_records SET data = CAST(replace(data, 'support-bot', 'support-bxt') AS BLOB) WHERE seq = 4`}, "record 4"},
		{"modified record and its stored hash", []string{
			`UPDATE audit_records SET data = CAST(replace(data, 'support-bot', 'other-bot') AS BLOB) WHERE seq = 5`,
			`DELETE FROM audit_hash_runs`}, "record"},
		{"deleted record", []string{`DELETE FROM audit_records WHERE seq = 7`}, "record 7"},
		{"swapped records", []string{
			`UPDATE audit_records SET seq = -1 WHERE seq = 9`,
			`UPDATE audit_records SET seq = 9 WHERE seq = 10`,
			`UPDATE audit_records SET seq = 10 WHERE seq = -1`}, "record 9"},
		{"inserted record", []string{
			`UPDATE audit_records SET seq = seq + 1 WHERE seq >= 12`, // make room (SQLite updates in rowid order may collide, so go via negatives)
		}, "record 12"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cp := copyDB(t, db)
			if c.name == "inserted record" {
				execSQL(t, cp,
					`UPDATE audit_records SET seq = -seq - 100 WHERE seq >= 12`,
					`UPDATE audit_records SET seq = -seq - 100 + 1 WHERE seq < -100`,
					`INSERT INTO audit_records (seq, action_id, data) SELECT 12, action_id, data FROM audit_records WHERE seq = 11`)
			} else {
				execSQL(t, cp, c.sql...)
			}
			code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp)
			if code == 0 || !strings.Contains(errs, c.first) {
				t.Fatalf("verify: exit %d, out %q, err %q", code, out, errs)
			}
		})
	}
	t.Run("truncated tail against a saved checkpoint", func(t *testing.T) {
		cp := copyDB(t, db)
		execSQL(t, cp, `DELETE FROM audit_records WHERE seq >= (SELECT MAX(size) FROM audit_checkpoints WHERE size <= 20)`,
			`DELETE FROM audit_checkpoints WHERE size > (SELECT MAX(seq) + 1 FROM audit_records)`)
		// Without the saved checkpoint the shorter log is self-consistent...
		if code, _, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp); code != 0 {
			t.Fatalf("self-consistent prefix should verify: %s", errs)
		}
		// ...and the saved checkpoint exposes the truncation.
		code, _, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp, "--checkpoint", saved)
		if code == 0 || !strings.Contains(errs, "truncated") {
			t.Fatalf("truncation not detected: %d %s", code, errs)
		}
	})
	t.Run("forged checkpoint", func(t *testing.T) {
		cp := copyDB(t, db)
		execSQL(t, cp, `UPDATE audit_checkpoints SET note = CAST(replace(note, 'agentg8 audit log', 'agentg8 audit log ') AS BLOB) WHERE size = (SELECT MAX(size) FROM audit_checkpoints)`)
		if code, _, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp); code == 0 || !strings.Contains(errs, "signature") {
			t.Fatalf("forged checkpoint accepted: %s", errs)
		}
	})
	code, out, _ = e.cli(nil, "audit", "tail", "--config", e.cfgPath, "-n", "3")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, "invalid") {
		t.Errorf("tail: %d %q", code, out)
	}
	code, out, _ = e.cli(nil, "audit", "export", "--config", e.cfgPath)
	if code != 0 || strings.Count(out, "\n") != 25 || !strings.HasPrefix(out, `{"seq":0,`) {
		t.Errorf("export: %d %q", code, out[:min(len(out), 200)])
	}
}

func TestAuditUnavailableMeansNothingExecutes(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	// The audit table starts refusing writes, as a full or failing disk would.
	execSQL(t, filepath.Join(e.dir, "data", "agentg8.db"),
		`CREATE TRIGGER audit_down BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'disk full'); END`)
	for _, task := range []string{"crm.get_customer", "crm.add_note", "crm.nope"} {
		st, p := e.propose(supportKey, task, map[string]any{"customer_id": "cus_1", "note": "x"})
		if st != 503 || p["code"] != "audit_unavailable" {
			t.Fatalf("%s: %d %v", task, st, p["_body"])
		}
	}
	if e.up.count() != 0 {
		t.Fatalf("upstream reached with audit down: %d", e.up.count())
	}
	// When the audit log recovers, so does the gateway.
	execSQL(t, filepath.Join(e.dir, "data", "agentg8.db"), `DROP TRIGGER audit_down`)
	if st, p := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("after recovery: %d %v", st, p["_body"])
	}
	e.stop()
	if code, _, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath); code != 0 {
		t.Fatalf("log after an outage must verify: %s", errs)
	}
}

// audit verify --since: a checkpoint saved by one verification is the
// starting point of the next, which reads only what was appended after it
// and saves the checkpoint it verified for the one after.
func TestAuditVerifySince(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	actions := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
				t.Fatalf("%d %v", st, a["_body"])
			}
		}
	}
	dir := t.TempDir()
	cp1, cp2 := filepath.Join(dir, "cp1"), filepath.Join(dir, "cp2")
	actions(3)
	e.stop()
	if code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--save-checkpoint", cp1); code != 0 || !strings.HasPrefix(out, "ok: 12 records") {
		t.Fatalf("first verify: %d %s %s", code, out, errs)
	}
	// Nothing appended since, but records the checkpoint covers gone (the
	// stored hashes left): caught at the boundary.
	db := filepath.Join(e.dir, "data", "agentg8.db")
	for _, q := range []string{`DELETE FROM audit_records WHERE seq >= 5`, `DELETE FROM audit_records WHERE seq = 11`,
		`UPDATE audit_records SET data = CAST(replace(data, 'support-bot', 'support-bxt') AS BLOB) WHERE seq = 11`} {
		cp := copyDB(t, db)
		execSQL(t, cp, q)
		if code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp, "--since", cp1); code == 0 || !strings.Contains(errs, "record 11") {
			t.Errorf("%s, then verify --since: %d %q %q", q, code, out, errs)
		}
	}
	e.start()
	actions(2)
	e.stop()
	code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--since", cp1, "--save-checkpoint", cp2)
	if code != 0 || !strings.HasPrefix(out, "ok: 20 records (8 after the trusted checkpoint at 12)") {
		t.Fatalf("since cp1: %d %s %s", code, out, errs)
	}
	if code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--since", cp2); code != 0 || !strings.HasPrefix(out, "ok: 20 records (0 after") {
		t.Fatalf("since cp2: %d %s %s", code, out, errs)
	}
	for _, c := range []struct {
		name, sql, want string
	}{
		{"a record after the trusted checkpoint changed", `UPDATE audit_records SET data = CAST(replace(data, 'support-bot', 'support-bxt') AS BLOB) WHERE seq = 15`, "record 15"},
		{"history rewritten with its hashes", `UPDATE audit_hash_runs SET hashes = zeroblob(length(hashes))`, "does not extend the trusted checkpoint"},
		{"truncated below the trusted checkpoint", `DELETE FROM audit_records WHERE seq >= 5`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := copyDB(t, db)
			execSQL(t, cp, c.sql)
			code, out, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp, "--since", cp1)
			if code == 0 || !strings.Contains(errs, "FAILED") || !strings.Contains(errs, c.want) {
				t.Fatalf("verify --since: %d %q %q", code, out, errs)
			}
		})
	}
	// The boundary: a record before the trusted checkpoint changed without
	// its stored hashes is for a full verify to find, not --since.
	cp := copyDB(t, db)
	execSQL(t, cp, `UPDATE audit_records SET data = CAST(replace(data, 'support-bot', 'support-bxt') AS BLOB) WHERE seq = 4`)
	if code, _, _ := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp, "--since", cp1); code != 0 {
		t.Errorf("--since re-read the trusted history")
	}
	if code, _, errs := e.cli(nil, "audit", "verify", "--config", e.cfgPath, "--store", "sqlite:"+cp); code == 0 || !strings.Contains(errs, "record 4") {
		t.Errorf("full verify: %d %s", code, errs)
	}
}
