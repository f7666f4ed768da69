// Package mcpconn executes MCP tasks: one tools/call on an upstream MCP
// server over Streamable HTTP, in a session of its own, through the
// gateway's egress-guarded HTTP client. The task's credential headers go on
// every HTTP request of the session.
package mcpconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/connector/httpconn"
)

// Call is one tool call.
type Call struct {
	URL    string
	Header http.Header
	// Body is the JSON-RPC tools/call message the task rendered (and a
	// reviewer saw); its params are sent as they are.
	Body             []byte
	Timeout          time.Duration
	MaxResponseBytes int64
}

// Result is the tool's answer.
type Result struct {
	// Body is the CallToolResult as JSON: content, structuredContent,
	// isError.
	Body     []byte
	IsError  bool
	Duration time.Duration
}

// Connector calls tools. Safe for concurrent use.
type Connector struct {
	client *http.Client
	impl   *mcp.Implementation
}

// New returns a connector sending through client (httpconn's, so the
// egress guard checks every address dialled); version is the gateway's,
// told to servers with the name agentg8.
func New(client *http.Client, version string) *Connector {
	return &Connector{client: client, impl: &mcp.Implementation{Name: "agentg8", Version: version}}
}

// Call runs the tool call. Failures are *httpconn.Error; Sent is false when
// the session failed before the call went out.
func (c *Connector) Call(ctx context.Context, call Call) (*Result, error) {
	// Arguments stay raw bytes: decoded, large integers would lose digits
	// and the call would no longer be the message a reviewer saw.
	var msg struct {
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
			Meta      mcp.Meta        `json:"_meta"`
		} `json:"params"`
	}
	if err := json.Unmarshal(call.Body, &msg); err != nil || msg.Params.Name == "" {
		return nil, &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: "tool call could not be built", Err: err}
	}
	params := &mcp.CallToolParams{Name: msg.Params.Name, Arguments: msg.Params.Arguments, Meta: msg.Params.Meta}
	ctx, cancel := context.WithTimeout(ctx, call.Timeout)
	defer cancel()
	ex := &exchange{base: c.client.Transport, header: call.Header, max: call.MaxResponseBytes}
	hc := &http.Client{Transport: ex, CheckRedirect: c.client.CheckRedirect}
	// No standalone stream: a gateway asks one thing and hangs up. Lost
	// streams are not resumed (MaxRetries -1): the call's timeout bounds it.
	tr := &mcp.StreamableClientTransport{Endpoint: call.URL, HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}
	client := mcp.NewClient(c.impl, nil)
	start := time.Now()
	cs, err := client.Connect(ctx, tr, nil)
	if err != nil {
		e := ex.failure(ctx, err, "the MCP session could not be started")
		e.Sent = false // only discovery or initialize went out: the tool did not run
		return nil, e
	}
	// Ending the session (a DELETE the SDK bounds to 5 s) is housekeeping:
	// the action's answer does not wait for it.
	defer func() { go cs.Close() }()
	// What went wrong while the session was negotiated (a server refusing
	// the newest protocol's discovery with 400, say) says nothing of the call.
	ex.reset()
	res, err := cs.CallTool(ctx, params)
	took := time.Since(start)
	if err != nil {
		e := ex.failure(ctx, err, "the tool call failed")
		e.Sent = true
		return &Result{Duration: took}, e
	}
	body, err := json.Marshal(res)
	if err != nil {
		return &Result{Duration: took}, &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: "the tool's answer cannot be encoded", Sent: true, Err: err}
	}
	return &Result{Body: body, IsError: res.IsError, Duration: took}, nil
}

// errTooLarge marks a response over the task's size bound.
var errTooLarge = errors.New("response too large")

// exchange is the session's HTTP transport: it adds the task's headers and
// remembers what went wrong on the wire, which the SDK reports only as text.
type exchange struct {
	base   http.RoundTripper
	header http.Header
	max    int64

	mu     sync.Mutex
	err    error // first transport or size failure
	status int   // last non-2xx answer
}

func (x *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, v := range x.header {
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "agentg8")
	}
	resp, err := x.base.RoundTrip(req)
	if err != nil {
		x.note(err, 0)
		return nil, err
	}
	if resp.StatusCode > 299 && req.Method != http.MethodDelete {
		x.note(nil, resp.StatusCode)
	}
	resp.Body = &capped{r: resp.Body, left: x.max, x: x}
	return resp, nil
}

func (x *exchange) note(err error, status int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err != nil && x.err == nil {
		x.err = err
	}
	if status != 0 {
		x.status = status
	}
}

func (x *exchange) reset() {
	x.mu.Lock()
	x.err, x.status = nil, 0
	x.mu.Unlock()
}

// failure classifies a failed session: by what the wire saw when it saw
// something, else by the SDK's error.
func (x *exchange) failure(ctx context.Context, err error, what string) *httpconn.Error {
	x.mu.Lock()
	wireErr, status := x.err, x.status
	x.mu.Unlock()
	switch {
	case errors.Is(wireErr, errTooLarge):
		return &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: fmt.Sprintf("%s: a response exceeds %d bytes", what, x.max), Err: err}
	case wireErr != nil:
		e := httpconn.Classify(ctx, wireErr)
		e.Msg = what + ": " + e.Msg
		return e
	case ctx.Err() != nil:
		return httpconn.Classify(ctx, ctx.Err())
	case status != 0:
		return &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: fmt.Sprintf("%s: the MCP server answered %d %s", what, status, http.StatusText(status)), Err: err}
	}
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		return &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: fmt.Sprintf("%s: the MCP server answered error %d: %s", what, we.Code, clip(we.Message)), Err: err}
	}
	return &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: what, Err: err}
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// capped bounds one response body.
type capped struct {
	r    io.ReadCloser
	left int64
	x    *exchange
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		c.x.note(errTooLarge, 0)
		return 0, errTooLarge
	}
	return n, err
}

func (c *capped) Close() error { return c.r.Close() }
