package postgres_test

import (
	"context"
	"testing"
	"time"

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

type skewed struct{ d time.Duration }

func (s skewed) Now() time.Time { return time.Now().Add(s.d) }

// A replica whose own clock is an hour off still decides by the database's.
func TestClockFollowsTheDatabase(t *testing.T) {
	s, err := postgres.Open(context.Background(), newTestDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, err := s.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{time.Hour, -3 * time.Hour} {
		got := s.Clock(skewed{d}).Now()
		if diff := got.Sub(db); diff < -2*time.Second || diff > 2*time.Second {
			t.Errorf("skew %s: clock says %s, database %s", d, got, db)
		}
	}
}
