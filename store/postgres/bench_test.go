package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/postgres"
	"github.com/agentg8/agentg8/store/storetest"
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
			var next atomic.Int64
			storetest.Writers(b, 64, "ops", func() error {
				l := ls[int(next.Add(1))%logs] // spread appends over the replicas
				return l.Append(context.Background(), &agentg8.AuditEvent{Type: "proposed", ActionID: "act_bench"})
			})
		})
	}
}

// BenchmarkBaselineInsert is the ceiling: independent single-row durable
// INSERTs on the same database, 64 writers, over one connection each and
// over a gateway's postgres.MinConns (storetest.CeilingConns); the higher is the ceiling.
func BenchmarkBaselineInsert(b *testing.B) {
	row := []byte(`{"seq":0,"type":"proposed","action_id":"act_bench"}`)
	for _, conns := range storetest.CeilingConns(64, postgres.MinConns) {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			storetest.Inserts(b, newTestDB(b), 64, conns, row)
		})
	}
}

// BenchmarkLifecycle measures whole allowed actions' durable writes (intent
// commit, then outcome commit) through one audit log, 64 writers; compare
// with BenchmarkBaselineInsert.
func BenchmarkLifecycle(b *testing.B) {
	s, err := postgres.Open(context.Background(), newTestDB(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.Lifecycle(b, s, 64, action.NewID)
}
