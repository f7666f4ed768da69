package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentg8/agentg8/store/storetest"
)

// Keys and secrets used by the end-to-end tests.
const (
	supportKey = "ag8_support_bot_test_key_0123456789abcdef"
	otherKey   = "ag8_other_bot_test_key_0123456789abcdef"
	aliceKey   = "ag8_alice_user_test_key_0123456789abcdef"
	franKey    = "ag8_fran_user_test_key_0123456789abcdef"
	fredKey    = "ag8_fred_user_test_key_0123456789abcdef"
	crmSecret  = "sk_live_S3cr3t+Value/With=Chars&More"
)

// recorder is a real HTTP upstream that records every request it receives.
type recorder struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []recorded
	handler http.HandlerFunc
}

type recorded struct {
	Method, Path, RawPath, RawQuery string
	Header                          http.Header
	Body                            []byte
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: b})
		h := rec.handler
		rec.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "path": r.URL.Path, "note": map[string]any{"id": 7, "text": "stored"}, "internal_ref": "secret-ref"})
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// all is a snapshot of every request so far.
func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func (r *recorder) last() recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[len(r.reqs)-1]
}

func (r *recorder) setHandler(h http.HandlerFunc) {
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const testTasks = `
- name: crm.get_customer
  description: Read a customer.
  risk: read
  input:
    type: object
    required: [customer_id]
    additionalProperties: false
    properties:
      customer_id: {type: string, minLength: 1, maxLength: 200}
      q: {type: string}
  resource: Customer::"${input.customer_id}"
  credential: crm
  request:
    method: GET
    url: UPSTREAM/customers/${input.customer_id}?q=${input.q}&fixed=1
  output:
    redact: [/internal_ref]
- name: crm.add_note
  description: Add a note.
  risk: write
  input:
    type: object
    required: [customer_id, note]
    additionalProperties: false
    properties:
      customer_id: {type: string, pattern: "^cus_[0-9]+$"}
      note: {type: string, minLength: 1, maxLength: 5000}
      priority: {type: integer}
  resource: Customer::"${input.customer_id}"
  credential: crm
  request:
    method: POST
    url: UPSTREAM/customers/${input.customer_id}/notes
    headers: {X-Note-Title: "note for ${input.customer_id}", X-Note: "${input.note}"}
    body: {text: "${input.note}", author: "${principal.id}", priority: "${input.priority}", summary: "p=${input.customer_id}"}
    idempotency_header: Idempotency-Key
  preview:
    side_effects: ["Adds a note to ${input.customer_id}."]
    current: {method: GET, url: "UPSTREAM/customers/${input.customer_id}"}
    patch:
      - {op: add, path: /notes/-, value: {text: "${input.note}"}}
  output:
    select: /note
    redact: [/internal_ref]
- name: crm.delete_customer
  description: Delete a customer.
  risk: destructive
  input: {type: object, properties: {customer_id: {type: string}}}
  credential: crm
  request: {method: DELETE, url: "UPSTREAM/customers/${input.customer_id}"}
- name: ops.slow
  description: An upstream that may be slow.
  risk: read
  input: {type: object}
  credential: crm
  request: {method: GET, url: "UPSTREAM/slow", timeout: 300ms}
- name: ops.broken
  description: A task whose forbid policy errors at runtime.
  risk: write
  input: {type: object, properties: {x: {type: integer}}}
  request: {method: POST, url: "UPSTREAM/broken", body: {x: "${input.x}"}}
- name: ops.refund
  description: Refund that needs approval when big.
  risk: write
  input: {type: object, required: [amount], properties: {amount: {type: integer}, ref: {type: string}}}
  request: {method: POST, url: "UPSTREAM/refund", body: {amount: "${input.amount}", ref: "${input.ref}"}}
  preview:
    side_effects: ["Refunds ${input.amount} cents."]
- name: ops.wire
  description: A transfer that always needs approval.
  risk: destructive
  input: {type: object, properties: {amount: {type: integer}}}
  approval: always
  approvers: [finance]
  request: {method: POST, url: "UPSTREAM/wire", body: {amount: "${input.amount}"}}
`

const testPolicies = `
@id("support-crm")
permit (principal in Group::"support", action in Action::"crm", resource);

@id("support-ops")
permit (principal in Group::"support", action in Action::"ops", resource);

@id("support-extra")
permit (principal in Group::"support", action in [Action::"int", Action::"notes", Action::"s", Action::"te"], resource);

@id("no-deletes")
forbid (principal, action == Action::"crm.delete_customer", resource);

// context.input.missing does not exist: evaluating this forbid is an error.
@id("broken-forbid")
forbid (principal, action == Action::"ops.broken", resource) when { context.input.missing == 1 };

@id("big-refunds") @approval("finance")
permit (principal, action == Action::"ops.refund", resource) when { context.input.amount > 1000 };

@id("huge-refunds") @approval("finance") @quorum("2")
permit (principal, action == Action::"ops.refund", resource) when { context.input.amount > 100000 };

@id("note-approval") @approval("finance")
permit (principal, action == Action::"crm.add_note", resource) when { context.input.note like "*needs approval*" };

@id("act-for-alice")
permit (principal in Group::"support", action == Action::"crm.get_customer", resource) when { context has user && context.user in Group::"support" };
`

type envOpts struct {
	allowPrivate bool
	extraConfig  string
	// extraCreds are YAML lines added under credentials:; extraTasks a
	// YAML list of tasks (UPSTREAM is replaced).
	extraCreds string
	extraTasks string
	noStart    bool
	clock      *testClock
}

// testClock is a settable clock for expiry tests.
type testClock = storetest.Clock

func newTestClock(t time.Time) *testClock { return storetest.NewClock(t) }

// testEnv is a real server on 127.0.0.1:0 with a temp SQLite store and a
// recording upstream.
type testEnv struct {
	opts     envOpts
	t        *testing.T
	dir      string
	cfgPath  string
	url      string
	up       *recorder
	logs     *syncBuffer
	stop     func()
	env      map[string]string
	stopped  chan struct{}
	exitCode int
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t testing.TB, dir, upstream string, o envOpts) string {
	writeFile(t, filepath.Join(dir, "tasks", "tasks.yaml"), strings.ReplaceAll(testTasks, "UPSTREAM", upstream))
	writeFile(t, filepath.Join(dir, "policies", "main.cedar"), testPolicies)
	writeFile(t, filepath.Join(dir, "secrets", "crm"), crmSecret+"\n")
	if o.extraTasks != "" {
		writeFile(t, filepath.Join(dir, "tasks", "extra.yaml"), strings.ReplaceAll(o.extraTasks, "UPSTREAM", upstream))
	}
	cfg := `listen: 127.0.0.1:0
store: sqlite:data/agentg8.db
agents:
  - {id: support-bot, key: "env:SUPPORT_KEY", groups: [support], act_for: [support]}
  - {id: other-bot, key: "env:OTHER_KEY", groups: [nobody]}
users:
  - {id: alice, groups: [support, auditors, finance], key: "env:ALICE_KEY", email: alice@example.com, subject: id1}
  - {id: fran, groups: [finance], key: "env:FRAN_KEY", email: fran@example.com}
  - {id: fred, groups: [finance], key: "env:FRED_KEY", email: fred@example.com}
  - {id: olga, groups: [outsiders]}
  - {id: sam, groups: [support], subject: id2}
credentials:
  crm: {type: api_key, secret: "file:secrets/crm", header: Authorization, format: "Bearer {secret}"}
EXTRACREDSegress:
  allow_private: ALLOW
audit:
  signing_key: file:data/audit.key
  auditors: [auditors]
` + o.extraConfig
	cfg = strings.Replace(cfg, "EXTRACREDS", o.extraCreds, 1)
	cfg = strings.Replace(cfg, "ALLOW", map[bool]string{true: "true", false: "false"}[o.allowPrivate], 1)
	p := filepath.Join(dir, "agentg8.yaml")
	writeFile(t, p, cfg)
	return p
}

func testEnvVars() map[string]string {
	return map[string]string{"SUPPORT_KEY": supportKey, "OTHER_KEY": otherKey, "ALICE_KEY": aliceKey, "FRAN_KEY": franKey, "FRED_KEY": fredKey}
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func newTestEnv(t *testing.T, o envOpts) *testEnv {
	t.Helper()
	e := &testEnv{t: t, opts: o, dir: t.TempDir(), up: newRecorder(t), logs: &syncBuffer{}, env: testEnvVars()}
	e.cfgPath = writeConfig(t, e.dir, e.up.srv.URL, o)
	if !o.noStart {
		e.start()
	}
	return e
}

func (e *testEnv) start() {
	t := e.t
	m := NewMain()
	m.Stdout, m.Stderr, m.LookupEnv = e.logs, e.logs, lookup(e.env)
	if e.stop != nil {
		e.stop()
	}
	if e.opts.clock != nil {
		m.Clock = e.opts.clock
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stopped = make(chan struct{})
	go func() {
		e.exitCode = m.Run(ctx, []string{"serve", "--config", e.cfgPath, "--log-level", "debug"})
		close(e.stopped)
	}()
	select {
	case <-m.Ready():
	case <-e.stopped:
		t.Fatalf("server exited early (code %d): %s", e.exitCode, e.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	e.url = "http://" + m.Addr()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			<-e.stopped
		})
	}
	t.Cleanup(e.stop)
}

// do sends a request with a bearer key and decodes the JSON answer.
func (e *testEnv) do(method, path, key string, body any, hdr ...string) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"_raw": string(raw)}
	}
	out["_body"] = string(raw)
	out["_ctype"] = resp.Header.Get("Content-Type")
	return resp.StatusCode, out
}

func (e *testEnv) propose(key, task string, input any, hdr ...string) (int, map[string]any) {
	e.t.Helper()
	return e.do("POST", "/v1/actions", key, map[string]any{"task": task, "input": input}, hdr...)
}

// cli runs an agentg8 command in-process.
func (e *testEnv) cli(env map[string]string, args ...string) (int, string, string) {
	var out, errb syncBuffer
	m := NewMain()
	m.Stdout, m.Stderr, m.LookupEnv = &out, &errb, lookup(env)
	code := m.Run(context.Background(), args)
	return code, out.String(), errb.String()
}

// proposeLater proposes in the background; the answer arrives on the
// channel with its HTTP status as "_status".
func (e *testEnv) proposeLater(key, task string, input map[string]any, hdr ...string) <-chan map[string]any {
	ch := make(chan map[string]any, 1)
	go func() {
		st, a := e.propose(key, task, input, hdr...)
		a["_status"] = st
		ch <- a
	}()
	return ch
}

// await is the answer from ch, failing the test after d.
func await(t *testing.T, ch <-chan map[string]any, d time.Duration, what string) map[string]any {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(d):
		t.Fatalf("%s did not answer within %s", what, d)
		return nil
	}
}

// waitEntered waits for a held upstream to receive its request.
func waitEntered(t *testing.T, entered <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not reach the upstream", what)
	}
}

// openSQLite opens the test gateway's SQLite database beside it.
func (e *testEnv) openSQLite() *sql.DB {
	e.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "data", "agentg8.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

// metric is the value of an unlabelled metric on /metrics, or "absent".
func (e *testEnv) metric(name string) string {
	_, m := e.do("GET", "/metrics", "", nil)
	for _, l := range strings.Split(m["_body"].(string), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "absent"
}

// auditTypes lists the types of an action's audit events, in order.
func auditTypes(e *testEnv, id string) string {
	_, ev := e.do("GET", "/v1/audit?action_id="+id, aliceKey, nil)
	var types []string
	for _, x := range ev["events"].([]any) {
		types = append(types, x.(map[string]any)["type"].(string))
	}
	return strings.Join(types, " ")
}

// lossyHows are the ways a lossyProxy loses an answer.
var lossyHows = []string{"before the answer", "mid-body", "while running"}

// lossyProxy stands between a client and the gateway and loses the first
// answer to each request whose body carries a marker (a note, a comment; a
// transport fault: the gateway and the client are the real ones): before
// the answer, in the middle of it, or while the gateway still runs the
// call.
type lossyProxy struct {
	url  string
	mu   sync.Mutex
	how  map[string]string // marker → how its first answer is lost
	seen map[string]int    // marker → requests carrying it
}

func newLossyProxy(t *testing.T, gateway string) *lossyProxy {
	target, _ := url.Parse(gateway)
	gw := httputil.NewSingleHostReverseProxy(target)
	p := &lossyProxy{how: map[string]string{}, seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		how := ""
		p.mu.Lock()
		for marker, h := range p.how {
			if bytes.Contains(body, []byte(marker)) {
				if p.seen[marker]++; p.seen[marker] == 1 {
					how = h
				}
			}
		}
		p.mu.Unlock()
		if how == "" {
			gw.ServeHTTP(w, r)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		if how == "while running" {
			// The gateway goes on with the call; its answer is lost.
			go gw.ServeHTTP(httptest.NewRecorder(), r.WithContext(context.WithoutCancel(r.Context())))
			time.Sleep(100 * time.Millisecond)
			return
		}
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, r)
		if how == "mid-body" {
			res := rec.Result()
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", res.Header.Get("Content-Type"), rec.Body.Len())
			conn.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
		}
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// lose makes the proxy lose the first answer to the request with this
// marker; "while running" also makes the upstream take a second.
func (p *lossyProxy) lose(e *testEnv, marker, how string) {
	p.mu.Lock()
	p.how[marker] = how
	p.mu.Unlock()
	if how == "while running" {
		e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Second)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"ok":true}`))
		})
	} else {
		e.up.setHandler(nil)
	}
}

// attempts is how many requests carried the marker.
func (p *lossyProxy) attempts(marker string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[marker]
}

// effects is how many upstream calls carried the note.
func (p *lossyProxy) effects(e *testEnv, note string) int {
	n := 0
	for _, r := range e.up.all() {
		if bytes.Contains(r.Body, []byte(note)) {
			n++
		}
	}
	return n
}
