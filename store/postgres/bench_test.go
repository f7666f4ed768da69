package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/postgres"
)

// BenchmarkAppend measures durable audit appends on PostgreSQL from one log
// and from three (as three replicas would), with 64 concurrent writers.
func BenchmarkAppend(b *testing.B) {
	for _, logs := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", logs), func(b *testing.B) {
			s, err := postgres.Open(context.Background(), newTestDB(b))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			key, _ := audit.LoadOrCreateKey(b.TempDir() + "/k")
			var ls []*audit.Log
			for i := 0; i < logs; i++ {
				l := audit.Open(s, key, audit.Options{})
				defer l.Close()
				ls = append(ls, l)
			}
			run(b, 64, func(w, _ int) error {
				return ls[w%logs].Append(context.Background(), &agentg8.AuditEvent{Type: "proposed", ActionID: "act_bench"})
			})
		})
	}
}

// BenchmarkBaselineInsert is the ceiling: independent single-row durable
// INSERTs on the same database, 64 writers.
func BenchmarkBaselineInsert(b *testing.B) {
	u := newTestDB(b)
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	pool.Exec(context.Background(), `CREATE TABLE t (id BIGSERIAL PRIMARY KEY, data BYTEA)`)
	row := []byte(`{"seq":0,"type":"proposed","action_id":"act_bench"}`)
	run(b, 64, func(_, _ int) error {
		_, err := pool.Exec(context.Background(), `INSERT INTO t (data) VALUES ($1)`, row)
		return err
	})
}

func run(b *testing.B, writers int, op func(w, i int) error) {
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := op(w, i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
