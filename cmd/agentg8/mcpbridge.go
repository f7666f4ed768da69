package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
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
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		return err
	}
	local := mcp.NewServer(&mcp.Implementation{Name: "agentg8", Version: version}, &mcp.ServerOptions{
		Instructions: cs.InitializeResult().Instructions})
	for _, t := range tools.Tools {
		name := t.Name
		local.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var arguments any = req.Params.Arguments
			if len(req.Params.Arguments) == 0 {
				arguments = map[string]any{}
			}
			return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: arguments})
		})
	}
	err = local.Run(ctx, &mcp.IOTransport{Reader: readCloser{m.Stdin}, Writer: writeCloser{m.Stdout}})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// readCloser and writeCloser adapt the command's streams to the transport.
type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

type writeCloser struct{ io.Writer }

func (writeCloser) Close() error { return nil }
