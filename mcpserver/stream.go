package mcpserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/agentg8/agentg8"
)

// Server-to-client streams.
//
// The endpoint keeps no sessions, but an agent may hold a stream open on
// which the gateway sends notifications/tools/list_changed when tasks,
// policies or agents are reloaded, so clients need not poll tools/list:
//   - protocol versions up to 2025-11-25: the optional GET stream of
//     Streamable HTTP;
//   - 2026-07-28 and later: a subscriptions/listen request (SEP-2575),
//     answered as an event stream that starts with
//     notifications/subscriptions/acknowledged.
// Nothing else is sent on them. A stream is authenticated like every
// request and checked again at each reload and every keepalive, so an
// agent whose key is revoked (or whose token expires) loses it.

// Bounds on open streams: per agent and in all.
const (
	maxStreamsPerAgent = 8
	maxStreams         = 1024
	keepalive          = 25 * time.Second
)

const listChanged = `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`

type listener struct {
	token string
	agent string
	wake  chan struct{} // buffered: a change not yet sent
	end   chan struct{} // closed to end the stream
	once  sync.Once
}

func (l *listener) stop() { l.once.Do(func() { close(l.end) }) }

// listeners are the open streams.
type listeners struct {
	mu     sync.Mutex
	all    map[*listener]struct{}
	closed bool
}

// add registers a stream unless a bound is reached or the endpoint closed.
func (ls *listeners) add(l *listener) (ok bool, why string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return false, "the gateway is stopping"
	}
	if len(ls.all) >= maxStreams {
		return false, "too many open streams"
	}
	n := 0
	for o := range ls.all {
		if o.agent == l.agent {
			n++
		}
	}
	if n >= maxStreamsPerAgent {
		return false, "too many open streams for this agent"
	}
	if ls.all == nil {
		ls.all = map[*listener]struct{}{}
	}
	ls.all[l] = struct{}{}
	return true, ""
}

func (ls *listeners) count() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.all)
}

func (ls *listeners) remove(l *listener) {
	ls.mu.Lock()
	delete(ls.all, l)
	ls.mu.Unlock()
}

// each runs fn on every open stream.
func (ls *listeners) each(fn func(*listener)) {
	ls.mu.Lock()
	list := make([]*listener, 0, len(ls.all))
	for l := range ls.all {
		list = append(list, l)
	}
	ls.mu.Unlock()
	for _, l := range list {
		fn(l)
	}
}

// close ends every stream and refuses new ones.
func (ls *listeners) close() {
	ls.mu.Lock()
	ls.closed = true
	ls.mu.Unlock()
	ls.each((*listener).stop)
}

// still reports whether a stream's token still names its agent.
func (h *handler) still(l *listener) bool {
	p, ok := h.c.Auth.Authenticate(l.token)
	return ok && p.Kind == agentg8.KindAgent && p.ID == l.agent
}

// changed tells every stream whose agent is still valid that the tool list
// may have changed, and ends the others.
func (h *handler) changed() {
	h.streams.each(func(l *listener) {
		if !h.still(l) {
			l.stop()
			return
		}
		select {
		case l.wake <- struct{}{}:
		default: // one already waiting says it all
		}
	})
}

// feed is what one stream sends, as whole SSE events.
type feed struct {
	first   string // when it opens; "" for nothing
	changed string // on each change
	last    string // when the gateway ends it; "" for nothing
}

func event(msg string) string { return "event: message\ndata: " + msg + "\n\n" }

// stream serves GET /mcp for an authenticated agent.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, p agentg8.Principal, token string) {
	if !acceptsEventStream(r.Header.Values("Accept")) {
		problem(w, http.StatusNotAcceptable, agentg8.CodeInvalidInput, "GET /mcp opens an event stream: Accept must include text/event-stream")
		return
	}
	// Nothing is replayed after a Last-Event-ID: a change missed while away
	// is seen at the next tools/list, which a reconnecting client sends.
	h.serveFeed(w, r, p, token, feed{changed: event(listChanged)})
}

// listenCall is a SEP-2575 subscriptions/listen request.
type listenCall struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  struct {
		Notifications *struct {
			ToolsListChanged bool `json:"toolsListChanged"`
		} `json:"notifications"`
	} `json:"params"`
}

// listen serves r if it is a subscriptions/listen request and reports
// whether it did; otherwise r and its body are as they were. The SDK's
// stateless JSON mode would hold such a request open without ever
// answering or notifying.
func (h *handler) listen(w http.ResponseWriter, r *http.Request, p agentg8.Principal, token string) bool {
	if r.Method != http.MethodPost || r.Header.Get("Mcp-Protocol-Version") < "2026-07-28" ||
		r.ContentLength <= 0 || r.ContentLength > maxBody {
		return false
	}
	body := make([]byte, r.ContentLength)
	n, err := io.ReadFull(r.Body, body)
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body[:n]), r.Body))
	if err != nil {
		return false
	}
	if !bytes.Contains(body, []byte(`"subscriptions/listen"`)) {
		return false // every other 2026 request: not decoded twice
	}
	var c listenCall
	if json.Unmarshal(body, &c) != nil || c.JSONRPC != "2.0" || c.Method != "subscriptions/listen" ||
		!validID(jsontext.Value(c.ID)) || c.Params.Notifications == nil || !acceptsEventStream(r.Header.Values("Accept")) {
		return false
	}
	id := string(c.ID)
	meta := `{"` + metaSubscriptionID + `":` + id + `}`
	agreed := c.Params.Notifications.ToolsListChanged
	ack := event(`{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":` + meta +
		`,"notifications":{` + map[bool]string{true: `"toolsListChanged":true`}[agreed] + `}}}`)
	done := event(`{"jsonrpc":"2.0","id":` + id + `,"result":{"_meta":` + meta + `}}`)
	if !agreed {
		// Nothing this gateway sends was asked for: acknowledge and end.
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, ack+done)
		return true
	}
	h.serveFeed(w, r, p, token, feed{first: ack, last: done,
		changed: event(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":` + meta + `}}`)})
	return true
}

// metaSubscriptionID ties a notification to its subscriptions/listen.
const metaSubscriptionID = "io.modelcontextprotocol/subscriptionId"

// serveFeed holds a stream open until the client leaves or the gateway
// ends it, sending f.changed after each reload.
func (h *handler) serveFeed(w http.ResponseWriter, r *http.Request, p agentg8.Principal, token string, f feed) {
	if !hostAllowed(r) {
		problem(w, http.StatusForbidden, agentg8.CodeForbidden, "this Host is not served on a loopback listener")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		problem(w, http.StatusMethodNotAllowed, agentg8.CodeInvalidInput, "streams are not available here")
		return
	}
	l := &listener{token: token, agent: p.ID, wake: make(chan struct{}, 1), end: make(chan struct{})}
	if ok, why := h.streams.add(l); !ok {
		w.Header().Set("Retry-After", "30")
		problem(w, http.StatusTooManyRequests, agentg8.CodeRateLimited, why)
		return
	}
	defer h.streams.remove(l)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache, no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, f.first)
	fl.Flush()
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		var msg string
		select {
		case <-r.Context().Done():
			return
		case <-l.end:
			io.WriteString(w, f.last)
			fl.Flush()
			return
		case <-tick.C:
			if !h.still(l) {
				io.WriteString(w, f.last)
				fl.Flush()
				return
			}
			msg = ": keepalive\n\n"
		case <-l.wake:
			msg = f.changed
		}
		if _, err := io.WriteString(w, msg); err != nil {
			return
		}
		fl.Flush()
	}
}

func acceptsEventStream(values []string) bool {
	_, sse := accepts(values)
	return sse
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "detail": detail})
}
