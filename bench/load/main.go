// Command load measures what AgentG8 adds to an allowed read action. In one
// run it drives the same upstream three ways — directly, through a plain
// httputil.ReverseProxy, and through AgentG8 (a real `agentg8 serve`
// process on SQLite) — with the same concurrency and duration, and prints
// requests/s, latency percentiles and the ratios between them. It then
// compares MCP tools/call against a plain go-sdk echo server (its own
// process) and the same action over REST, and with -pg, 1 and 3 replicas on
// PostgreSQL against single-row inserts; those phases run at every
// -concurrency given.
//
// All traffic stays on 127.0.0.1, and every loop is bounded in time.
package main

import (
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentg8/agentg8/store/postgres"
)

const (
	upstreamKey = "sk_load_upstream_key_123456"
	agentKey    = "ag8_load_agent_key_0123456789abcdef"
)

func main() {
	dur := flag.Duration("duration", 5*time.Second, "measurement time per target")
	concList := flag.String("concurrency", "16,64", "concurrent clients: the first value for the proxy comparison, each value for the MCP and PostgreSQL phases")
	pg := flag.String("pg", "", "PostgreSQL admin URL: also measure 1 and 3 replicas on PostgreSQL")
	only := flag.String("only", "", "comma-separated targets to run (default all), e.g. \"agentg8 mcp\" while profiling")
	flag.Parse()
	if os.Getenv(echoEnv) != "" {
		serveEcho()
	}
	for _, t := range strings.Split(*only, ",") {
		if t = strings.TrimSpace(t); t != "" {
			selected[t] = true
		}
	}
	var concs []int
	for _, c := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			log.Fatalf("-concurrency: %q is not a positive number", c)
		}
		concs = append(concs, n)
	}
	if err := run(*dur, concs); err != nil {
		log.Fatal(err)
	}
	if *pg != "" {
		// Capacity: each side's best rate over the concurrencies measured,
		// as the MCP phase compares peaks.
		peak := map[string]float64{}
		at := map[string]int{}
		for _, c := range concs {
			res, err := pgPhase(*pg, *dur, c)
			if err != nil {
				log.Fatal(err)
			}
			for name, r := range res {
				if r > peak[name] {
					peak[name], at[name] = r, c
				}
			}
		}
		if len(concs) > 1 {
			fmt.Printf("\npeak rates: inserts %.0f/s (%d clients); 1 replica %.0f actions/s (%d clients): %.2f; 3 replicas %.0f actions/s (%d clients): %.2f\n",
				peak[pgBaseline], at[pgBaseline], peak[pgReplicas(1)], at[pgReplicas(1)], peak[pgReplicas(1)]/peak[pgBaseline],
				peak[pgReplicas(3)], at[pgReplicas(3)], peak[pgReplicas(3)]/peak[pgBaseline])
		}
	}
}

func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(ln)
	return "http://" + ln.Addr().String(), func() { s.Close() }, nil
}

func run(dur time.Duration, concs []int) error {
	conc := concs[0]
	body := []byte(`{"id":"cus_1","name":"Ada Lovelace","plan":"enterprise","notes":[]}`)
	upURL, stopUp, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	if err != nil {
		return err
	}
	defer stopUp()
	upstream, _ := url.Parse(upURL)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(upstream)
		pr.Out.Header.Set("Authorization", "Bearer "+upstreamKey)
	}}
	proxyURL, stopProxy, err := serve(rp)
	if err != nil {
		return err
	}
	defer stopProxy()

	gwURL, stopGW, err := startGateway(upURL)
	if err != nil {
		return err
	}
	defer stopGW()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * slices.Max(concs)}}
	get := func(u string) func() (*http.Request, error) {
		return func() (*http.Request, error) {
			r, err := http.NewRequest("GET", u, nil)
			if err == nil {
				r.Header.Set("Authorization", "Bearer "+upstreamKey)
			}
			return r, err
		}
	}
	fmt.Printf("load: %d concurrent clients, %s per target, allowed read action, 2-core machine\n\n", conc, dur)
	res := runTargets(client, gwURL, "req/s", conc, dur, []target{
		{"direct", get(upURL + "/customers/cus_1")},
		{"reverse proxy", get(proxyURL + "/customers/cus_1")},
		{"agentg8", proposeReq(func() string { return gwURL })},
	})
	d, p, g := res["direct"], res["reverse proxy"], res["agentg8"]
	defer func() {
		// Each server's best rate over the concurrencies measured: the echo
		// server is CPU-bound and slows as clients pile up, the gateway's
		// group commit gains from them.
		peak := map[string]float64{}
		at := map[string]int{}
		for _, c := range concs {
			for name, r := range mcpPhase(client, gwURL, c, dur) {
				if r.rps > peak[name] {
					peak[name], at[name] = r.rps, c
				}
			}
		}
		if len(concs) > 1 && peak["go-sdk echo"] > 0 {
			fmt.Printf("\npeak calls/s: go-sdk echo %.0f (%d clients), agentg8 mcp %.0f (%d clients): ratio %.2f\n",
				peak["go-sdk echo"], at["go-sdk echo"], peak["agentg8 mcp"], at["agentg8 mcp"], peak["agentg8 mcp"]/peak["go-sdk echo"])
		}
	}()
	fmt.Printf("\nratios (same run):\n")
	fmt.Printf("  reverse proxy / direct throughput   %.2f\n", p.rps/d.rps)
	fmt.Printf("  agentg8 / direct throughput         %.2f\n", g.rps/d.rps)
	fmt.Printf("  agentg8 / reverse proxy throughput  %.2f\n", g.rps/p.rps)
	fmt.Printf("  added p50 latency vs direct: proxy %s, agentg8 %s\n", (p.p50 - d.p50).Round(time.Microsecond), (g.p50 - d.p50).Round(time.Microsecond))
	if g.errors > 0 || d.errors > 0 || p.errors > 0 {
		return fmt.Errorf("errors during the run")
	}
	return nil
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
}

// selected are the targets -only names; empty runs every target.
var selected = map[string]bool{}

func measure(c *http.Client, mk func() (*http.Request, error), conc int, dur time.Duration) result {
	call := func() error {
		r, err := mk()
		if err != nil {
			return err
		}
		resp, err := c.Do(r)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	// Warm up connections and caches, then measure.
	for warm := time.Now().Add(dur / 5); time.Now().Before(warm); {
		call()
	}
	return measureFn(conc, dur, call)
}

var listenRE = regexp.MustCompile(`"msg":"agentg8 listening","addr":"([^"]+)"`)

// startGateway builds agentg8 and runs it on a temp SQLite store.
func startGateway(upstream string) (string, func(), error) {
	g, err := startGateways(upstream, "sqlite:agentg8.db", 1)
	if err != nil {
		return "", nil, err
	}
	return g.urls[0], g.stop, nil
}

// gateways are replicas started by startGateways.
type gateways struct {
	urls []string
	pids []int
	stop func()
}

// peakRSS is each replica's peak resident memory so far, in MiB (0 where
// the system does not say).
func (g *gateways) peakRSS() []float64 {
	out := make([]float64, len(g.pids))
	for i, pid := range g.pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				out[i] = kb / 1024
			}
		}
	}
	return out
}

// startGateways runs n replicas sharing one config folder (and so one audit
// key and token keys) on the given store.
func startGateways(upstream, store string, n int) (*gateways, error) {
	dir, err := os.MkdirTemp("", "agentg8-load-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "agentg8")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/agentg8").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build: %v\n%s", err, out)
	}
	files := map[string]string{
		"agentg8.yaml": `listen: 127.0.0.1:0
store: ` + store + `
agents: [{id: load-bot, key: "file:agent.key", groups: [support]}]
credentials:
  crm: {type: api_key, secret: "file:crm.key", header: Authorization, format: "Bearer {secret}"}
egress: {allow_private: true}
`,
		"agent.key": agentKey,
		"crm.key":   upstreamKey,
		"tasks/crm.yaml": `name: crm.get_customer
description: Read a customer.
risk: read
input: {type: object, required: [customer_id], properties: {customer_id: {type: string, pattern: "^cus_[0-9]+$"}}}
credential: crm
request: {method: GET, url: "` + upstream + `/customers/${input.customer_id}"}
`,
		"policies/p.cedar": `@id("support-read") permit (principal in Group::"support", action in Action::"crm", resource);`,
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	g := &gateways{}
	var stops []func()
	g.stop = func() {
		for _, st := range stops {
			st()
		}
		os.RemoveAll(dir)
	}
	for i := 0; i < n; i++ {
		u, pid, st, err := startOne(bin, dir)
		if err != nil {
			g.stop()
			return nil, err
		}
		g.urls, g.pids, stops = append(g.urls, u), append(g.pids, pid), append(stops, st)
	}
	return g, nil
}

func startOne(bin, dir string) (string, int, func(), error) {
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(dir, "agentg8.yaml"), "--log-level", "info")
	cmd.Stdout = os.Stdout
	pr, err := cmd.StderrPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
				break
			}
		}
		// The gateway logs every action; drain the rest without parsing it,
		// so that reading logs costs the load generator next to nothing.
		io.Copy(io.Discard, pr)
	}()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	select {
	case a := <-addr:
		var out map[string]any
		req, _ := http.NewRequest("POST", "http://"+a+"/v1/actions", bytes.NewReader(proposeBody))
		req.Header.Set("Authorization", "Bearer "+agentKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			stop()
			return "", 0, nil, err
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if out["status"] != "succeeded" {
			stop()
			return "", 0, nil, fmt.Errorf("gateway smoke test: %v", out)
		}
		return "http://" + a, cmd.Process.Pid, stop, nil
	case <-time.After(60 * time.Second):
		stop()
		return "", 0, nil, fmt.Errorf("gateway did not start")
	}
}

// pgBaseline and pgReplicas name pgPhase's results.
const pgBaseline = "baseline"

func pgReplicas(n int) string { return fmt.Sprintf("agentg8, %d replica(s)", n) }

// pgPhase measures allowed actions/s through 1 and 3 replicas on one
// PostgreSQL database, against independent single-row inserts on the same
// database in the same run, and returns the rates by name. Its databases
// are dropped when it returns.
func pgPhase(admin string, dur time.Duration, conc int) (map[string]float64, error) {
	ctx := context.Background()
	body := []byte(`{"id":"cus_1"}`)
	upURL, stopUp, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	if err != nil {
		return nil, err
	}
	defer stopUp()
	var made []string
	defer func() {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			log.Printf("drop load databases: %v", err)
			return
		}
		defer c.Close(ctx)
		for _, name := range made {
			if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				log.Printf("drop %s: %v", name, err)
			}
		}
	}()
	db := func() (string, error) {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return "", err
		}
		defer c.Close(ctx)
		name := fmt.Sprintf("agentg8_load_%d", time.Now().UnixNano())
		if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return "", err
		}
		made = append(made, name)
		u, _ := url.Parse(admin)
		u.Path = "/" + name
		return u.String(), nil
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc * 2}}
	fmt.Printf("\nPostgreSQL: allowed read actions, %d concurrent clients, %s per target\n\n", conc, dur)
	fmt.Printf("%-24s %10s %10s %10s %10s %14s\n", "target", "req/s", "p50", "p99", "errors", "peak RSS MiB")
	res := map[string]float64{}
	// Baseline: independent durable single-row inserts, same concurrency,
	// over one connection per client and, beyond a gateway's pool
	// (postgres.MinConns) of clients, also over that many: many backends on
	// a small machine do worse than a few, and the ceiling is the higher
	// rate (as storetest.CeilingConns). The pool is sized
	// explicitly: pgxpool's default (4 connections on a small machine)
	// would throttle it.
	conns := []int{conc}
	if conc > postgres.MinConns {
		conns = append(conns, postgres.MinConns)
	}
	for _, n := range conns {
		u, err := db()
		if err != nil {
			return nil, err
		}
		cfg, err := pgxpool.ParseConfig(u)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = int32(n)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if _, err := pool.Exec(ctx, `CREATE TABLE t (id BIGSERIAL PRIMARY KEY, data BYTEA)`); err != nil {
			pool.Close()
			return nil, err
		}
		// Every connection is open before the clock starts.
		open := make([]*pgxpool.Conn, n)
		for i := range open {
			if open[i], err = pool.Acquire(ctx); err != nil {
				pool.Close()
				return nil, err
			}
		}
		for _, c := range open {
			c.Release()
		}
		base := measureFn(conc, dur, func() error { _, err := pool.Exec(ctx, `INSERT INTO t (data) VALUES ($1)`, proposeBody); return err })
		pool.Close()
		res[pgBaseline] = max(res[pgBaseline], base.rps)
		fmt.Printf("%-24s %10.0f %10s %10s %10d\n", fmt.Sprintf("inserts, %d conns", n), base.rps, base.p50.Round(time.Microsecond), base.p99.Round(time.Microsecond), base.errors)
	}
	for _, n := range []int{1, 3} {
		u, err := db()
		if err != nil {
			return nil, err
		}
		g, err := startGateways(upURL, u, n)
		if err != nil {
			return nil, err
		}
		var i atomic.Int64
		before := make([]writerStats, n)
		for j, u := range g.urls {
			before[j] = auditStats(client, u)
		}
		r := measure(client, proposeReq(func() string { return g.urls[int(i.Add(1))%n] }), conc, dur)
		name := pgReplicas(n)
		res[name] = r.rps
		var rss []string
		for _, m := range g.peakRSS() {
			rss = append(rss, fmt.Sprintf("%.0f", m))
		}
		fmt.Printf("%-24s %10.0f %10s %10s %10d %14s\n", name, r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errors, strings.Join(rss, ", "))
		for j, u := range g.urls {
			auditStats(client, u).since(before[j], r, dur)
		}
		g.stop()
		if r.errors > 0 {
			return nil, fmt.Errorf("%s: errors during the run", name)
		}
	}
	fmt.Printf("\nratios (same run): 1 replica / inserts %.2f, 3 replicas / inserts %.2f\n",
		res[pgReplicas(1)]/res[pgBaseline], res[pgReplicas(3)]/res[pgBaseline])
	return res, nil
}

// target is one thing to load: a name and how to build its request.
type target struct {
	name string
	req  func() (*http.Request, error)
}

// runTargets measures each selected target in turn and prints a row per
// target; after each gateway target (named agentg8…) it prints what the
// gateway's audit writer did.
func runTargets(client *http.Client, gwURL, unit string, conc int, dur time.Duration, targets []target) map[string]result {
	fmt.Printf("%-14s %10s %10s %10s %10s\n", "target", unit, "p50", "p99", "errors")
	res := map[string]result{}
	for _, tg := range targets {
		if len(selected) > 0 && !selected[tg.name] {
			continue
		}
		before := auditStats(client, gwURL)
		r := measure(client, tg.req, conc, dur)
		res[tg.name] = r
		fmt.Printf("%-14s %10.0f %10s %10s %10d\n", tg.name, r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errors)
		if strings.HasPrefix(tg.name, "agentg8") {
			auditStats(client, gwURL).since(before, r, dur)
		}
	}
	return res
}

// writerStats are the gateway's audit group-commit counters.
type writerStats struct{ busy, batches, events float64 }

var metricRE = regexp.MustCompile(`(?m)^(agentg8_audit_append_seconds_sum|agentg8_audit_batch_events_count|agentg8_audit_batch_events_sum) (\S+)$`)

// auditStats reads the audit writer's counters from the gateway's /metrics.
func auditStats(c *http.Client, base string) writerStats {
	var w writerStats
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return w
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range metricRE.FindAllStringSubmatch(string(b), -1) {
		var v float64
		fmt.Sscan(m[2], &v)
		switch m[1] {
		case "agentg8_audit_append_seconds_sum":
			w.busy = v
		case "agentg8_audit_batch_events_count":
			w.batches = v
		case "agentg8_audit_batch_events_sum":
			w.events = v
		}
	}
	return w
}

// since prints what the audit writer did between before and w, which
// includes the warm-up (a fifth of dur) before the measured run.
func (w writerStats) since(before writerStats, r result, dur time.Duration) {
	busy, batches, events := w.busy-before.busy, w.batches-before.batches, w.events-before.events
	if batches == 0 {
		return
	}
	wall := (dur + dur/5).Seconds()
	fmt.Printf("%-14s audit writer busy %.0f%%, %.1f events/batch, %.0f batches/s\n", "", 100*busy/wall, events/batches, batches/wall)
}

// measureFn runs op from conc goroutines for dur.
func measureFn(conc int, dur time.Duration, op func() error) result {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				t := time.Now()
				if op() != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat, errs = append(lat, mine...), errs+bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)]
	}
	return result{rps: float64(len(lat)) / time.Since(start).Seconds(), p50: pct(0.5), p99: pct(0.99), errors: errs}
}

// proposeReq builds the load's allowed read proposal for the gateway base()
// names (one, or the next replica).
func proposeReq(base func() string) func() (*http.Request, error) {
	return func() (*http.Request, error) {
		r, err := http.NewRequest("POST", base()+"/v1/actions", bytes.NewReader(proposeBody))
		if err == nil {
			r.Header.Set("Authorization", "Bearer "+agentKey)
		}
		return r, err
	}
}

var proposeBody = []byte(`{"task":"crm.get_customer","input":{"customer_id":"cus_1"}}`)

// echoEnv makes this program serve the echo server instead (see startEcho).
const echoEnv = "AGENTG8_LOAD_ECHO_SERVER"

// serveEcho runs a plain go-sdk echo server (stateless, JSON responses) and
// prints its address; it runs until killed.
func serveEcho() {
	echo := mcp.NewServer(&mcp.Implementation{Name: "echo", Version: "1"}, nil)
	echo.AddTool(&mcp.Tool{Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(req.Params.Arguments)}}}, nil
		})
	u, _, err := serve(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return echo },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u)
	select {}
}

// startEcho runs the echo server in its own process, as the gateway runs in
// its own: neither shares a heap or a garbage collector with the load
// generator, so the two are measured alike.
func startEcho() (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), echoEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("echo server: %w", err)
	}
	return strings.TrimSpace(line), stop, nil
}

// mcpPhase compares MCP tools/call: a plain go-sdk echo server, AgentG8's
// /mcp running an allowed read action, and the same action over REST.
func mcpPhase(client *http.Client, gwURL string, conc int, dur time.Duration) map[string]result {
	echoURL, stop, err := startEcho()
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	rpc := func(u, key, tool string, args string) func() (*http.Request, error) {
		body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`)
		return func() (*http.Request, error) {
			r, err := http.NewRequest("POST", u, bytes.NewReader(body))
			if err == nil {
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Accept", "application/json, text/event-stream")
				r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
				if key != "" {
					r.Header.Set("Authorization", "Bearer "+key)
				}
			}
			return r, err
		}
	}
	fmt.Printf("\nMCP tools/call, %d concurrent clients, %s per target\n\n", conc, dur)
	res := runTargets(client, gwURL, "calls/s", conc, dur, []target{
		{"go-sdk echo", rpc(echoURL, "", "echo", `{"customer_id":"cus_1"}`)},
		{"agentg8 mcp", rpc(gwURL+"/mcp", agentKey, "crm.get_customer", `{"customer_id":"cus_1"}`)},
		{"agentg8 rest", proposeReq(func() string { return gwURL })},
	})
	fmt.Printf("\nratios (same run):\n")
	fmt.Printf("  agentg8 mcp / go-sdk echo   %.2f\n", res["agentg8 mcp"].rps/res["go-sdk echo"].rps)
	fmt.Printf("  agentg8 mcp / agentg8 rest  %.2f\n", res["agentg8 mcp"].rps/res["agentg8 rest"].rps)
	return res
}
