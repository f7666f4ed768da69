package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agentg8/agentg8/store/storetest"
)

// On PostgreSQL no secret — a credential the gateway resolved, a stored
// secret, a token it minted, an API key it was shown — reaches the
// database in any form: not in its rows (pg_dump), not in its files, not
// in the write-ahead log it wrote meanwhile (dead row versions and deleted
// rows included), not among the parameters of any statement (the server
// logs them all), even when the upstream echoes the secret back. A marker
// sent the same way as the secrets is found in each, so the scans can fail.
func TestSecretsNeverReachPostgres(t *testing.T) {
	db := storetest.PostgresDB(t)
	pgDump := pgTool(t, "pg_dump")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var startLSN, dbName string
	if err := admin.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, current_database()`).Scan(&startLSN, &dbName); err != nil {
		t.Fatal(err)
	}
	// The server logs every statement on this database with its
	// parameters, failing ones too (operators turn this on to debug):
	// nothing the gateway sends may hold a secret either.
	serverLog, logFrom := postgresLog(t, admin)
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{dbName}.Sanitize()+` SET log_min_duration_statement = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{dbName}.Sanitize()+` SET log_parameter_max_length_on_error = -1`); err != nil {
		t.Fatal(err)
	}

	const stored = "stored-crm-key-456"
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true,
		extraConfig: "secrets:\n  key: env:SECRETS_KEY\n",
		extraCreds:  mintedCreds + "  stored: {type: api_key, secret: \"store:crm-key\", header: X-Api-Key}\n",
		extraTasks: mintedTasks + `
- {name: s.stored, description: Uses a stored secret., risk: read, input: {type: object, properties: {x: {type: string}}}, credential: stored, request: {method: GET, url: "UPSTREAM/s"}}
`})
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+db)
	e.env["SECRETS_KEY"] = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	m := NewMain()
	var o syncBuffer
	m.Stdout, m.Stderr, m.LookupEnv, m.Stdin = &o, &o, lookup(e.env), strings.NewReader(stored+"\n")
	if code := m.Run(t.Context(), []string{"secrets", "set", "crm-key", "--config", e.cfgPath}); code != 0 {
		t.Fatalf("secrets set: %s", o.String())
	}
	e.start()

	// Every upstream echoes what authenticated it, plainly and encoded.
	ju := &jwtUpstream{seen: map[string]bool{}, jwks: e.url + "/.well-known/jwks.json", aud: e.up.srv.URL}
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/int/") {
			ju.handler(w, r)
			return
		}
		got := r.Header.Get("Authorization") + r.Header.Get("X-Api-Key")
		w.Header().Set("Content-Type", "application/json")
		if r.Method == "POST" {
			w.WriteHeader(500) // an error body that repeats the key
		}
		json.NewEncoder(w).Encode(map[string]any{"echo": got, "b64": base64.StdEncoding.EncodeToString([]byte(got)), "hex": hex.EncodeToString([]byte(got))})
	})
	const marker = "pg-scan-marker-7f3a9c"
	var responses []string
	check := func(what string, st int, a map[string]any, want int) {
		t.Helper()
		if st != want {
			t.Fatalf("%s: %d %v", what, st, a["_body"])
		}
		responses = append(responses, a["_body"].(string))
	}
	st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	check("api key", st, a, 200)
	st, a = e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": marker})
	check("failing write", st, a, 502)
	st, a = e.propose(supportKey, "s.stored", map[string]any{"x": marker})
	check("stored secret", st, a, 200)
	st, a = e.propose(supportKey, "int.read", map[string]any{"x": marker})
	check("minted token", st, a, 200)
	id, aprID, hash := e.pend(e.propose(supportKey, "int.write", map[string]any{"x": marker}))
	e.approve(franKey, aprID, hash, true)
	waitFor(t, "the approved write", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	_, a = e.do("GET", "/v1/actions/"+id, supportKey, nil)
	responses = append(responses, a["_body"].(string))
	e.stop()
	if got := e.up.last().Header.Get("Authorization"); !strings.HasPrefix(got, "Bearer ey") || len(ju.tokens) != 2 {
		t.Fatalf("the approved write did not use a minted token (%.12q…, %d tokens)", got, len(ju.tokens))
	}

	secrets := append([]string{crmSecret, stored, supportKey, franKey}, ju.tokens...)
	assertAbsent(t, e, strings.Join(responses, "\n"), secrets...)

	// The database's rows, as a backup holds them.
	// bytea in escape format keeps stored text readable (hex hides it).
	cmd := exec.Command(pgDump, "--dbname="+db)
	cmd.Env = append(os.Environ(), "PGOPTIONS=-c bytea_output=escape")
	dump, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	assertScanned(t, "pg_dump", dump, marker, secrets)

	// Its files: the write-ahead log written since the test began — from
	// the position it began at to the last flushed one, as recycled
	// segments beyond hold older writes (read before the checkpoint, which
	// may recycle more) — then, after a checkpoint has written every page,
	// the database's own files.
	var dir, oid, from, to string
	var fromOff, toOff int
	if err := admin.QueryRow(ctx, `SELECT current_setting('data_directory'), (SELECT oid::text FROM pg_database WHERE datname = current_database()),
		a.file_name, a.file_offset, b.file_name, b.file_offset
		FROM pg_walfile_name_offset($1::pg_lsn) a, pg_walfile_name_offset(pg_current_wal_flush_lsn()) b`, startLSN).Scan(&dir, &oid, &from, &fromOff, &to, &toOff); err != nil {
		t.Fatal(err)
	}
	wal, err := os.ReadDir(filepath.Join(dir, "pg_wal"))
	if errors.Is(err, fs.ErrPermission) && os.Getenv("CI") == "" {
		t.Skipf("cannot read PostgreSQL's files as this user (%v); CI runs this part as root", err)
	} else if err != nil {
		t.Fatal(err)
	}
	var walBytes []byte
	for _, f := range wal { // segment names sort by position
		if n := f.Name(); len(n) == 24 && n >= from && n <= to {
			b, err := os.ReadFile(filepath.Join(dir, "pg_wal", n))
			if err != nil {
				t.Fatal(err)
			}
			if n == to {
				b = b[:min(toOff, len(b))]
			}
			if n == from {
				b = b[min(fromOff, len(b)):]
			}
			walBytes = append(walBytes, b...)
		}
	}
	assertScanned(t, "the write-ahead log", walBytes, marker, secrets)
	if _, err := admin.Exec(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	var files []byte
	filepath.WalkDir(filepath.Join(dir, "base", oid), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, b...)
		}
		return nil
	})
	assertScanned(t, "the database's files", files, marker, secrets)

	// The server's log since the test began (bytea parameters are logged
	// in hex, which assertScanned looks for too).
	if serverLog == "" {
		t.Skip("PostgreSQL's log file was not found (the cluster scripts/pg-test.sh starts has one); CI scans it")
	}
	f, err := os.Open(serverLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(logFrom, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(hex.EncodeToString([]byte(marker)))) {
		t.Errorf("the server log (%d bytes) does not hold the marker in hex: statements were not logged with their parameters", len(b))
	}
	assertScanned(t, "the server log", b, "execute", secrets)
}

// postgresLog returns the test cluster's log file and its size now: the
// logging collector's current file, else the file scripts/pg-test.sh has
// pg_ctl write beside the data folder. On CI a missing log fails the test.
func postgresLog(t *testing.T, admin *pgx.Conn) (string, int64) {
	t.Helper()
	var dir string
	var current *string
	if err := admin.QueryRow(context.Background(), `SELECT current_setting('data_directory'), pg_current_logfile()`).Scan(&dir, &current); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(dir), "log")
	if current != nil {
		path = *current
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL's log: %v", err)
		}
		return "", 0
	}
	return path, info.Size()
}

// assertScanned fails if data holds any secret in a common encoding, or
// does not hold marker (then the scan proves nothing).
func assertScanned(t *testing.T, what string, data []byte, marker string, secrets []string) {
	t.Helper()
	if !bytes.Contains(data, []byte(marker)) {
		t.Errorf("%s (%d bytes) does not hold the marker: the scan would miss a secret too", what, len(data))
	}
	for _, s := range secrets {
		for _, f := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s)), hex.EncodeToString([]byte(s)), url.QueryEscape(s)} {
			if bytes.Contains(data, []byte(f)) {
				t.Errorf("secret form %.20q… in %s", f, what)
			}
		}
	}
}

// pgTool finds a PostgreSQL client program: on PATH, else in the newest
// Debian server package (where scripts/pg-test.sh finds initdb).
func pgTool(t *testing.T, name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	// Versions sort as numbers: shorter first, then by text.
	slices.SortFunc(found, func(a, b string) int { return cmp.Or(len(a)-len(b), strings.Compare(a, b)) })
	if len(found) == 0 {
		t.Fatalf("%s not found (Debian's postgresql package has it)", name)
	}
	return found[len(found)-1]
}

// The backup procedure docs/deployment.md gives for PostgreSQL, with the
// real tools: a pg_dump restored into a new database verifies against the
// checkpoint saved with it, and a gateway started on it continues the log;
// an older backup restored is caught as truncated by a later checkpoint; a
// record changed after the restore is named.
func TestAuditBackupAndRestoreOnPostgres(t *testing.T) {
	db := storetest.PostgresDB(t)
	pgDump, pgRestore := pgTool(t, "pg_dump"), pgTool(t, "pg_restore")
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true})
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+db)
	e.start()
	dir := t.TempDir()
	actions := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
				t.Fatalf("%d %v", st, a["_body"])
			}
		}
	}
	verify := func(store string, args ...string) (int, string) {
		t.Helper()
		code, out, errs := e.cli(nil, append([]string{"audit", "verify", "--config", e.cfgPath, "--store", store}, args...)...)
		return code, out + errs
	}
	backup := func(name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if out, err := exec.Command(pgDump, "--format=custom", "--file="+p, "--dbname="+db).CombinedOutput(); err != nil {
			t.Fatalf("pg_dump: %v: %s", err, out)
		}
		return p
	}
	restore := func(dump string) string {
		t.Helper()
		to := storetest.PostgresDB(t)
		if out, err := exec.Command(pgRestore, "--no-owner", "--exit-on-error", "--dbname="+to, dump).CombinedOutput(); err != nil {
			t.Fatalf("pg_restore: %v: %s", err, out)
		}
		return to
	}

	actions(3)
	cp1 := filepath.Join(dir, "cp1")
	if code, out := verify(db, "--save-checkpoint", cp1); code != 0 {
		t.Fatalf("verify: %s", out)
	}
	old := backup("old.dump")
	actions(3)
	cp2 := filepath.Join(dir, "cp2")
	if code, out := verify(db, "--save-checkpoint", cp2); code != 0 {
		t.Fatalf("verify: %s", out)
	}
	e.stop()
	latest := backup("latest.dump")

	// The latest backup verifies against the checkpoint saved with it.
	restored := restore(latest)
	if code, out := verify(restored, "--checkpoint", cp2); code != 0 || !strings.Contains(out, "ok:") {
		t.Fatalf("restored backup: %d %s", code, out)
	}
	// Incrementally too: from the first checkpoint, reading what came after.
	if code, out := verify(restored, "--since", cp1, "--checkpoint", cp2); code != 0 || !strings.Contains(out, "after the trusted checkpoint") {
		t.Fatalf("restored backup, since cp1: %d %s", code, out)
	}
	// The older one is self-consistent, and the later checkpoint shows it
	// lost the tail.
	older := restore(old)
	if code, out := verify(older, "--checkpoint", cp1); code != 0 {
		t.Fatalf("older backup against its checkpoint: %d %s", code, out)
	}
	if code, out := verify(older, "--checkpoint", cp2); code == 0 || !strings.Contains(out, "truncated") {
		t.Fatalf("older backup against a later checkpoint: %d %s", code, out)
	}
	// A gateway on the restored database appends to the same log.
	replaceIn(t, e.cfgPath, "store: "+db, "store: "+restored)
	e.start()
	actions(2)
	e.stop()
	if code, out := verify(restored, "--checkpoint", cp2); code != 0 {
		t.Fatalf("after appending to the restored log: %d %s", code, out)
	}
	// Tampering after a restore is named.
	conn, err := pgx.Connect(context.Background(), restored)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE audit_records SET data = replace(convert_from(data, 'UTF8'), 'support-bot', 'support-bxt')::bytea WHERE seq = 4`); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(restored); code == 0 || !strings.Contains(out, "record 4") {
		t.Fatalf("tampered record: %d %s", code, out)
	}
}

// Replicas can run as a role granted only what the gateway does: `migrate
// --grant` (as the schema's owner) gives it that; serve then starts
// without touching the schema, runs actions, approvals and seals, and the
// role can neither change nor remove an audit record, hash or checkpoint,
// nor alter the schema. Before the owner migrates, serve as that role
// says what to run.
func TestRuntimeRole(t *testing.T) {
	db := storetest.PostgresDB(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	role := "agentg8_rt_" + hex.EncodeToString(b)
	if _, err := owner.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, db); err == nil {
			c.Exec(ctx, "DROP OWNED BY "+role)
			c.Exec(ctx, "DROP ROLE "+role)
			c.Close(ctx)
		}
	})
	u, _ := url.Parse(db)
	u.User = url.User(role)
	runtime := u.String()

	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true})
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+runtime)
	if code, _, errs := e.cli(testEnvVars(), "serve", "--config", e.cfgPath); code == 0 || !strings.Contains(errs, "agentg8 migrate --store") {
		t.Fatalf("serve as the runtime role on an empty database: %d %s", code, errs)
	}
	// The owner (here also a superuser) cannot be limited: refused.
	if code, _, errs := e.cli(testEnvVars(), "migrate", "--config", e.cfgPath, "--store", db, "--grant", "agentg8"); code == 0 || !strings.Contains(errs, "no grant can limit it") {
		t.Fatalf("migrate --grant to the owner: %d %s", code, errs)
	}
	code, out, errs := e.cli(testEnvVars(), "migrate", "--config", e.cfgPath, "--store", db, "--grant", role)
	if code != 0 || !strings.Contains(out, "granted "+role) || strings.Contains(out+errs, db) {
		t.Fatalf("migrate --grant: %d %s %s", code, out, errs)
	}

	e.start()
	if strings.Contains(e.logs.String(), "could change or delete audit records") {
		t.Errorf("a bounded role was warned about: %s", e.logs.String())
	}
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("allowed read: %d %v", st, a["_body"])
	}
	id, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 7}))
	e.approve(franKey, aprID, hash, true)
	waitFor(t, "the approved wire", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	e.stop()
	if code, out, errs := e.cli(testEnvVars(), "audit", "verify", "--config", e.cfgPath); code != 0 || !strings.HasPrefix(out, "ok:") {
		t.Fatalf("verify as the runtime role: %d %s %s", code, out, errs)
	}

	rt, err := pgx.Connect(ctx, runtime)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	for _, q := range []string{
		`UPDATE audit_records SET data = data WHERE seq = 1`,
		`DELETE FROM audit_records WHERE seq = 1`,
		`TRUNCATE audit_records`,
		`UPDATE audit_checkpoints SET note = note`,
		`DELETE FROM audit_checkpoints`,
		`UPDATE audit_hash_runs SET hashes = hashes`,
		`DELETE FROM audit_hash_runs`,
		`ALTER TABLE audit_records DISABLE TRIGGER ALL`,
		`DROP TABLE audit_records`,
		`CREATE TABLE x (y int)`,
		`DELETE FROM actions`,
		`DELETE FROM schema_migrations`,
	} {
		_, err := rt.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" && pe.Code != "42P01" {
			t.Errorf("%s as the runtime role: %v, want permission denied", q, err)
		}
	}
	var n int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM audit_records`).Scan(&n); err != nil || n < 8 {
		t.Errorf("audit records: %d %v", n, err)
	}
	// A privilege missing (as after an upgrade that added a table, before
	// migrate --grant ran again): refused at start, naming it.
	if _, err := owner.Exec(ctx, "REVOKE INSERT ON token_keys FROM "+role); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := e.cli(testEnvVars(), "serve", "--config", e.cfgPath); code == 0 || !strings.Contains(errs, "lacks INSERT on token_keys") {
		t.Errorf("serve with a privilege missing: %d %s", code, errs)
	}
}

// On PostgreSQL /metrics shows the replica's connection pool: its size,
// its connections by state, and how many acquires had to wait.
func TestPostgresPoolMetrics(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true})
	db := storetest.PostgresDB(t)
	u, _ := url.Parse(db)
	q := u.Query()
	q.Set("pool_max_conns", "20")
	u.RawQuery = q.Encode()
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+u.String())
	e.start()
	for i := 0; i < 3; i++ {
		if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
			t.Fatalf("%d %v", st, a["_body"])
		}
	}
	_, m := e.do("GET", "/metrics", "", nil)
	metrics := map[string]float64{}
	for _, line := range strings.Split(m["_body"].(string), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "agentg8_store_") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			metrics[name] = f
		}
	}
	if metrics["agentg8_store_connections_max"] != 20 || metrics["agentg8_store_acquires_total"] < 6 {
		t.Errorf("pool metrics: %v", metrics)
	}
	for _, k := range []string{`agentg8_store_connections{state="acquired"}`, `agentg8_store_connections{state="idle"}`, "agentg8_store_acquire_waits_total", "agentg8_store_acquire_seconds_total"} {
		if _, ok := metrics[k]; !ok {
			t.Errorf("no %s in %v", k, metrics)
		}
	}
	if metrics[`agentg8_store_connections{state="idle"}`] < 1 {
		t.Errorf("no idle connection after the requests: %v", metrics)
	}
	// The database names the gateway's connections (its LISTEN one too).
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitFor(t, "the gateway's listening connection, named agentg8", 10*time.Second, func() bool {
		var named int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'agentg8' AND query LIKE 'LISTEN %'`).Scan(&named)
		return err == nil && named == 1
	})
}

// A store URL can list several hosts, as for a cluster with a standby:
// pgx tries them in order and, with target_session_attrs=read-write, keeps
// to the primary. The gateway starts and runs with the first host down.
func TestMultiHostStoreURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	u, _ := url.Parse(storetest.PostgresDB(t))
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()
	multi := strings.Replace(u.String(), "@"+u.Host, "@"+down+","+u.Host, 1)
	if !strings.Contains(multi, down+","+u.Host) {
		t.Fatalf("no second host in %s", multi)
	}
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true})
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+multi)
	e.start()
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	if st, _ := e.do("GET", "/readyz", "", nil); st != 200 {
		t.Errorf("readyz: %d", st)
	}
	// The test cluster's role is a superuser: serve says what that allows.
	if !strings.Contains(e.logs.String(), "agentg8, a superuser: it could change or delete audit records") {
		t.Errorf("no warning about an unbounded role: %s", e.logs.String())
	}
	// Every host is on this machine: sslmode=disable is nothing to warn of.
	if strings.Contains(e.logs.String(), "not verified") {
		t.Errorf("a warning about the transport to loopback hosts: %s", e.logs.String())
	}
}

// TestServeWarnsOfWeakSSLMode: a store URL naming a host on another
// machine with an sslmode that does not verify the server starts, and says
// so in serve's log at start. The remote host is a fallback (TEST-NET-1,
// never dialled, since the test cluster answers first).
func TestServeWarnsOfWeakSSLMode(t *testing.T) {
	u, _ := url.Parse(storetest.PostgresDB(t))
	if u.Query().Get("sslmode") != "disable" {
		t.Fatalf("the test cluster's URL should say sslmode=disable: %s", u.Redacted())
	}
	const remote = "192.0.2.1:5432"
	multi := strings.Replace(u.String(), "@"+u.Host, "@"+u.Host+","+remote, 1)
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true})
	replaceIn(t, e.cfgPath, "store: sqlite:data/agentg8.db", "store: "+multi)
	e.start()
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	logs := e.logs.String()
	for _, want := range []string{"the store's connection is not verified", "sslmode=disable lets the connection to 192.0.2.1 be unencrypted"} {
		if !strings.Contains(logs, want) {
			t.Errorf("serve's log lacks %q: %s", want, logs)
		}
	}
}
