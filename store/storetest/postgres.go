package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresDB creates an empty database on the test cluster
// ($AGENTG8_TEST_POSTGRES, started by scripts/pg-test.sh) and returns its
// URL; it is dropped when the test ends. In CI a missing cluster fails the
// test; elsewhere it skips.
func PostgresDB(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("AGENTG8_TEST_POSTGRES")
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("AGENTG8_TEST_POSTGRES is not set; make test starts PostgreSQL")
		}
		t.Skip("AGENTG8_TEST_POSTGRES is not set (scripts/pg-test.sh prints it)")
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "agentg8_test_" + hex.EncodeToString(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), admin); err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, _ := url.Parse(admin)
	u.Path = "/" + name
	return u.String()
}

// CeilingConns is the pool sizes Inserts is measured with for a ceiling of
// clients callers: one connection per caller, as independent clients
// would have, and, beyond a gateway's pool (gateway connections, i.e.
// store/postgres.MinConns) callers, also that many — a small machine runs
// hundreds of backends worse than a few, and a ceiling must not flatter
// what is compared with it. The ceiling is the higher rate.
func CeilingConns(clients, gateway int) []int {
	if clients > gateway {
		return []int{clients, gateway}
	}
	return []int{clients}
}

// Inserts measures the ceiling the pipeline benchmarks compare with: b.N
// independent durable single-row INSERTs of row into a new table of the
// database at url, from clients concurrent callers over a pool of conns
// connections (each its own implicit transaction and commit). It reports
// inserts per second and the CPU per insert (CPUMeter), and returns the
// rate and PostgreSQL's CPU per insert in µs (0 when unmeasured). The pool
// is sized explicitly: pgxpool's default (4 connections on a small
// machine) would throttle the ceiling.
func Inserts(b *testing.B, url string, clients, conns int, row []byte) (rate, pgPerOp float64) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = int32(conns)
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id BIGSERIAL PRIMARY KEY, data BYTEA)`); err != nil {
		b.Fatal(err)
	}
	// Every connection is open before the clock starts.
	open := make([]*pgxpool.Conn, conns)
	for i := range open {
		if open[i], err = pool.Acquire(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range open {
		c.Release()
	}
	cpu := StartCPU(url)
	Writers(b, clients, "ops", func() error {
		_, err := pool.Exec(ctx, `INSERT INTO t (data) VALUES ($1)`, row)
		return err
	})
	_, pgPerOp = cpu.Report(b)
	return float64(b.N) / b.Elapsed().Seconds(), pgPerOp
}
