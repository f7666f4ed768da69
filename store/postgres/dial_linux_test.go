package postgres_test

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentg8/agentg8/store/postgres"
)

// The gateway's connections to the database are the kernel's to watch:
// keepalive probes after 15 s idle (every 5 s, 3 of them) and a 30 s
// bound on unacknowledged data, so a connection the network stopped
// carrying fails in about half a minute (Go's defaults: 9 probes 15 s
// apart, and no bound on unacknowledged data). What the kernel then does
// is not simulated here: a proxy in user space acknowledges what it holds.
func TestConnectionsAreWatched(t *testing.T) {
	s := openStore(t, newTestDB(t))
	conn, err := postgres.PoolOf(s).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tcp, ok := conn.Conn().PgConn().Conn().(*net.TCPConn)
	if !ok {
		t.Fatalf("the test database is reached over %T, not TCP", conn.Conn().PgConn().Conn())
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 5},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000},
	}
	raw.Control(func(fd uintptr) {
		for _, w := range want {
			got, err := unix.GetsockoptInt(int(fd), w.level, w.opt)
			if err != nil || got != w.value {
				t.Errorf("%s = %d (%v), want %d", w.name, got, err, w.value)
			}
		}
	})
}
