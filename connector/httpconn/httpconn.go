// Package httpconn executes rendered task requests over HTTP with the
// gateway's egress rules: per-call timeouts, a response size cap, no
// redirects unless the task allows them (and then only to the same origin),
// and an egress guard that checks the address actually dialled.
package httpconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/agentg8/agentg8"
)

// Call is one upstream request.
type Call struct {
	Method           string
	URL              string
	Header           http.Header
	Body             []byte
	Timeout          time.Duration
	MaxResponseBytes int64
	FollowRedirects  bool
}

// Response is what the upstream answered.
type Response struct {
	Status   int
	Header   http.Header
	Body     []byte
	Duration time.Duration
}

// Error is a failed call. Sent tells whether any byte may have reached the
// upstream; when false the call is known not to have taken effect.
type Error struct {
	Code string // agentg8 error code
	Msg  string
	Sent bool
	Err  error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Connector sends calls. Safe for concurrent use.
type Connector struct {
	client       *http.Client
	allowPrivate bool
}

type redirectKey struct{}

// New returns a connector; allowPrivate lets calls reach loopback and private
// addresses (tests and internal APIs).
func New(allowPrivate bool) *Connector {
	c := &Connector{allowPrivate: allowPrivate}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: c.control}
	tr := &http.Transport{
		Proxy:       nil, // a proxy would be the dialled address, defeating the guard
		DialContext: d.DialContext,
		// A gateway sends many concurrent calls to few hosts: an idle pool
		// smaller than the concurrency closes connections only to open new
		// ones (at 256 concurrent actions, 64 made one call in eight dial).
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	c.client = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		follow, _ := req.Context().Value(redirectKey{}).(bool)
		if !follow {
			return http.ErrUseLastResponse
		}
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
			return fmt.Errorf("redirect to another origin (%s) refused", req.URL.Host)
		}
		return nil
	}}
	return c
}

// errEgress marks a dial the guard refused.
var errEgress = errors.New("egress refused")

// control runs after name resolution with the exact address being dialled.
func (c *Connector) control(_, address string, _ syscall.RawConn) error {
	if c.allowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparseable address %q", errEgress, address)
	}
	if !Public(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address", errEgress, ap.Addr())
	}
	return nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Public reports whether a is a globally routable unicast address.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() &&
		!a.IsLinkLocalUnicast() && !cgnat.Contains(a)
}

// Do sends the call. Failures are *Error.
func (c *Connector) Do(ctx context.Context, call Call) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, call.Timeout)
	defer cancel()
	ctx = context.WithValue(ctx, redirectKey{}, call.FollowRedirects)
	var body io.Reader
	if call.Body != nil {
		body = bytes.NewReader(call.Body)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, call.URL, body)
	if err != nil {
		return nil, &Error{Code: agentg8.CodeUpstreamError, Msg: "request could not be built", Err: err}
	}
	for k, v := range call.Header {
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "agentg8")
	}
	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, Classify(ctx, err)
	}
	defer resp.Body.Close()
	max := call.MaxResponseBytes
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		e := Classify(ctx, err)
		e.Sent = true
		return nil, e
	}
	if int64(len(b)) > max {
		return nil, &Error{Code: agentg8.CodeUpstreamError, Msg: fmt.Sprintf("upstream response exceeds %d bytes", max), Sent: true}
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b, Duration: time.Since(start)}, nil
}

// Client is the guarded HTTP client, for connectors speaking a protocol
// over HTTP. It follows no redirects.
func (c *Connector) Client() *http.Client { return c.client }

// Classify turns a failed HTTP exchange into an *Error.
func Classify(ctx context.Context, err error) *Error {
	var ne net.Error
	switch {
	case errors.Is(err, errEgress):
		return &Error{Code: agentg8.CodeEgressDenied, Msg: "egress to this address is not allowed", Err: err}
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		// A timeout may strike after the request was written.
		return &Error{Code: agentg8.CodeUpstreamTimeout, Msg: "upstream did not answer in time", Sent: true, Err: err}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return &Error{Code: agentg8.CodeUpstreamError, Msg: "upstream could not be reached", Err: err}
	}
	return &Error{Code: agentg8.CodeUpstreamError, Msg: "upstream request failed", Sent: true, Err: err}
}
