package main

import (
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
	db := pg.url
	bin := buildBinary(t)
	up := newRecorder(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true, extraConfig: "approvals:\n  max_pending_per_agent: 10000\n"})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: "+db)
	p := startProc(t, bin, cfg)
	e := &testEnv{t: t, url: p.url}

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
	bin := buildBinary(t)
	up := newRecorder(t)
	cfg := writeConfig(t, t.TempDir(), up.srv.URL, envOpts{allowPrivate: true})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: "+pg.url)
	p := startProc(t, bin, cfg)
	e := &testEnv{t: t, url: p.url}
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

	pg.start()
	waitFor(t, "readyz to answer 200 again", 20*time.Second, func() bool { return ready() == 200 })
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
	// Stopping while the database is down does not hang on it.
	pg.stop()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve still running 15 s after SIGINT with the database down")
	}
	// A gateway started on it seals whatever the stopped one left.
	pg.start()
	p2 := startProc(t, bin, cfg)
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
	bin := buildBinary(t)
	up := newRecorder(t)
	cfg := writeConfig(t, t.TempDir(), up.srv.URL, envOpts{allowPrivate: true})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: "+db)
	p := startProc(t, bin, cfg)
	e := &testEnv{t: t, url: p.url}
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
