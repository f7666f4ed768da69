package httpconn

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
)

func call(url string) Call {
	return Call{Method: "GET", URL: url, Header: http.Header{}, Timeout: time.Second, MaxResponseBytes: 1 << 10}
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestEgressGuard(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, err := New(false).Do(t.Context(), call(srv.URL))
	if code(err) != agentg8.CodeEgressDenied || hits.Load() != 0 {
		t.Fatalf("loopback reached: %v, hits %d", err, hits.Load())
	}
	// A hostname that resolves to loopback is refused too: the dialled address is checked.
	_, err = New(false).Do(t.Context(), call(strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)))
	if code(err) != agentg8.CodeEgressDenied || hits.Load() != 0 {
		t.Fatalf("localhost reached: %v", err)
	}
	if _, err := New(true).Do(t.Context(), call(srv.URL)); err != nil || hits.Load() != 1 {
		t.Fatalf("allow_private: %v", err)
	}
	for _, a := range []string{"127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "100.64.0.1", "::1", "fd00::1", "fe80::1", "0.0.0.0", "::ffff:127.0.0.1"} {
		if Public(netip.MustParseAddr(a)) {
			t.Errorf("%s counted as public", a)
		}
	}
	if !Public(netip.MustParseAddr("8.8.8.8")) {
		t.Error("8.8.8.8 not public")
	}
}

func TestRedirectsTimeoutsAndSize(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("other")) }))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/final", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL, http.StatusFound)
		case "/final":
			w.Write([]byte("final"))
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 2<<10)))
		}
	}))
	defer srv.Close()
	c := New(true)
	resp, err := c.Do(t.Context(), call(srv.URL+"/redirect"))
	if err != nil || resp.Status != http.StatusFound {
		t.Errorf("redirect followed by default: %v %v", resp, err)
	}
	cl := call(srv.URL + "/redirect")
	cl.FollowRedirects = true
	if resp, err := c.Do(t.Context(), cl); err != nil || string(resp.Body) != "final" {
		t.Errorf("same-origin redirect: %v", err)
	}
	cl = call(srv.URL + "/away")
	cl.FollowRedirects = true
	if _, err := c.Do(t.Context(), cl); err == nil {
		t.Error("cross-origin redirect followed")
	}
	cl = call(srv.URL + "/slow")
	cl.Timeout = 100 * time.Millisecond
	if _, err := c.Do(t.Context(), cl); code(err) != agentg8.CodeUpstreamTimeout {
		t.Errorf("timeout: %v", err)
	}
	if _, err := c.Do(t.Context(), call(srv.URL+"/big")); code(err) != agentg8.CodeUpstreamError || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("size cap: %v", err)
	}
}

// TestKeepsConnectionsForConcurrentCalls checks that connections opened for
// many concurrent calls to one host are kept for the next ones, not closed
// and dialled again (which costs a handshake per call under load).
func TestKeepsConnectionsForConcurrentCalls(t *testing.T) {
	const concurrent = 200
	var dials atomic.Int64
	var inFlight sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every call of a round waits for all of them, so each holds a
		// connection of its own.
		inFlight.Done()
		inFlight.Wait()
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := New(true)
	for round := 1; round <= 2; round++ {
		inFlight.Add(concurrent)
		var wg sync.WaitGroup
		for range concurrent {
			wg.Go(func() {
				cl := call(srv.URL)
				cl.Timeout = 10 * time.Second
				if _, err := c.Do(t.Context(), cl); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if got := dials.Load(); got != concurrent {
			t.Fatalf("after round %d: %d connections dialled, want %d (the idle pool dropped some)", round, got, concurrent)
		}
	}
}
