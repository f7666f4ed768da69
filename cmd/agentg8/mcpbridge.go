package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8/mcpserver"
)

// bearer adds the agent key to every request of the bridge.
type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}

// cmdMCP bridges stdio MCP (desktop agents) to a gateway's /mcp endpoint.
// The bridge holds only the agent key; upstream credentials stay in the
// gateway.
func (m *Main) cmdMCP(ctx context.Context, args []string) error {
	fs := m.flags("mcp")
	u := fs.String("url", "", "gateway URL (default $AGENTG8_URL)")
	poll := fs.Duration("poll", 30*time.Second, "how often to re-read the gateway's tool list (changes are sent as notifications/tools/list_changed); 0 never")
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
	remote := mcp.NewClient(&mcp.Implementation{Name: "agentg8-bridge", Version: version}, nil)
	cs, err := remote.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: strings.TrimRight(base, "/") + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{key: key, next: http.DefaultTransport}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		return err
	}
	defer cs.Close()
	local := mcp.NewServer(&mcp.Implementation{Name: "agentg8", Version: version}, &mcp.ServerOptions{
		Instructions: cs.InitializeResult().Instructions})
	seen := map[string]string{} // tool name → definition hash
	if err := syncTools(ctx, cs, local, seen); err != nil {
		return err
	}
	if *poll > 0 {
		// The gateway's stateless endpoint cannot push; poll it, and the
		// local server tells the desktop client when the list changed.
		go every(ctx, *poll, func() {
			if err := syncTools(ctx, cs, local, seen); err != nil {
				m.logger("warn").Warn("re-reading the gateway's tools failed", "err", err)
			}
		})
	}
	err = local.Run(ctx, &mcp.IOTransport{Reader: readCloser{m.Stdin}, Writer: writeCloser{m.Stdout}})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// syncTools makes local offer exactly the gateway's tools, as proxies.
// Only the poller calls it after start, so seen needs no lock.
func syncTools(ctx context.Context, cs *mcp.ClientSession, local *mcp.Server, seen map[string]string) error {
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		return err
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
			return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: arguments})
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
