// Package crm is a small CRM-style JSON API used as the demo's upstream and in
// tests. It requires a bearer key, like a real SaaS API would. It also serves
// an MCP endpoint (/mcp) with one tool, open_ticket, behind the same key:
// the demo's example of a task that calls an upstream MCP server's tool.
package crm

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8/credential"
)

// Customer is a CRM record.
type Customer struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Plan        string `json:"plan"`
	Notes       []Note `json:"notes"`
	InternalRef string `json:"internal_ref"`
}

// Note is a note on a customer.
type Note struct {
	ID     int    `json:"id"`
	Text   string `json:"text"`
	Author string `json:"author"`
}

// Server is the sample CRM. Safe for concurrent use.
type Server struct {
	mux       *http.ServeMux
	key       string
	jwks      string // where to fetch AgentG8's token keys, for /whoami
	mu        sync.Mutex
	customers map[string]*Customer
	seen      map[string]Note   // Idempotency-Key -> note, so retries don't duplicate
	tickets   map[string]Ticket // idempotency key (or ticket ID) -> ticket
}

// Ticket is a support ticket opened through the CRM's MCP tool.
type Ticket struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Subject    string `json:"subject"`
	Status     string `json:"status"`
	OpenedBy   string `json:"opened_by"`
}

// New returns a CRM that accepts only "Bearer <key>".
func New(key string) *Server {
	s := &Server{key: key, seen: map[string]Note{}, tickets: map[string]Ticket{}, mux: http.NewServeMux(), customers: map[string]*Customer{
		"cus_1": {ID: "cus_1", Name: "Ada Lovelace", Plan: "enterprise", Notes: []Note{}, InternalRef: "ref-ada-7731"},
		"cus_2": {ID: "cus_2", Name: "Alan Turing", Plan: "pro", Notes: []Note{}, InternalRef: "ref-alan-1912"},
	}}
	s.mux.HandleFunc("GET /customers/{id}", s.get)
	s.mux.HandleFunc("POST /customers/{id}/notes", s.addNote)
	s.mux.HandleFunc("DELETE /customers/{id}", s.delete)
	s.mux.HandleFunc("PATCH /customers/{id}", s.update)
	tools := mcp.NewServer(&mcp.Implementation{Name: "sample-crm", Version: "1"}, nil)
	mcp.AddTool(tools, &mcp.Tool{Name: "open_ticket", Description: "Open a support ticket for a customer."}, s.openTicket)
	s.mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return tools }, nil))
	return s
}

type ticketIn struct {
	CustomerID string `json:"customer_id" jsonschema:"the customer, cus_…"`
	Subject    string `json:"subject"`
	OpenedBy   string `json:"opened_by,omitempty"`
}

// openTicket honours an idempotency key in _meta: a repeated call with the
// same key answers the ticket already opened.
func (s *Server) openTicket(ctx context.Context, req *mcp.CallToolRequest, in ticketIn) (*mcp.CallToolResult, Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.customers[in.CustomerID]; !ok {
		return nil, Ticket{}, fmt.Errorf("no such customer %q", in.CustomerID)
	}
	key, _ := req.Params.Meta["agentg8/idempotency-key"].(string)
	if t, dup := s.tickets[key]; dup && key != "" {
		return nil, t, nil
	}
	t := Ticket{ID: fmt.Sprintf("TCK-%d", len(s.tickets)+1), CustomerID: in.CustomerID, Subject: in.Subject, Status: "open", OpenedBy: in.OpenedBy}
	if key == "" {
		key = t.ID
	}
	s.tickets[key] = t
	return nil, t, nil
}

// SetJWKS names AgentG8's JWKS URL; /whoami then accepts minted tokens.
func (s *Server) SetJWKS(url string) {
	s.mu.Lock()
	s.jwks = url
	s.mu.Unlock()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/whoami" {
		s.whoami(w, r)
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.key)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customer(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) addNote(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Text   string `json:"text"`
		Author string `json:"author"`
	}
	if !decode(w, r, &in, func() bool { return in.Text != "" }, "text is required") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customer(w, r)
	if !ok {
		return
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if n, dup := s.seen[k]; dup {
			writeJSON(w, http.StatusOK, map[string]any{"note": n, "customer_id": c.ID})
			return
		}
	}
	n := Note{ID: len(c.Notes) + 1, Text: in.Text, Author: in.Author}
	c.Notes = append(c.Notes, n)
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		s.seen[k] = n
	}
	writeJSON(w, http.StatusCreated, map[string]any{"note": n, "customer_id": c.ID, "internal_ref": fmt.Sprintf("note-%s-%d", c.ID, n.ID)})
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Plan string `json:"plan"`
	}
	if !decode(w, r, &in, func() bool { return in.Plan != "" }, "plan is required") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customer(w, r)
	if !ok {
		return
	}
	c.Plan = in.Plan
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customer(w, r)
	if !ok {
		return
	}
	delete(s.customers, c.ID)
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a small JSON body; it answers 400 itself when it fails.
func decode(w http.ResponseWriter, r *http.Request, v any, ok func() bool, msg string) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil || !ok() {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
		return false
	}
	return true
}

// customer finds the path's customer (s.mu held); it answers 404 itself.
func (s *Server) customer(w http.ResponseWriter, r *http.Request) (*Customer, bool) {
	c, ok := s.customers[r.PathValue("id")]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such customer"})
	}
	return c, ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// whoami verifies a token AgentG8 minted for this call (as an internal API
// would) and answers with its claims: who acts, for whom, for which action.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	jwksURL := s.jwks
	s.mu.Unlock()
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || jwksURL == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a minted token is required"})
		return
	}
	resp, err := http.Get(jwksURL)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "cannot fetch the gateway's keys"})
		return
	}
	defer resp.Body.Close()
	var keys jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "bad JWKS"})
		return
	}
	aud := "http://" + r.Host
	std, ext, err := credential.VerifyToken(tok, keys, "", aud, time.Now())
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "token rejected: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"verified": true, "iss": std.Issuer, "sub": std.Subject, "aud": std.Audience,
		"jti": std.ID, "expires_at": std.Expiry.Time().UTC(), "act": ext.Act, "scope": ext.Scope, "agentg8": ext.AgentG8})
}
