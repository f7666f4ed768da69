package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/agentg8/agentg8/store/sqlite"
	"github.com/agentg8/agentg8/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "test.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMigrateTwice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.db")
	for i := 0; i < 2; i++ {
		s, err := sqlite.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// One process serves a SQLite store: a second claim fails while the first
// holds it (even from the same process), and succeeds once it is closed.
// Opening without claiming (audit verify, secrets set) is not refused.
func TestOneServerOwnsTheFile(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "agentg8.db")
	first, err := sqlite.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Own(); err != nil {
		t.Fatal(err)
	}
	second, err := sqlite.Open(ctx, p)
	if err != nil {
		t.Fatalf("opening without a claim: %v", err)
	}
	if err := second.Own(); !errors.Is(err, sqlite.ErrOwned) {
		t.Fatalf("second claim: %v, want ErrOwned", err)
	}
	first.Close()
	if err := second.Own(); err != nil {
		t.Fatalf("claim after the first closed: %v", err)
	}
	second.Close()
}
