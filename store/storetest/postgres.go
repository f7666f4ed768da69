package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
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
