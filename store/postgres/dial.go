package postgres

import (
	"net"
	"time"
)

// Connections to the database are watched by the kernel, so that one the
// network stopped carrying (a partition, a failed-over primary that did
// not reset it) fails within about half a minute instead of hanging. With
// pgx's dialer (Go's defaults) an idle connection — in the pool, or the
// one that LISTENs — is given up after 15 s and 9 probes 15 s apart, and
// a query sent into the void is retransmitted for up to ~15 minutes
// (Linux's tcp_retries2) while its caller waits. Here: probes after
// keepAliveIdle, keepAliveCount of them keepAliveInterval apart, and
// unacknowledged data fails the connection after userTimeout (Linux).
const (
	dialTimeout       = 10 * time.Second
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
	userTimeout       = 30 * time.Second
)

// dialer opens connections to the database.
func dialer() *net.Dialer {
	return &net.Dialer{
		Timeout: dialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle,
			Interval: keepAliveInterval, Count: keepAliveCount},
		Control: setUserTimeout,
	}
}
