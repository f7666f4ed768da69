package postgres

import (
	"strings"
	"testing"
)

func TestCheckTransport(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		url, env  string
		warn, err string // substrings; "" means none
	}{
		{url: "postgres://u@127.0.0.1:5432/db"},
		{url: "postgres://u@localhost/db"},
		{url: "postgres://u@[::1]:5432/db"},
		{url: "postgres:///db?host=/var/run/postgresql"},
		{url: "postgres://u@db.internal/db?sslmode=verify-full"},
		{url: "postgres://u@db.internal/db", err: "db.internal is not on this machine and the URL sets no sslmode"},
		{url: "postgres://u@10.0.0.5:5432,127.0.0.1:5432/db", err: "10.0.0.5 is not on this machine"},
		{url: "postgres://u@db.internal/db", env: "verify-full"},
		{url: "postgres://u@db.internal/db", env: "require", warn: "sslmode=require encrypts but does not verify db.internal"},
		{url: "postgres://u@db.internal/db?sslmode=disable", warn: "sslmode=disable lets the connection to db.internal be unencrypted"},
		{url: "postgres://u@db.internal/db?sslmode=prefer", warn: "sslmode=prefer lets"},
		{url: "postgres://u@db.internal/db?sslmode=verify-ca", warn: "verify-full checks both"},
		{url: "postgres://u@db.internal/db?sslmode=bogus", err: "sslmode"},
	} {
		env := noEnv
		if c.env != "" {
			env = func(k string) string {
				if k == "PGSSLMODE" {
					return c.env
				}
				return ""
			}
		}
		t.Setenv("PGSSLMODE", c.env) // pgx's parser reads it too
		warn, err := CheckTransport(c.url, env)
		if (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s (PGSSLMODE=%q): err %v, want %q", c.url, c.env, err, c.err)
		}
		if (c.warn == "") != (warn == "") || !strings.Contains(warn, c.warn) {
			t.Errorf("%s (PGSSLMODE=%q): warning %q, want %q", c.url, c.env, warn, c.warn)
		}
	}
}
