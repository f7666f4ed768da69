package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8/store/storetest"
)

// cluster is a PostgreSQL cluster of one test's own.
type cluster struct {
	url string
	// ctl runs pg_ctl with the cluster's folder, log and options, then args.
	ctl func(args ...string)
}

// restart stops the cluster at once (as a crash would) and starts it again.
func (c cluster) restart() { c.ctl("-m", "immediate", "-w", "restart") }

// stop stops the cluster at once, as a crash would.
func (c cluster) stop() { c.ctl("-m", "immediate", "-w", "stop") }

// start starts a stopped cluster.
func (c cluster) start() { c.ctl("-w", "start") }

// ownCluster starts a PostgreSQL cluster of the test's own, so the test may
// restart or stop it without disturbing others.
func ownCluster(t *testing.T) cluster {
	t.Helper()
	if os.Getenv("AGENTG8_TEST_POSTGRES") == "" {
		pgDB(t) // fails in CI, skips locally
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL binaries not found")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "agentg8-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	run := func(args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		if os.Geteuid() == 0 {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
			if u, err := user.Lookup("postgres"); err == nil {
				uid, _ := strconv.Atoi(u.Uid)
				os.Chown(dir, uid, -1)
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %v\n%s", args, err, out)
		}
		return nil
	}
	if err := run(bin+"/initdb", "-D", dir+"/data", "-A", "trust", "-U", "agentg8"); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port, dir)
	if err := run(bin+"/pg_ctl", "-D", dir+"/data", "-l", dir+"/log", "-o", opts, "-w", "start"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run(bin+"/pg_ctl", "-D", dir+"/data", "-m", "immediate", "stop") })
	ctl := func(args ...string) {
		if err := run(append([]string{bin + "/pg_ctl", "-D", dir + "/data", "-l", dir + "/log", "-o", opts}, args...)...); err != nil {
			t.Error(err)
		}
	}
	return cluster{url: fmt.Sprintf("postgres://agentg8@127.0.0.1:%d/postgres?sslmode=disable", port), ctl: ctl}
}

// TestPostgresRestartUnderLoad: an immediate PostgreSQL restart during load
// loses no acknowledged action or approval; requests in flight complete or
// fail cleanly with a problem document.
func TestPostgresRestartUnderLoad(t *testing.T) {
	pg := ownCluster(t)
	p, e, cfg := serveOn(t, pg.url, "approvals:\n  max_pending_per_agent: 10000\n")

	type ack struct{ id, status, apr, hash string }
	var mu sync.Mutex
	var acks []ack
	bad := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var st int
				var a map[string]any
				if i%2 == 0 {
					st, a = e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": fmt.Sprintf("cus_%d_%d", w, i)})
				} else {
					st, a = e.propose(supportKey, "ops.wire", map[string]any{"amount": w*100000 + i})
				}
				mu.Lock()
				switch {
				case st == 200 || st == 202:
					k := ack{id: a["id"].(string), status: a["status"].(string)}
					if apr, ok := a["approval"].(map[string]any); ok {
						k.apr, k.hash = apr["id"].(string), apr["request_hash"].(string)
					}
					acks = append(acks, k)
				case a["code"] != nil:
					bad[a["code"].(string)]++ // a clean failure, with a problem code
				default:
					bad[fmt.Sprintf("unclean %d: %.80s", st, a["_body"])]++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	pg.restart()
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d acknowledged, failures %v", len(acks), bad)
	for k := range bad {
		if strings.HasPrefix(k, "unclean") {
			t.Errorf("unclean failure: %s", k)
		}
	}
	if len(acks) < 20 {
		t.Fatalf("too little load: %d", len(acks))
	}
	// Every acknowledged action is there, as acknowledged.
	approved := 0
	for _, k := range acks {
		_, g := e.do("GET", "/v1/actions/"+k.id, supportKey, nil)
		if g["status"] != k.status {
			t.Errorf("%s was %s, now %v", k.id, k.status, g["status"])
		}
		if k.apr != "" && approved < 5 {
			if st, d := e.approve(franKey, k.apr, k.hash, true); st != 200 {
				t.Errorf("approve after restart: %d %v", st, d["_body"])
			}
			approved++
		}
	}
	p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	if code, out, errs := (&testEnv{t: t}).cli(testEnvVars(), "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify: %s %s", out, errs)
	}
}

// TestPostgresOutage: while the database is down, a replica says it is not
// ready (so a load balancer sends nothing its way), every proposal fails
// cleanly with 503 audit_unavailable and reaches no upstream; once the
// database is back, the same process is ready and runs actions again
// without a restart; stopped while the database is down, it exits at
// once; and the log still verifies.
func TestPostgresOutage(t *testing.T) {
	pg := ownCluster(t)
	p, e, cfg := serveOn(t, pg.url, "")
	up := e.up
	client := &http.Client{Timeout: 5 * time.Second}
	ready := func() int {
		resp, err := client.Get(p.url + "/readyz")
		if err != nil {
			t.Fatalf("readyz did not answer: %v", err) // a hung check stalls the balancer
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	if st != 200 {
		t.Fatalf("before: %d %v", st, a["_body"])
	}
	done := a["id"].(string)
	pendID, aprID, hash := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 400000}))
	fran := consoleSignIn(t, p.url, franKey)
	agent := mcpSession(t, p.url, supportKey)
	if st, _ := fran.get("/console/"); st != 200 {
		t.Fatalf("console before: %d", st)
	}
	if st := ready(); st != 200 {
		t.Fatalf("readyz before: %d", st)
	}
	calls := up.count()

	pg.stop()
	waitFor(t, "readyz to answer 503", 10*time.Second, func() bool { return ready() == 503 })
	for i, c := range []struct {
		task  string
		input map[string]any
	}{
		{"crm.get_customer", map[string]any{"customer_id": "cus_2"}},
		{"crm.add_note", map[string]any{"customer_id": "cus_2", "note": "while down"}},
		{"ops.wire", map[string]any{"amount": 500000}}, // needs an approval
	} {
		st, a := e.propose(supportKey, c.task, c.input)
		if st != 503 || a["code"] != "audit_unavailable" {
			t.Errorf("proposal %d while the database is down: %d %v", i, st, a["_body"])
		}
	}
	// Everything else that needs the database says so the same way.
	for _, r := range []struct{ method, path, key string }{
		{"GET", "/v1/actions/" + done, supportKey},
		{"GET", "/v1/actions?limit=5", supportKey},
		{"GET", "/v1/approvals", franKey},
		{"GET", "/v1/approvals/" + aprID, franKey},
		{"POST", "/v1/actions/" + pendID + "/cancel", supportKey},
		{"GET", "/v1/audit?limit=5", aliceKey},
		{"GET", "/v1/audit/checkpoint", aliceKey},
	} {
		if st, a := e.do(r.method, r.path, r.key, nil); st != 503 || a["code"] != "audit_unavailable" {
			t.Errorf("%s %s while the database is down: %d %v", r.method, r.path, st, a["_body"])
		}
	}
	if st, d := e.approve(franKey, aprID, hash, true); st != 503 || d["code"] != "audit_unavailable" {
		t.Errorf("approve while the database is down: %d %v", st, d["_body"])
	}
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_2"}, "Idempotency-Key", "k1"); st != 503 || a["code"] != "audit_unavailable" {
		t.Errorf("idempotent proposal while the database is down: %d %v", st, a["_body"])
	}
	if n := up.count(); n != calls {
		t.Errorf("%d upstream calls while the database was down", n-calls)
	}
	// An agent over MCP is told to try again.
	res, err := agent.CallTool(t.Context(), &mcp.CallToolParams{Name: "crm.get_customer", Arguments: map[string]any{"customer_id": "cus_4"}})
	if err != nil || !res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "audit_unavailable: ") {
		t.Errorf("MCP tools/call while the database is down: %v %+v", err, res)
	}
	// A signed-in approver is told the store is unavailable, not sent to
	// sign in again.
	if st, body := fran.get("/console/"); st != 503 || !strings.Contains(body, "the store cannot be reached") {
		t.Errorf("console while the database is down: %d %.300s", st, body)
	}

	// A proposal sent on a pooled connection the crash had closed is in
	// doubt (the database might have committed it before it went down):
	// one per such connection is remembered, to settle. Proposals that
	// find no connection certainly wrote nothing and add none.
	held := e.metric("agentg8_unsettled_executions")
	for i := range 5 {
		if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": fmt.Sprint("cus_d", i)}); st != 503 {
			t.Errorf("proposal while down: %d %v", st, a["_body"])
		}
	}
	if v := e.metric("agentg8_unsettled_executions"); v != held {
		t.Errorf("agentg8_unsettled_executions went from %s to %s with proposals that reached no database", held, v)
	}
	pg.start()
	waitFor(t, "readyz to answer 200 again", 20*time.Second, func() bool { return ready() == 200 })
	// In-doubt intents are watched for a few seconds after the database
	// answers that they did not commit.
	waitFor(t, "nothing left to settle", 20*time.Second, func() bool { return e.metric("agentg8_unsettled_executions") == "0" })
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_3"}); st != 200 {
		t.Fatalf("after: %d %v", st, a["_body"])
	}
	if n := up.count(); n != calls+1 {
		t.Errorf("%d upstream calls after the database came back, want 1", n-calls)
	}
	if st, _ := fran.get("/console/"); st != 200 {
		t.Errorf("console after: %d", st)
	}
	// The approval taken before the outage still stands and can be given.
	if st, d := e.approve(franKey, aprID, hash, true); st != 200 {
		t.Errorf("approve after: %d %v", st, d["_body"])
	}
	waitFor(t, "the approved action", 10*time.Second, func() bool { return e.status(pendID) == "succeeded" })
	// Stopping while the database is down does not hang on it, and names
	// the action whose outcome it saw but could not record (the database
	// went down during its upstream call), for whoever settles it.
	entered, release := holdUpstream(e)
	inFlight := e.proposeLater(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_4", "note": "in flight"})
	waitEntered(t, entered, "the last proposal")
	pg.stop()
	close(release)
	a = await(t, inFlight, 40*time.Second, "the last proposal, with the database down,")
	act, _ := a["action"].(map[string]any)
	if a["_status"] != 503 || act == nil {
		t.Fatalf("the last proposal: %v %v", a["_status"], a["_body"])
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve still running 15 s after SIGINT with the database down")
	}
	if logs := p.logs.String(); !strings.Contains(logs, "stopping with an execution not recorded") || !strings.Contains(logs, act["id"].(string)) {
		t.Errorf("no log line names the unrecorded execution %s", act["id"])
	}
	// A gateway started on it seals whatever the stopped one left.
	pg.start()
	p2 := startProc(t, p.cmd.Path, cfg) // the same binary
	if code, out, errs := (&testEnv{t: t}).cli(testEnvVars(), "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify: %s %s", out, errs)
	}
	p2.cmd.Process.Signal(os.Interrupt)
	<-p2.done
}

// TestPostgresPartition: when the database stops answering without
// refusing (a network partition), /readyz still answers, 503, within its
// bound, so a load balancer takes the replica out instead of timing out;
// a proposal made meanwhile waits for the partition to heal and then
// completes, executed once; and the replica is ready again.
func TestPostgresPartition(t *testing.T) {
	proxy, db := storetest.NewProxy(t, storetest.PostgresDB(t))
	p, e, _ := serveOn(t, db, "")
	up := e.up
	client := &http.Client{Timeout: readyTimeout + 3*time.Second}
	ready := func() int {
		resp, err := client.Get(p.url + "/readyz")
		if err != nil {
			t.Fatalf("readyz did not answer: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("before: %d %v", st, a["_body"])
	}
	calls := up.count()

	proxy.Cut()
	if st := ready(); st != 503 {
		t.Fatalf("readyz during the partition: %d", st)
	}
	type answer struct {
		st int
		a  map[string]any
	}
	got := make(chan answer, 1)
	go func() {
		st, a := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_2"})
		got <- answer{st, a}
	}()
	waitFor(t, "the proposal's intent to reach the cut", 10*time.Second, func() bool { return proxy.Held() > 0 })
	if n := up.count(); n != calls {
		t.Fatalf("%d upstream calls before the intent was durable", n-calls)
	}
	proxy.Heal()
	select {
	case r := <-got:
		if r.st != 200 {
			t.Errorf("the proposal made during the partition: %d %v", r.st, r.a["_body"])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the proposal made during the partition did not complete after it healed")
	}
	if n := up.count(); n != calls+1 {
		t.Errorf("%d upstream calls for one proposal", n-calls)
	}
	waitFor(t, "readyz to answer 200 again", 10*time.Second, func() bool { return ready() == 200 })
}

// TestPartitionOutlastsTheAuditWriter: a partition longer than the audit
// writer's bound on a batch (30 s). The proposal waiting on it is answered
// 503 audit_unavailable, nothing having been sent; the intent, held in the
// network, may still reach the database when the partition heals (the
// proxy relays what it held, though its connection is closed by then), and
// the replica, which remembered that nothing was sent, then ends that
// action failed instead of leaving it executing. New proposals run once the
// partition heals.
func TestPartitionOutlastsTheAuditWriter(t *testing.T) {
	proxy, db := storetest.NewProxy(t, storetest.PostgresDB(t))
	_, e, _ := serveOn(t, db, "")
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "before"}); st != 200 {
		t.Fatalf("before: %d %v", st, a["_body"])
	}
	calls := e.up.count()
	proxy.Cut()
	start := time.Now()
	st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "during"})
	if st != 503 || a["code"] != "audit_unavailable" || time.Since(start) > 40*time.Second {
		t.Errorf("during the partition: %d after %v: %v", st, time.Since(start), a["_body"])
	}
	if n := e.up.count(); n != calls {
		t.Errorf("%d upstream calls during the partition", n-calls)
	}
	if v := e.metric("agentg8_unsettled_executions"); v != "1" {
		t.Errorf("agentg8_unsettled_executions during the partition: %s, want 1 (the intent in doubt)", v)
	}
	proxy.Heal()
	// The intent was sent; whether it reaches the database after the
	// writer gave up (relayed with its connection's close), and when, is
	// the network's business. Either way the replica settles what it
	// remembered: an action that exists is ended failed; none is fine.
	waitFor(t, "nothing left unsettled", 20*time.Second, func() bool { return e.metric("agentg8_unsettled_executions") == "0" })
	_, l := e.do("GET", "/v1/actions?task=crm.add_note", supportKey, nil)
	for _, x := range l["actions"].([]any) {
		if x := x.(map[string]any); x["input"].(map[string]any)["note"] == "during" {
			if x["status"] != "failed" || x["error"].(map[string]any)["code"] != "audit_unavailable" {
				t.Errorf("the intent that arrived late: %v %v", x["status"], x["error"])
			}
		}
	}
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "after"}); st != 200 {
		t.Errorf("after: %d %v", st, a["_body"])
	}
	if n := e.up.count(); n != calls+1 {
		t.Errorf("%d upstream calls after the partition, want 1 (the proposal made after it)", n-calls)
	}
}

// TestOutcomeRecordedAfterAnOutage: the database goes down while an
// action's upstream call is in flight, so its outcome cannot be recorded
// (the agent is told so, 503). The outage lasts longer than the audit
// log's seal grace (10 s, after which nothing is appended until a seal
// succeeds). Once the database is back, the replica is ready again without
// a restart and records the outcome it saw: the action reads succeeded,
// with its output, instead of waiting out its lease to read
// outcome_unknown; new proposals run.
func TestOutcomeRecordedAfterAnOutage(t *testing.T) {
	pg := ownCluster(t)
	p, e, cfg := serveOn(t, pg.url, "")
	up := e.up
	entered, release := holdUpstream(e)
	got := e.proposeLater(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "in flight"})
	waitEntered(t, entered, "the proposal")
	pg.stop()
	close(release)
	a := await(t, got, 40*time.Second, "the proposal, with the database down,")
	var id string
	if act, ok := a["action"].(map[string]any); ok {
		id, _ = act["id"].(string)
	}
	if a["_status"] != 503 || a["code"] != "audit_unavailable" || id == "" || !strings.Contains(a["detail"].(string), "once the store can be reached") {
		t.Fatalf("answer while the database is down: %v %v", a["_status"], a["_body"])
	}
	time.Sleep(12 * time.Second) // past the seal grace
	if st, _ := e.do("GET", "/readyz", "", nil); st != 503 {
		t.Errorf("readyz with the database down: %d", st)
	}
	pg.start()
	waitFor(t, "readyz to answer 200 again", 20*time.Second, func() bool {
		st, _ := e.do("GET", "/readyz", "", nil)
		return st == 200
	})
	waitFor(t, "the outcome to be recorded", 20*time.Second, func() bool { return e.status(id) == "succeeded" })
	if _, g := e.do("GET", "/v1/actions/"+id, supportKey, nil); g["output"] == nil || g["error"] != nil {
		t.Errorf("recorded outcome: %v", g["_body"])
	}
	if got := auditTypes(e, id); got != "proposed credential_issued executing succeeded" {
		t.Errorf("audit of the action: %s", got)
	}
	if n := up.count(); n != 1 {
		t.Errorf("%d upstream calls", n)
	}
	up.setHandler(nil)
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "after"}); st != 200 || up.count() != 2 {
		t.Errorf("after the outage: %d %v", st, a["_body"])
	}
	p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	if code, out, errs := (&testEnv{t: t}).cli(testEnvVars(), "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify: %s %s", out, errs)
	}
}

// TestUnconfirmedIntentEndsNotSent: an intent record the database commits
// but whose answer the network loses leaves an action executing that no
// one sent. The replica knows it sent nothing, answers 503, and once the
// database answers again ends the action failed ("not sent") instead of
// leaving it to read outcome_unknown when its lease runs out.
func TestUnconfirmedIntentEndsNotSent(t *testing.T) {
	direct := storetest.PostgresDB(t)
	proxy, db := storetest.NewProxy(t, direct)
	p, e, cfg := serveOn(t, db, "")
	up := e.up
	conn, err := pgx.Connect(t.Context(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	proxy.CutAnswersAfter("unconfirmed") // the note, in the intent's records
	got := e.proposeLater(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "unconfirmed"})
	var id string
	waitFor(t, "the intent to commit", 10*time.Second, func() bool {
		return conn.QueryRow(t.Context(), `SELECT id FROM actions WHERE status = 'executing'`).Scan(&id) == nil
	})
	proxy.Drop() // the commit's answer is lost with its connection
	if a := await(t, got, 40*time.Second, "the proposal whose connection was dropped"); a["_status"] != 503 || a["code"] != "audit_unavailable" {
		t.Fatalf("answer to the unconfirmed proposal: %v %v", a["_status"], a["_body"])
	}
	if v := e.metric("agentg8_unsettled_executions"); v != "1" && e.status(id) == "executing" {
		t.Errorf("agentg8_unsettled_executions after the lost answer: %s", v)
	}
	waitFor(t, "the action to end failed", 10*time.Second, func() bool { return e.status(id) == "failed" })
	_, g := e.do("GET", "/v1/actions/"+id, supportKey, nil)
	if ge, _ := g["error"].(map[string]any); ge == nil || ge["code"] != "audit_unavailable" || !strings.HasPrefix(ge["message"].(string), "not sent") {
		t.Errorf("the action's error: %v", g["_body"])
	}
	if got := auditTypes(e, id); got != "proposed credential_issued executing failed" {
		t.Errorf("audit of the action: %s", got)
	}
	if n := up.count(); n != 0 {
		t.Errorf("%d upstream calls for an action never sent", n)
	}
	if v := e.metric("agentg8_unsettled_executions"); v != "0" {
		t.Errorf("agentg8_unsettled_executions once settled: %s", v)
	}
	// The replica carries on.
	if st, a := e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "after"}); st != 200 || up.count() != 1 {
		t.Errorf("after: %d %v (%d upstream calls)", st, a["_body"], up.count())
	}
	p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	if code, out, errs := (&testEnv{t: t}).cli(testEnvVars(), "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify: %s %s", out, errs)
	}
}

// serveOn starts agentg8 serve (the built binary) on the PostgreSQL store
// at db, with a recording upstream; extra is appended to the config.
func serveOn(t *testing.T, db, extra string) (*proc, *testEnv, string) {
	t.Helper()
	bin := buildBinary(t)
	up := newRecorder(t)
	cfg := writeConfig(t, t.TempDir(), up.srv.URL, envOpts{allowPrivate: true, extraConfig: extra})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: "+db)
	p := startProc(t, bin, cfg)
	return p, &testEnv{t: t, url: p.url, up: up}, cfg
}

// TestNotSentDoesNotEndARetry: an intent lost with its connection after
// it was sent leaves the replica unsure whether it committed; it remembers
// that nothing was sent, to end the action failed if it did. Here it did
// not, and a retry under the same Idempotency-Key runs the action under
// the same ID — which the remembered "not sent" must not end: each attempt
// holds its lease under its own name, and settling requires the lease. A
// trigger refuses the settling until the retry is under way, so that the
// settling is tried against the retry's execution.
func TestNotSentDoesNotEndARetry(t *testing.T) {
	direct := storetest.PostgresDB(t)
	proxy, db := storetest.NewProxy(t, direct)
	_, e, _ := serveOn(t, db, "")
	conn, err := pgx.Connect(t.Context(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`CREATE FUNCTION refuse_failed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'settling refused by the test'; END $$`,
		`CREATE TRIGGER refuse_failed BEFORE UPDATE ON actions FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION refuse_failed()`,
	} {
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	in := map[string]any{"customer_id": "cus_1", "note": "retried"}
	proxy.CutAt("retried") // the note, in the intent's records
	first := e.proposeLater(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	waitFor(t, "the intent to reach the cut", 10*time.Second, func() bool { return proxy.Held() > 0 })
	proxy.Drop() // sent, and lost with its connection: in doubt
	if a := await(t, first, 40*time.Second, "the first attempt"); a["_status"] != 503 || a["code"] != "audit_unavailable" {
		t.Fatalf("first attempt: %v %v", a["_status"], a["_body"])
	}
	entered, release := holdUpstream(e)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the upstream's Close, which waits for it
	got := e.proposeLater(supportKey, "crm.add_note", in, "Idempotency-Key", "k")
	select {
	case <-entered:
	case a := <-got:
		t.Fatalf("the retry answered without reaching the upstream: %v %v", a["_status"], a["_body"])
	}
	var id string
	if err := conn.QueryRow(t.Context(), `SELECT id FROM actions WHERE status = 'executing'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `DROP TRIGGER refuse_failed ON actions`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // two sweeps try to settle the first attempt
	if st := e.status(id); st != "executing" {
		t.Errorf("the retry's execution was ended while in flight: %s", st)
	}
	free()
	if a := await(t, got, 10*time.Second, "the retry"); a["_status"] != 200 || a["status"] != "succeeded" || a["id"] != id {
		t.Errorf("retry: %v %v", a["_status"], a["_body"])
	}
	if got := auditTypes(e, id); got != "proposed credential_issued executing succeeded" {
		t.Errorf("audit of the action: %s", got)
	}
	if n := e.up.count(); n != 1 {
		t.Errorf("%d upstream calls", n)
	}
}

// TestOutcomeOutlivesItsLease: the database is down longer than the
// execution lease (2 s here; a failover can take 30 s) while one of two
// replicas holds an outcome it could not record. When the database is
// back, the other replica finds the lease expired — but waits a few sweeps
// after the store's return before taking anything over, so the holder
// records the outcome it saw instead of the action ending outcome_unknown.
// A trigger refuses the outcome for the first 1.5 s after the database is
// back (the holder being slower than the other replica to get through).
func TestOutcomeOutlivesItsLease(t *testing.T) {
	pg := ownCluster(t)
	p, e, cfg := serveOn(t, pg.url, "execution:\n  lease_ttl: 2s\n")
	other := startProc(t, p.cmd.Path, cfg) // the same binary and config
	e2 := &testEnv{t: t, url: other.url}
	sqlDo := func(q string) {
		t.Helper()
		conn, err := pgx.Connect(t.Context(), pg.url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	sqlDo(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outcome refused by the test'; END $$`)
	entered, release := holdUpstream(e)
	got := e.proposeLater(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "outlives"})
	waitEntered(t, entered, "the proposal")
	sqlDo(`CREATE TRIGGER refuse BEFORE UPDATE ON actions FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION refuse()`)
	pg.stop()
	close(release)
	a := await(t, got, 40*time.Second, "the proposal, with the database down,")
	act, _ := a["action"].(map[string]any)
	if a["_status"] != 503 || act == nil {
		t.Fatalf("answer while the database is down: %v %v", a["_status"], a["_body"])
	}
	id := act["id"].(string)
	time.Sleep(4 * time.Second) // two lease lifetimes
	pg.start()
	time.Sleep(1500 * time.Millisecond)
	sqlDo(`DROP TRIGGER refuse ON actions`)
	waitFor(t, "the action to end", 20*time.Second, func() bool {
		st := e2.status(id)
		return st != "" && st != "executing"
	})
	if st := e2.status(id); st != "succeeded" {
		t.Errorf("after the outage: %s", st)
	}
	if got := auditTypes(e2, id); got != "proposed credential_issued executing succeeded" {
		t.Errorf("audit of the action: %s", got)
	}
}
