package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles agentg8 once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentg8")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan error
}

var listenRE = regexp.MustCompile(`"msg":"agentg8 listening","addr":"([^"]+)"`)

func startProc(t *testing.T, bin, cfg string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfg)
	env := os.Environ()
	for k, v := range testEnvVars() {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start: %s", p.logs.String())
	}
	return p
}

func TestKillDuringUpstreamCallNeverExecutesTwice(t *testing.T) {
	bin := buildBinary(t)
	up := newRecorder(t)
	var calls atomic.Int32
	entered := make(chan struct{}, 1)
	up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		entered <- struct{}{}
		<-r.Context().Done() // hang until the gateway dies
	})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true, extraConfig: "execution:\n  resolvers: [auditors]\n"})
	p := startProc(t, bin, cfg)

	go func() {
		body, _ := json.Marshal(map[string]any{"task": "crm.add_note", "input": map[string]any{"customer_id": "cus_1", "note": "once"}})
		req, _ := http.NewRequest("POST", p.url+"/v1/actions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+supportKey)
		http.DefaultClient.Do(req)
	}()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("upstream never called")
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done

	// Restart on the same store: the in-flight action is outcome_unknown and
	// nothing is retried.
	p2 := startProc(t, bin, cfg)
	if !strings.Contains(p2.logs.String(), "outcome_unknown") {
		t.Errorf("restart should report interrupted actions: %s", p2.logs.String())
	}
	req, _ := http.NewRequest("GET", p2.url+"/v1/actions?task=crm.add_note", nil)
	req.Header.Set("Authorization", "Bearer "+supportKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Actions []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"actions"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Actions) != 1 || list.Actions[0].Status != "outcome_unknown" {
		t.Fatalf("after restart: %+v", list.Actions)
	}
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times", n)
	}

	// A resolver (alice, in auditors) settles it after checking the CRM;
	// agents, other users, bad outcomes and silent resolutions are refused,
	// and settling runs nothing.
	id := list.Actions[0].ID
	e2 := &testEnv{t: t, url: p2.url}
	path := "/v1/actions/" + id + "/resolve"
	for _, c := range []struct {
		key  string
		body map[string]any
		want int
	}{
		{supportKey, map[string]any{"outcome": "succeeded", "comment": "checked"}, 403},
		{franKey, map[string]any{"outcome": "succeeded", "comment": "checked"}, 403},
		{aliceKey, map[string]any{"outcome": "maybe", "comment": "checked"}, 400},
		{aliceKey, map[string]any{"outcome": "succeeded", "comment": "  "}, 400},
		{aliceKey, map[string]any{"outcome": "succeeded", "comment": "note is in the CRM (ticket 42)"}, 200},
		{aliceKey, map[string]any{"outcome": "failed", "comment": "again"}, 409},
		// The same settling again (its answer lost, say) answers 200; the first stands.
		{aliceKey, map[string]any{"outcome": "succeeded", "comment": "retried"}, 200},
	} {
		if st, out := e2.do("POST", path, c.key, c.body); st != c.want {
			t.Errorf("resolve as %s with %v: %d %v", c.key[:8], c.body, st, out)
		}
	}
	_, got := e2.do("GET", "/v1/actions/"+id, supportKey, nil)
	res, _ := got["resolution"].(map[string]any)
	if got["status"] != "succeeded" || got["error"] != nil || res["user"] != "alice" || res["comment"] != "note is in the CRM (ticket 42)" {
		t.Errorf("settled action: %v", got)
	}
	_, ev := e2.do("GET", "/v1/audit?action_id="+id, aliceKey, nil)
	if b, _ := json.Marshal(ev); !strings.Contains(string(b), `"type":"outcome_resolved"`) || !strings.Contains(string(b), `"user":"alice"`) {
		t.Errorf("audit lacks the resolution: %s", b)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("settling called the upstream: %d calls", n)
	}

	// SIGTERM shuts down gracefully with exit 0.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p2.done:
		if err != nil {
			t.Fatalf("SIGTERM exit: %v\n%s", err, p2.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	// The log, with the crash in it, still verifies.
	e := &testEnv{t: t}
	if code, out, errs := e.cli(testEnvVars(), "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("verify after crash: %s %s", out, errs)
	}
	_, out, _ := e.cli(testEnvVars(), "audit", "export", "--config", cfg)
	if !strings.Contains(out, `"type":"outcome_unknown"`) || !strings.Contains(out, `"type":"executing"`) {
		t.Errorf("audit lacks executing/outcome_unknown: %s", out)
	}
}

// TestApprovalsSurviveKill: a pending approval survives SIGKILL and can be
// approved after the restart; an action left approved (but not yet run) by
// a stop is executed by the next start.
func TestApprovalsSurviveKill(t *testing.T) {
	bin := buildBinary(t)
	up := newRecorder(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, up.srv.URL, envOpts{allowPrivate: true})
	p := startProc(t, bin, cfg)
	e := &testEnv{t: t, url: p.url}
	idA, aprA, hashA := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 1}))
	idB, _, _ := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 2}))
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done

	// B was approved by a process that died before running it.
	db := filepath.Join(dir, "data", "agentg8.db")
	execSQL(t, db, `UPDATE actions SET status = 'approved', version = version + 1,
		data = CAST(json_set(data, '$.status', 'approved', '$.approval.status', 'approved',
		'$.approval.decisions', json('[{"user":"fran","decision":"approve","at":"2026-01-01T00:00:00Z"}]')) AS BLOB) WHERE id = '`+idB+`'`)

	p2 := startProc(t, bin, cfg)
	e.url = p2.url
	waitFor(t, "B to run after restart", 10*time.Second, func() bool { return e.status(idB) == "succeeded" })
	if st, d := e.approve(franKey, aprA, hashA, true); st != 200 || d["status"] != "approved" {
		t.Fatalf("approve after restart: %d %v", st, d["_body"])
	}
	waitFor(t, "A to run", 10*time.Second, func() bool { return e.status(idA) == "succeeded" })
	if up.count() != 2 {
		t.Fatalf("upstream calls: %d", up.count())
	}
}
