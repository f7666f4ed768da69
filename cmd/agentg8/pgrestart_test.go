package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ownCluster starts a PostgreSQL cluster of the test's own, so the test may
// restart it without disturbing others. It returns the URL and a restart func.
func ownCluster(t *testing.T) (string, func()) {
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
	restart := func() {
		if err := run(bin+"/pg_ctl", "-D", dir+"/data", "-l", dir+"/log", "-o", opts, "-m", "immediate", "-w", "restart"); err != nil {
			t.Error(err)
		}
	}
	return fmt.Sprintf("postgres://agentg8@127.0.0.1:%d/postgres?sslmode=disable", port), restart
}

// TestPostgresRestartUnderLoad: an immediate PostgreSQL restart during load
// loses no acknowledged action or approval; requests in flight complete or
// fail cleanly with a problem document.
func TestPostgresRestartUnderLoad(t *testing.T) {
	db, restart := ownCluster(t)
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
	restart()
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
