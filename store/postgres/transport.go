package postgres

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// CheckTransport says how a store URL's connections are protected. Every
// host on this machine (loopback, a Unix socket) needs nothing. Otherwise
// the URL (or PGSSLMODE, which pgx also reads) must set sslmode: left
// unset, pgx tries TLS without checking the server's certificate and falls
// back to plaintext, so anyone on the path could read the actions, inputs,
// outputs and audit records, or answer in the database's place — an error.
// A mode set explicitly but short of verifying the server (require and
// weaker) is the operator's choice: a warning. getenv reads the
// environment.
func CheckTransport(rawURL string, getenv func(string) string) (warning string, err error) {
	cfg, err := pgconn.ParseConfig(rawURL)
	if err != nil {
		return "", err
	}
	var remote []string
	add := func(h string) {
		if !localHost(h) && !slices.Contains(remote, h) {
			remote = append(remote, h)
		}
	}
	add(cfg.Host)
	for _, f := range cfg.Fallbacks {
		add(f.Host)
	}
	if len(remote) == 0 {
		return "", nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	mode := u.Query().Get("sslmode")
	if mode == "" {
		mode = getenv("PGSSLMODE")
	}
	hosts := strings.Join(remote, ", ")
	switch mode {
	case "verify-full":
		return "", nil
	case "verify-ca":
		return fmt.Sprintf("sslmode=verify-ca checks that %s's certificate is signed by the CA, not that it names the host; verify-full checks both", hosts), nil
	case "":
		return "", fmt.Errorf("PostgreSQL at %s is not on this machine and the URL sets no sslmode, so the connection may be unencrypted and the server is not verified; "+
			"add sslmode=verify-full (with sslrootcert=… for a private CA), or set sslmode=require or disable to accept the risk", hosts)
	case "require":
		return fmt.Sprintf("sslmode=require encrypts but does not verify %s's certificate, so a machine on the path can pose as the database; use sslmode=verify-full", hosts), nil
	}
	return fmt.Sprintf("sslmode=%s lets the connection to %s be unencrypted and unverified, so a machine on the path can read and alter what the gateway stores; use sslmode=verify-full", mode, hosts), nil
}

// localHost reports whether a pgx host is this machine: a Unix socket
// directory or a loopback address or name.
func localHost(h string) bool {
	if strings.HasPrefix(h, "/") || strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}
