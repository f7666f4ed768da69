package mcpserver

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The tools/call fast path.
//
// In stateless mode the go-sdk builds a session, a JSON-RPC connection and
// two goroutines for every HTTP request, and its JSON decoder allocates a
// 32 KB buffer per message it decodes (several per request); under load
// that costs more CPU than the action itself. The one request agents send
// over and over, a plain tools/call, is served here instead, with the same
// answer the SDK gives. Anything this path does not recognise exactly — other
// methods, batches, _meta other than an idempotency key alone (progress
// tokens, the 2026 protocol's per-request metadata), unknown members, other
// protocol versions, session headers, a body without Content-Length — goes
// to the SDK untouched, which stays the reference:
// TestMCPFastPathAnswersLikeTheSDK sends the same calls both ways and
// compares the answers.

// fastVersions are the protocol versions whose tools/call exchange this path
// reproduces; "" is a request without the header (2025-03-26 by default).
var fastVersions = map[string]bool{"": true, "2025-03-26": true, "2025-06-18": true, "2025-11-25": true}

// fastCall serves r if it is a plain tools/call of one of the agent's tools
// and reports whether it did. When it does not, r (and its body) are as they
// were.
func (h *handler) fastCall(w http.ResponseWriter, r *http.Request, s *agentServer) bool {
	if r.Method != http.MethodPost || r.ContentLength <= 0 || r.ContentLength > maxBody ||
		!fastVersions[r.Header.Get("Mcp-Protocol-Version")] ||
		r.Header.Get("Mcp-Session-Id") != "" || len(r.Header.Values("Last-Event-Id")) > 0 {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return false
	}
	if !acceptsBoth(r.Header.Values("Accept")) || !hostAllowed(r) {
		return false
	}
	body := make([]byte, r.ContentLength)
	n, err := io.ReadFull(r.Body, body)
	if err != nil {
		// Give the SDK what was read and the rest, so it reports the problem.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body[:n]), r.Body))
		return false
	}
	restore := func() bool {
		r.Body = io.NopCloser(bytes.NewReader(body))
		return false
	}
	var msg struct {
		JSONRPC string         `json:"jsonrpc"`
		ID      jsontext.Value `json:"id"`
		Method  string         `json:"method"`
		Params  jsontext.Value `json:"params"`
	}
	// Strict: duplicate or unknown members, or anything but one object,
	// leave the request to the SDK.
	if err := jsonv2.Unmarshal(body, &msg, jsonv2.RejectUnknownMembers(true)); err != nil ||
		msg.JSONRPC != "2.0" || msg.Method != "tools/call" || !validID(msg.ID) {
		return restore()
	}
	var params struct {
		Name      string         `json:"name"`
		Arguments jsontext.Value `json:"arguments"`
		Meta      jsontext.Value `json:"_meta"`
	}
	if err := jsonv2.Unmarshal(msg.Params, &params, jsonv2.RejectUnknownMembers(true)); err != nil {
		return restore()
	}
	fn, ok := s.tools[params.Name]
	if !ok {
		return restore()
	}
	key, ok := fastMeta(params.Meta)
	if !ok {
		return restore()
	}
	res := fn(r.Context(), json.RawMessage(params.Arguments), key)
	if res.Content == nil {
		res.Content = []mcp.Content{} // as the SDK does: never "null"
	}
	result, err := json.Marshal(res)
	if err != nil {
		// The call has run; report like the SDK would for an unmarshalable result.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return true
	}
	// The envelope by hand: json.Marshal of a struct holding the result
	// would validate and compact the result's bytes a second time.
	out := make([]byte, 0, len(result)+len(msg.ID)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, msg.ID...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	out = append(out, '}')
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
	return true
}

// fastMeta reads the idempotency key from a call's _meta if that is all
// _meta holds (or there is none); anything else is the SDK's.
func fastMeta(raw jsontext.Value) (key string, ok bool) {
	if len(raw) == 0 {
		return "", true
	}
	var meta map[string]jsontext.Value
	if err := jsonv2.Unmarshal(raw, &meta); err != nil || len(meta) != 1 {
		return "", false
	}
	v, ok := meta[MetaIdempotencyKey]
	if !ok || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	if err := jsonv2.Unmarshal(v, &key); err != nil || key == "" {
		return "", false
	}
	return key, true
}

// validID accepts the request IDs this path echoes exactly: a string, or an
// integer written plainly. Others (null, fractions, exponents) go to the SDK.
func validID(id jsontext.Value) bool {
	if len(id) == 0 {
		return false
	}
	if id[0] == '"' {
		var s string
		return json.Unmarshal(id, &s) == nil
	}
	if _, err := strconv.ParseInt(string(id), 10, 64); err != nil {
		return false
	}
	return string(id) == "0" || (id[0] != '0' && !strings.HasPrefix(string(id), "-0"))
}

// acceptsBoth mirrors the SDK's check that Accept allows both JSON and SSE.
func acceptsBoth(values []string) bool {
	js, sse := accepts(values)
	return js && sse
}

// accepts reads Accept headers: whether they allow JSON, and event streams.
func accepts(values []string) (js, sse bool) {
	for _, v := range values {
		for _, raw := range strings.Split(v, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(raw), ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				js = true
			case "text/event-stream", "text/*":
				sse = true
			case "*/*":
				js, sse = true, true
			}
		}
	}
	return js, sse
}

// hostAllowed is the SDK's DNS-rebinding rule, answered conservatively: on a
// loopback listener only a Host that is certainly loopback passes; anything
// else goes to the SDK, which refuses or serves it.
func hostAllowed(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || local == nil {
		return false
	}
	if !isLoopback(local.String()) {
		return true
	}
	return isLoopback(r.Host)
}

func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
