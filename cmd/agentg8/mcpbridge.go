package main

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/mcpserver"
)

// headerTransport adds headers to every request.
type headerTransport struct {
	header http.Header
	next   http.RoundTripper
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.header {
		r.Header[k] = v
	}
	return t.next.RoundTrip(r)
}

// bearerTransport sends key as the bearer token of every request.
func bearerTransport(key string) http.RoundTripper {
	return headerTransport{header: http.Header{"Authorization": {"Bearer " + key}}, next: http.DefaultTransport}
}

// cmdMCP bridges stdio MCP (desktop agents) to a gateway's /mcp endpoint.
// The bridge holds only the agent key; upstream credentials stay in the
// gateway.
func (m *Main) cmdMCP(ctx context.Context, args []string) error {
	fs := m.flags("mcp")
	u := fs.String("url", "", "gateway URL (default $AGENTG8_URL)")
	poll := fs.Duration("poll", 30*time.Second, "how often to re-read the gateway's tool list besides when the gateway says it changed (changes are sent as notifications/tools/list_changed); 0 only when told")
	retry := fs.Duration("retry", 30*time.Second, "how long to retry a tool call whose answer was lost, under the call's idempotency key (it runs at most once); 0 never")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	base := *u
	if base == "" {
		base, _ = m.LookupEnv("AGENTG8_URL")
	}
	key, _ := m.LookupEnv("AGENTG8_KEY")
	if base == "" || key == "" {
		return usageErr("usage: AGENTG8_KEY=ag8_… agentg8 mcp --url https://gateway")
	}
	// The gateway says on its GET stream when the tool list changed;
	// polling (--poll) also covers a stream lost or not offered.
	kick := make(chan struct{}, 1)
	remote := mcp.NewClient(&mcp.Implementation{Name: "agentg8-bridge", Version: version}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}})
	g := &gateway{retry: *retry, logger: m.logger("warn"), connect: func(ctx context.Context) (*mcp.ClientSession, error) {
		return remote.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: strings.TrimRight(base, "/") + "/mcp",
			HTTPClient: &http.Client{Transport: bearerTransport(key)}}, nil)
	}}
	cs, err := g.connect(ctx)
	if err != nil {
		return err
	}
	g.cs = cs
	defer g.close()
	local := mcp.NewServer(&mcp.Implementation{Name: "agentg8", Version: version}, &mcp.ServerOptions{
		Instructions: cs.InitializeResult().Instructions})
	seen := map[string]string{} // tool name → definition hash
	if err := g.syncTools(ctx, local, seen); err != nil {
		return err
	}
	// One goroutine re-reads the list, when told and every --poll; the
	// local server tells the desktop client when it changed.
	go func() {
		var tick <-chan time.Time
		if *poll > 0 {
			t := time.NewTicker(*poll)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			case <-kick:
			}
			if err := g.syncTools(ctx, local, seen); err != nil {
				m.logger("warn").Warn("re-reading the gateway's tools failed", "err", err)
			}
		}
	}()
	err = local.Run(ctx, &mcp.IOTransport{Reader: readCloser{m.Stdin}, Writer: writeCloser{m.Stdout}})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// gateway is the bridge's session with a gateway's /mcp endpoint, replaced
// when a failure leaves it unusable (the SDK gives up on a session whose
// answer was cut off mid-body).
type gateway struct {
	connect func(context.Context) (*mcp.ClientSession, error)
	retry   time.Duration
	logger  *slog.Logger

	mu sync.Mutex
	cs *mcp.ClientSession
}

func (g *gateway) session() *mcp.ClientSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cs
}

// renew replaces the session old with a new one, unless another call did.
// It connects outside the lock: calls on a working session must not wait
// on a gateway that is slow to answer.
func (g *gateway) renew(ctx context.Context, old *mcp.ClientSession) error {
	if g.session() != old {
		return nil
	}
	cs, err := g.connect(ctx)
	if err != nil {
		return err
	}
	g.mu.Lock()
	if g.cs != old {
		g.mu.Unlock()
		cs.Close()
		return nil
	}
	g.cs = cs
	g.mu.Unlock()
	old.Close()
	return nil
}

func (g *gateway) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cs.Close()
}

// callTool calls a gateway tool under an idempotency key — the desktop
// client's if it sent one, else a new one per call — and, when the answer
// is lost (a dropped connection, a proxy's 502) or the gateway is still
// running the first attempt, asks again under the same key for up to
// g.retry: the gateway runs the call at most once and answers every
// attempt with its action.
func (g *gateway) callTool(ctx context.Context, name string, arguments any, meta mcp.Meta) (*mcp.CallToolResult, error) {
	key, _ := meta[mcpserver.MetaIdempotencyKey].(string)
	if key == "" {
		key = "bridge-" + rand.Text()
	}
	params := &mcp.CallToolParams{Name: name, Arguments: arguments, Meta: mcp.Meta{mcpserver.MetaIdempotencyKey: key}}
	var res *mcp.CallToolResult
	var err error
	var cs *mcp.ClientSession
	askAgain(ctx, g.retry, g.logger, "tools/call "+name, func() string {
		if err != nil {
			// The session may be unusable after a lost answer; renew
			// replaces it unless another call did already.
			if rerr := g.renew(ctx, cs); rerr != nil {
				g.logger.Warn("reconnecting to the gateway failed", "err", rerr)
			}
		}
		cs = g.session()
		res, err = cs.CallTool(ctx, params)
		switch {
		case err != nil && !answered(err) && lost(err):
			return err.Error()
		case err == nil && errorCode(res) == agentg8.CodeIdempotencyInProgress:
			return "the first attempt is still running"
		}
		return ""
	})
	return res, err
}

// codeRejected is the go-sdk's JSON-RPC code for "rejected by transport":
// its own error when a request or its answer was lost, not the gateway's.
const codeRejected = -32005

// answered reports whether err carries a JSON-RPC error the gateway sent.
func answered(err error) bool {
	switch e := err.(type) {
	case *jsonrpc.Error:
		return e.Code != codeRejected
	case interface{ Unwrap() error }:
		return answered(e.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range e.Unwrap() {
			if answered(e) {
				return true
			}
		}
	}
	return false
}

// errorCode is the problem code of a tool error result, or "".
func errorCode(res *mcp.CallToolResult) string {
	if res == nil || !res.IsError {
		return ""
	}
	sc, _ := res.StructuredContent.(map[string]any)
	e, _ := sc["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// syncTools makes local offer exactly the gateway's tools, as proxies.
// Only the poller calls it after start, so seen needs no lock.
func (g *gateway) syncTools(ctx context.Context, local *mcp.Server, seen map[string]string) error {
	cs := g.session()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		if rerr := g.renew(ctx, cs); rerr != nil {
			return errors.Join(err, rerr)
		}
		if tools, err = g.session().ListTools(ctx, nil); err != nil {
			return err
		}
	}
	now := map[string]bool{}
	for _, t := range tools.Tools {
		now[t.Name] = true
		h := mcpserver.Hash(t)
		if seen[t.Name] == h {
			continue
		}
		seen[t.Name] = h
		name := t.Name
		local.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var arguments any = req.Params.Arguments
			if len(req.Params.Arguments) == 0 {
				arguments = map[string]any{}
			}
			return g.callTool(ctx, name, arguments, req.Params.Meta)
		})
	}
	var gone []string
	for n := range seen {
		if !now[n] {
			gone = append(gone, n)
			delete(seen, n)
		}
	}
	if len(gone) > 0 {
		local.RemoveTools(gone...)
	}
	return nil
}

// readCloser and writeCloser adapt the command's streams to the transport.
type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

type writeCloser struct{ io.Writer }

func (writeCloser) Close() error { return nil }
