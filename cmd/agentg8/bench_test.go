package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/store/postgres"
	"github.com/agentg8/agentg8/store/storetest"
)

// BenchmarkPostgresReplicas measures allowed actions per second through
// the whole pipeline of 1 and 3 replicas sharing one PostgreSQL database:
// each replica is a full gateway (its own pool, audit log, worker and
// LISTEN), and each action is validated, authorised by Cedar, given its
// credential, recorded (intent), sent to a real HTTP upstream and recorded
// again (outcome). Callers use the replicas' action services directly, so
// what is measured is the pipeline and the database, not the HTTP front
// door (bench/load measures that, with the gateways as processes). The
// ceiling is independent single-row durable inserts from as many callers
// on the same cluster (storetest.Inserts, with the pool sizes
// storetest.CeilingConns gives; the higher rate), measured first in the
// same run. Each replica result also reports its ratio to it (x-inserts),
// the CPU per action of this process (replicas, upstream and callers:
// go-µs/op) and of PostgreSQL (pg-µs/op), and how many connections the
// replicas opened to the upstream (upstream-conns: each replica keeps its
// own, so a few more than the clients is normal; many times more means the
// connector's idle pool churns). x-inserts-pg-cpu is PostgreSQL's CPU per
// insert over its CPU per action: the ratio were PostgreSQL's CPU the only
// limit (the database on its own machine, the gateways given enough CPU
// elsewhere) — derived, not measured as a rate.
// The process collects garbage as serve does (setGC), ceilings included.
// AGENTG8_BENCH_CLIENTS=16,256 picks the client counts.
func BenchmarkPostgresReplicas(b *testing.B) {
	defer setGC(os.LookupEnv)()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"cus_1","name":"Ada Lovelace","plan":"enterprise","notes":[]}`))
	}))
	var conns atomic.Int64
	up.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	for _, clients := range benchClients(b, 16, 64, 256) {
		var ceiling, ceilingPG float64 // inserts/s, and PostgreSQL's µs per insert at that rate
		row := []byte(`{"task":"crm.get_customer","input":{"customer_id":"cus_1"}}`)
		for _, conns := range storetest.CeilingConns(clients, postgres.MinConns) {
			var rate, pg float64 // of the last, full-length run
			b.Run(fmt.Sprintf("clients=%d/inserts/conns=%d", clients, conns), func(b *testing.B) {
				rate, pg = storetest.Inserts(b, storetest.PostgresDB(b), clients, conns, row)
			})
			if rate > ceiling {
				ceiling, ceilingPG = rate, pg
			}
		}
		for _, n := range []int{1, 3} {
			b.Run(fmt.Sprintf("clients=%d/replicas=%d", clients, n), func(b *testing.B) {
				servers, db := startReplicas(b, up.URL, "", n)
				var svcs []*action.Service
				for _, s := range servers {
					svcs = append(svcs, s.service)
				}
				bot := agentg8.Principal{Kind: agentg8.KindAgent, ID: "support-bot", Groups: []string{"support"}, ActFor: []string{"support"}}
				prop := action.Proposal{Task: "crm.get_customer", Input: json.RawMessage(`{"customer_id":"cus_1"}`)}
				var next atomic.Int64
				cpu := storetest.StartCPU(db)
				storetest.Writers(b, clients, "actions", func() error {
					a, err := svcs[int(next.Add(1))%n].Propose(context.Background(), bot, prop)
					if err != nil {
						return err
					}
					if a.Status != agentg8.StateSucceeded {
						return fmt.Errorf("action ended %s", a.Status)
					}
					return nil
				})
				_, pg := cpu.Report(b)
				b.ReportMetric(float64(conns.Swap(0)), "upstream-conns")
				if ceiling > 0 {
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/ceiling, "x-inserts")
				}
				if ceilingPG > 0 && pg > 0 {
					b.ReportMetric(ceilingPG/pg, "x-inserts-pg-cpu")
				}
			})
		}
	}
}

// serveInProcess starts a gateway in this process as serve starts it, and
// stops it when the test ends.
func serveInProcess(tb testing.TB, cfg *Config, logger *slog.Logger) *server {
	return serveInProcessAt(tb, cfg, logger, agentg8.SystemClock{})
}

// serveInProcessAt is serveInProcess on clock.
func serveInProcessAt(tb testing.TB, cfg *Config, logger *slog.Logger, clock agentg8.Clock) *server {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := startServer(ctx, cfg, lookup(testEnvVars()), logger, clock)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !strings.Contains(err.Error(), "closed") {
			tb.Error(err)
		}
	})
	return s
}

// startReplicas runs n gateways in this process on one new PostgreSQL
// database, sharing a config folder (one audit key) as replicas do, each
// started as serve starts it; it returns them and the database's URL.
func startReplicas(tb testing.TB, upstream, extraConfig string, n int) ([]*server, string) {
	dir := tb.TempDir()
	path := writeConfig(tb, dir, upstream, envOpts{allowPrivate: true, extraConfig: extraConfig})
	db := storetest.PostgresDB(tb)
	replaceIn(tb, path, "store: sqlite:data/agentg8.db", "store: "+db)
	cfg, err := LoadConfig(path, lookup(testEnvVars()))
	if err != nil {
		tb.Fatal(err)
	}
	// Actions are logged as serve logs them (formatted, then dropped).
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out []*server
	for i := 0; i < n; i++ {
		out = append(out, serveInProcess(tb, cfg, logger))
	}
	return out, db
}

// benchClients is the client counts to measure: AGENTG8_BENCH_CLIENTS
// (comma-separated), else def.
func benchClients(tb testing.TB, def ...int) []int {
	v := os.Getenv("AGENTG8_BENCH_CLIENTS")
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("AGENTG8_BENCH_CLIENTS: %q is not a client count", f)
		}
		out = append(out, n)
	}
	return out
}
