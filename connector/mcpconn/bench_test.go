package mcpconn

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentg8/agentg8/connector/httpconn"
)

// BenchmarkToolCall is one MCP task's upstream exchange (a session of its
// own: discovery or initialize, the call, and a DELETE where the server
// keeps sessions) against go-sdk servers of each kind the tests use;
// BenchmarkHTTPCallBaseline is an HTTP task's one request to a plain JSON
// server on the same machine. Read them as a ratio.
func BenchmarkToolCall(b *testing.B) {
	for mode, opts := range serverModes {
		b.Run(mode, func(b *testing.B) {
			u := newUpstream(b, "Bearer s3cret", opts)
			c := New(httpconn.New(true).Client(), "test")
			call := Call{URL: u.srv.URL, Header: http.Header{"Authorization": {"Bearer s3cret"}}, Timeout: 5 * time.Second, MaxResponseBytes: 1 << 16,
				Body: []byte(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"create_ticket","arguments":{"title":"t"}}}`)}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Call(b.Context(), call); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkHTTPCallBaseline(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ticketOut{ID: "T-1", Title: "t"})
	}))
	defer srv.Close()
	c := httpconn.New(true)
	call := httpconn.Call{Method: "POST", URL: srv.URL, Header: http.Header{"Authorization": {"Bearer s3cret"}}, Timeout: 5 * time.Second,
		MaxResponseBytes: 1 << 16, Body: []byte(`{"title":"t"}`)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Do(b.Context(), call); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
