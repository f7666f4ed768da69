package postgres_test

import (
	"context"
	"testing"

	"github.com/agentg8/agentg8/store/postgres"
	"github.com/agentg8/agentg8/store/storetest"
)

func newTestDB(t testing.TB) string { return storetest.PostgresDB(t) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := postgres.Open(context.Background(), newTestDB(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMigrateConcurrently(t *testing.T) {
	u := newTestDB(t)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			s, err := postgres.Open(context.Background(), u)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
