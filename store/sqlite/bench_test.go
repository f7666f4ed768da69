package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/store/sqlite"
	"github.com/agentg8/agentg8/store/storetest"
)

// BenchmarkLifecycle measures the durable writes of whole allowed actions
// (intent commit, then outcome commit) through the audit log's group commit.
// Compare with audit.BenchmarkBaselineInsert at the same writer count.
func BenchmarkLifecycle(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			storetest.Lifecycle(b, s, writers, action.NewID)
		})
	}
}
