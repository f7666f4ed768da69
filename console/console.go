// Package console is the web console for people: an approvals inbox with the
// diff of what will change, action history with timelines, the audit log
// with verification, and the task catalog. Templates and assets are embedded
// in the binary. Approval decisions go through the same service as the API,
// so the same rules (hash binding, separation of duties) hold.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/registry"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Actions is what the console needs from the pipeline.
type Actions interface {
	Approvals(ctx context.Context, p agentg8.Principal) ([]*agentg8.Action, error)
	Approval(ctx context.Context, p agentg8.Principal, approvalID string) (*agentg8.Action, error)
	Decide(ctx context.Context, p agentg8.Principal, approvalID string, approve bool, hash, comment string) (*agentg8.Action, error)
	List(ctx context.Context, p agentg8.Principal, f action.Filter) ([]*agentg8.Action, error)
	Get(ctx context.Context, p agentg8.Principal, id string, wait time.Duration) (*agentg8.Action, error)
	MayAudit(p agentg8.Principal) bool
	MayResolve(p agentg8.Principal) bool
	Resolve(ctx context.Context, p agentg8.Principal, id string, outcome agentg8.State, comment string) (*agentg8.Action, error)
}

// AuditSource reads and verifies the audit log.
type AuditSource interface {
	audit.Reader
	AuditRecordsForAction(ctx context.Context, actionID string, after int64, limit int) ([]audit.Record, error)
	LatestAuditCheckpoint(ctx context.Context) ([]byte, error)
	AuditSize(ctx context.Context) (int64, error)
}

// Authenticator maps a key to a principal.
type Authenticator interface {
	Authenticate(token string) (agentg8.Principal, bool)
	// User returns the user with this ID as now configured (a reload may
	// have changed their groups or removed them).
	User(id string) (agentg8.Principal, bool)
}

// Catalog answers what tasks exist and which agents may propose them.
type Catalog interface {
	Tasks() []*registry.Task
	CouldPermit(agent agentg8.Principal, task string) bool
}

// Config wires the console.
type Config struct {
	Actions Actions
	Audit   AuditSource
	Auth    Authenticator
	Catalog Catalog
	// Agents lists the configured agents (the tasks page shows who may
	// propose what); a reload may change them.
	Agents      func() []agentg8.Principal
	VerifierKey string
	Logger      *slog.Logger
	// SessionTTL bounds a sign-in (default 8h).
	SessionTTL time.Duration
	// Sessions keeps sign-ins; default: this process's memory. Replicas
	// share theirs through the database, so a sign-in holds on any of
	// them.
	Sessions Sessions
	Now      func() time.Time
	// SecureCookies marks the sign-in cookie Secure on every answer (the
	// public URL is https, whether or not the TLS terminator says so);
	// otherwise only on TLS requests and X-Forwarded-Proto: https.
	SecureCookies bool
}

// Session is a sign-in.
type Session struct {
	Principal agentg8.Principal
	CSRF      string
	Expires   time.Time
}

// Sessions keeps sign-ins by the token in their cookie.
type Sessions interface {
	// PutSession stores s under token, and may drop sessions expired at now.
	PutSession(ctx context.Context, token string, s Session, now time.Time) error
	// GetSession returns the session stored under token, or nil.
	GetSession(ctx context.Context, token string) (*Session, error)
	DeleteSession(ctx context.Context, token string) error
	// DeleteUserSessions ends every sign-in of a user (their key changed).
	DeleteUserSessions(ctx context.Context, userID string) error
}

// NewMemorySessions keeps sign-ins in this process's memory.
func NewMemorySessions() Sessions { return &memorySessions{m: map[string]Session{}} }

// memorySessions keeps sign-ins in this process.
type memorySessions struct {
	mu sync.Mutex
	m  map[string]Session
}

func (m *memorySessions) PutSession(_ context.Context, token string, s Session, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, old := range m.m {
		if now.After(old.Expires) {
			delete(m.m, t)
		}
	}
	m.m[token] = s
	return nil
}

func (m *memorySessions) GetSession(_ context.Context, token string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[token]
	if !ok {
		return nil, nil
	}
	return &s, nil
}

func (m *memorySessions) DeleteSession(_ context.Context, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, token)
	return nil
}

func (m *memorySessions) DeleteUserSessions(_ context.Context, userID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, s := range m.m {
		if s.Principal.ID == userID {
			delete(m.m, t)
		}
	}
	return nil
}

type session struct {
	p    agentg8.Principal
	csrf string
}

type console struct {
	c    Config
	tmpl map[string]*template.Template
}

const cookieName = "agentg8_session"

// New returns the console, to be mounted at /console/.
func New(c Config) (http.Handler, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Agents == nil {
		c.Agents = func() []agentg8.Principal { return nil }
	}
	if c.Sessions == nil {
		c.Sessions = NewMemorySessions()
	}
	k := &console{c: c, tmpl: map[string]*template.Template{}}
	funcs := template.FuncMap{"reveal": reveal, "json": prettyJSON, "since": func(t time.Time) string { return since(c.Now(), t) },
		"until": func(t time.Time) string { return since(t, c.Now()) }, "time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"difflines": diffLines, "join": strings.Join, "statuses": func() []string {
			return []string{"dry_run", "denied", "pending_approval", "approved", "executing", "succeeded", "failed", "outcome_unknown", "rejected", "expired", "cancelled"}
		}}
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", p)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", p, err)
		}
		k.tmpl[name] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /console/login", k.loginPage)
	mux.HandleFunc("POST /console/login", k.login)
	mux.Handle("POST /console/logout", k.auth(k.logout))
	mux.Handle("GET /console/{$}", k.auth(k.inbox))
	mux.Handle("GET /console/inbox.json", k.auth(k.inboxJSON))
	mux.Handle("GET /console/approvals/{id}", k.auth(k.approval))
	mux.Handle("POST /console/approvals/{id}/decide", k.auth(k.decide))
	mux.Handle("GET /console/actions", k.auth(k.actions))
	mux.Handle("GET /console/actions/{id}", k.auth(k.actionPage))
	mux.Handle("POST /console/actions/{id}/resolve", k.auth(k.resolve))
	mux.Handle("GET /console/audit", k.auth(k.auditPage))
	mux.Handle("POST /console/audit/verify", k.auth(k.verify))
	mux.Handle("GET /console/tasks", k.auth(k.tasks))
	// State-changing requests from other origins are refused (CSRF), on top
	// of the per-session token every form carries.
	return securityHeaders(http.NewCrossOriginProtection().Handler(mux)), nil
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

type page struct {
	Title   string
	User    *agentg8.Principal
	CSRF    string
	Auditor bool
	Flash   string
	Error   string
	Data    any
}

func (k *console) render(w http.ResponseWriter, name string, status int, pg page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := k.tmpl[name].Execute(w, pg); err != nil {
		k.c.Logger.Error("console render", "page", name, "err", err)
	}
}

type handler func(w http.ResponseWriter, r *http.Request, s *session) error

// session returns the request's signed-in session, nil when there is
// none, or an error when the session store cannot be read (then the user
// is told so, not sent to sign in again).
func (k *console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	s, err := k.c.Sessions.GetSession(r.Context(), ck.Value)
	if err != nil {
		return nil, agentg8.StoreFailed(k.c.Logger, "read a console session", err)
	}
	if s == nil || k.c.Now().After(s.Expires) {
		return nil, nil
	}
	// The user as configured now: removed users are signed out, changed
	// groups apply at once.
	p, ok := k.c.Auth.User(s.Principal.ID)
	if !ok {
		return nil, nil
	}
	return &session{p: p, csrf: s.CSRF}, nil
}

func (k *console) auth(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := k.session(r)
		if err != nil {
			k.render(w, "error", http.StatusServiceUnavailable, k.base(nil, "Error", nil, agentg8.AsError(err).Message))
			return
		}
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
			} else {
				http.Error(w, "sign in first", http.StatusUnauthorized)
			}
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
				http.Error(w, "invalid form token; reload the page", http.StatusForbidden)
				return
			}
		}
		if err := h(w, r, s); err != nil {
			e := agentg8.AsError(err)
			if e.Code == agentg8.CodeInternal {
				k.c.Logger.Error("console", "err", err)
			}
			status := http.StatusBadRequest
			switch e.Code {
			case agentg8.CodeNotFound:
				status = http.StatusNotFound
			case agentg8.CodeForbidden:
				status = http.StatusForbidden
			case agentg8.CodeInternal:
				status = http.StatusInternalServerError
			case agentg8.CodeAuditUnavailable:
				status = http.StatusServiceUnavailable
			}
			k.render(w, "error", status, k.base(s, "Error", nil, e.Message))
		}
	})
}

func (k *console) base(s *session, title string, data any, errMsg string) page {
	pg := page{Title: title, Data: data, Error: errMsg}
	if s != nil {
		pg.User, pg.CSRF, pg.Auditor = &s.p, s.csrf, k.c.Actions.MayAudit(s.p)
	}
	return pg
}

func (k *console) loginPage(w http.ResponseWriter, r *http.Request) {
	k.render(w, "login", http.StatusOK, page{Title: "Sign in"})
}

func (k *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	p, ok := k.c.Auth.Authenticate(strings.TrimSpace(r.PostFormValue("key")))
	if !ok || p.Kind != agentg8.KindUser {
		// Agents' keys never sign in.
		k.render(w, "login", http.StatusUnauthorized, page{Title: "Sign in", Error: "That key does not belong to a user."})
		return
	}
	id := randomToken()
	now := k.c.Now()
	if err := k.c.Sessions.PutSession(r.Context(), id, Session{Principal: p, CSRF: randomToken(), Expires: now.Add(k.c.SessionTTL)}, now); err != nil {
		k.c.Logger.Error("console sessions", "err", err)
		k.render(w, "login", http.StatusServiceUnavailable, page{Title: "Sign in", Error: "Signing in is unavailable; try again."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/console", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: k.c.SecureCookies || r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https", MaxAge: int(k.c.SessionTTL.Seconds())})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (k *console) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	if ck, err := r.Cookie(cookieName); err == nil {
		if err := k.c.Sessions.DeleteSession(r.Context(), ck.Value); err != nil {
			return agentg8.StoreFailed(k.c.Logger, "sign out", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/console", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
	return nil
}

// inboxRow is one pending approval in the inbox.
type inboxRow struct {
	ApprovalID string            `json:"approval_id"`
	Task       string            `json:"task"`
	Agent      string            `json:"agent"`
	OnBehalfOf string            `json:"on_behalf_of,omitempty"`
	Risk       string            `json:"risk"`
	Amounts    map[string]string `json:"amounts,omitempty"`
	Created    time.Time         `json:"created_at"`
	Expires    time.Time         `json:"expires_at"`
	CanDecide  bool              `json:"can_decide"`
}

var amountFields = []string{"amount", "total", "price", "value", "quantity", "seats", "plan"}

func (k *console) rows(ctx context.Context, p agentg8.Principal) ([]inboxRow, error) {
	acts, err := k.c.Actions.Approvals(ctx, p)
	if err != nil {
		return nil, err
	}
	risks := map[string]string{}
	for _, t := range k.c.Catalog.Tasks() {
		risks[t.Name] = t.Risk
	}
	rows := []inboxRow{}
	for _, a := range acts {
		row := inboxRow{ApprovalID: a.Approval.ID, Task: a.Task, Agent: a.Principal, OnBehalfOf: a.OnBehalfOf, Risk: risks[a.Task],
			Created: a.CreatedAt, Expires: a.Approval.ExpiresAt, CanDecide: action.CanDecide(p, a), Amounts: map[string]string{}}
		var in map[string]any
		json.Unmarshal(a.Input, &in)
		for _, f := range amountFields {
			if v, ok := in[f]; ok {
				row.Amounts[f] = fmt.Sprint(v)
			}
		}
		rows = append(rows, row)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Created.After(rows[j].Created) })
	return rows, nil
}

func (k *console) inbox(w http.ResponseWriter, r *http.Request, s *session) error {
	rows, err := k.rows(r.Context(), s.p)
	if err != nil {
		return err
	}
	k.render(w, "inbox", http.StatusOK, k.base(s, "Approvals", rows, ""))
	return nil
}

func (k *console) inboxJSON(w http.ResponseWriter, r *http.Request, s *session) error {
	rows, err := k.rows(r.Context(), s.p)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"approvals": rows})
}

type approvalView struct {
	A         *agentg8.Action
	CanDecide bool
	Diff      []diffOp
	Self      bool
}

type diffOp struct {
	Op       string          `json:"op"`
	Path     string          `json:"path"`
	Value    json.RawMessage `json:"value"`
	OldValue json.RawMessage `json:"old_value"`
}

func (k *console) approval(w http.ResponseWriter, r *http.Request, s *session) error {
	a, err := k.c.Actions.Approval(r.Context(), s.p, r.PathValue("id"))
	if err != nil {
		return err
	}
	v := approvalView{A: a, CanDecide: action.CanDecide(s.p, a), Self: s.p.ID == a.OnBehalfOf}
	if a.Preview != nil && len(a.Preview.Diff) > 0 {
		json.Unmarshal(a.Preview.Diff, &v.Diff)
	}
	pg := k.base(s, "Approval "+a.Approval.ID, v, "")
	// Only the console's own messages: a crafted link cannot put words here.
	if f := r.URL.Query().Get("flash"); f == "Approved" || f == "Rejected" {
		pg.Flash = f
	}
	k.render(w, "approval", http.StatusOK, pg)
	return nil
}

func (k *console) decide(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	approve := r.PostFormValue("decision") == "approve"
	_, err := k.c.Actions.Decide(r.Context(), s.p, id, approve, r.PostFormValue("request_hash"), r.PostFormValue("comment"))
	if err != nil {
		e := agentg8.AsError(err)
		msg := e.Message
		switch e.Code {
		case agentg8.CodeApprovalMismatch, agentg8.CodeApprovalVoid:
			msg = "This request changed since you opened it. Nothing was decided; review the current request below."
		case agentg8.CodeInternal:
			return err
		}
		a, gerr := k.c.Actions.Approval(r.Context(), s.p, id)
		if gerr != nil {
			return err
		}
		v := approvalView{A: a, CanDecide: action.CanDecide(s.p, a), Self: s.p.ID == a.OnBehalfOf}
		if a.Preview != nil && len(a.Preview.Diff) > 0 {
			json.Unmarshal(a.Preview.Diff, &v.Diff)
		}
		k.render(w, "approval", http.StatusConflict, k.base(s, "Approval "+id, v, msg))
		return nil
	}
	verb := "Rejected"
	if approve {
		verb = "Approved"
	}
	http.Redirect(w, r, "/console/approvals/"+id+"?flash="+verb, http.StatusSeeOther)
	return nil
}

func (k *console) actions(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	f := action.Filter{Task: q.Get("task"), Status: agentg8.State(q.Get("status")), Limit: 200}
	if to := q.Get("to"); to != "" {
		if t, err := time.Parse("2006-01-02", to); err == nil {
			f.Before = t.Add(24 * time.Hour)
		}
	}
	acts, err := k.c.Actions.List(r.Context(), s.p, f)
	if err != nil {
		return err
	}
	var from time.Time
	if v := q.Get("from"); v != "" {
		from, _ = time.Parse("2006-01-02", v)
	}
	var out []*agentg8.Action
	for _, a := range acts {
		if (q.Get("agent") == "" || a.Principal == q.Get("agent")) && (q.Get("user") == "" || a.OnBehalfOf == q.Get("user")) &&
			(from.IsZero() || !a.CreatedAt.Before(from)) {
			out = append(out, a)
		}
	}
	pg := k.base(s, "Actions", map[string]any{"Actions": out, "Q": q}, "")
	k.render(w, "actions", http.StatusOK, pg)
	return nil
}

type event struct {
	agentg8.AuditEvent
	Raw string
}

func (k *console) events(recs []audit.Record) []event {
	var out []event
	for _, r := range recs {
		var ev agentg8.AuditEvent
		json.Unmarshal(r.Data, &ev)
		out = append(out, event{AuditEvent: ev, Raw: string(r.Data)})
	}
	return out
}

func (k *console) actionPage(w http.ResponseWriter, r *http.Request, s *session) error {
	a, err := k.c.Actions.Get(r.Context(), s.p, r.PathValue("id"), 0)
	if err != nil {
		return err
	}
	return k.renderAction(w, r, s, a, http.StatusOK, "")
}

func (k *console) renderAction(w http.ResponseWriter, r *http.Request, s *session, a *agentg8.Action, status int, errMsg string) error {
	recs, err := k.c.Audit.AuditRecordsForAction(r.Context(), a.ID, -1, 200)
	if err != nil {
		return agentg8.StoreFailed(k.c.Logger, "read an action's audit events", err)
	}
	canResolve := a.Status == agentg8.StateOutcomeUnknown && k.c.Actions.MayResolve(s.p)
	k.render(w, "action", status, k.base(s, "Action "+a.ID, map[string]any{"A": a, "Events": k.events(recs), "CanResolve": canResolve}, errMsg))
	return nil
}

// resolve settles an outcome_unknown action: the resolver checked the
// upstream and says what happened, and how they know.
func (k *console) resolve(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PathValue("id")
	_, err := k.c.Actions.Resolve(r.Context(), s.p, id, agentg8.State(r.PostFormValue("outcome")), r.PostFormValue("comment"))
	if err != nil {
		e := agentg8.AsError(err)
		if e.Code == agentg8.CodeInternal || e.Code == agentg8.CodeForbidden || e.Code == agentg8.CodeNotFound {
			return err
		}
		a, gerr := k.c.Actions.Get(r.Context(), s.p, id, 0)
		if gerr != nil {
			return err
		}
		status := http.StatusBadRequest
		if e.Code == agentg8.CodeConflict {
			status = http.StatusConflict
		}
		return k.renderAction(w, r, s, a, status, e.Message)
	}
	http.Redirect(w, r, "/console/actions/"+id, http.StatusSeeOther)
	return nil
}

func (k *console) auditData(r *http.Request) (map[string]any, error) {
	q := r.URL.Query()
	var recs []audit.Record
	var err error
	if id := q.Get("action_id"); id != "" {
		recs, err = k.c.Audit.AuditRecordsForAction(r.Context(), id, -1, 500)
	} else {
		// The newest 200 events only.
		var size int64
		if size, err = k.c.Audit.AuditSize(r.Context()); err == nil {
			recs, err = k.c.Audit.ReadAuditRecords(r.Context(), size-201, 200)
		}
	}
	if err != nil {
		return nil, agentg8.StoreFailed(k.c.Logger, "read the audit log", err)
	}
	evs := k.events(recs)
	if typ := q.Get("type"); typ != "" {
		var kept []event
		for _, e := range evs {
			if e.Type == typ {
				kept = append(kept, e)
			}
		}
		evs = kept
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	cp, err := k.c.Audit.LatestAuditCheckpoint(r.Context())
	if err != nil {
		return nil, agentg8.StoreFailed(k.c.Logger, "read the latest checkpoint", err)
	}
	return map[string]any{"Events": evs, "Checkpoint": string(cp), "Q": q, "VerifierKey": k.c.VerifierKey}, nil
}

func (k *console) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	if !k.c.Actions.MayAudit(s.p) {
		return agentg8.Errorf(agentg8.CodeForbidden, "the audit log is for members of an auditors group")
	}
	data, err := k.auditData(r)
	if err != nil {
		return err
	}
	k.render(w, "audit", http.StatusOK, k.base(s, "Audit log", data, ""))
	return nil
}

func (k *console) verify(w http.ResponseWriter, r *http.Request, s *session) error {
	if !k.c.Actions.MayAudit(s.p) {
		return agentg8.Errorf(agentg8.CodeForbidden, "the audit log is for members of an auditors group")
	}
	data, err := k.auditData(r)
	if err != nil {
		return err
	}
	rep, verr := audit.Verify(r.Context(), k.c.Audit, k.c.VerifierKey, nil)
	var p *audit.Problem
	switch {
	case verr == nil:
		data["Verified"] = fmt.Sprintf("Verified: %d records, %d signed checkpoints, root %s.", rep.Records, rep.Checkpoints, rep.Tree.Hash)
	case errors.As(verr, &p):
		data["VerifyFailed"] = "Verification FAILED: " + p.Error()
	default:
		return verr
	}
	k.render(w, "audit", http.StatusOK, k.base(s, "Audit log", data, ""))
	return nil
}

type taskRow struct {
	T      *registry.Task
	Fields []field
	Agents []string
}

type field struct {
	Name, Type, Constraints string
	Required                bool
}

func (k *console) tasks(w http.ResponseWriter, r *http.Request, s *session) error {
	var rows []taskRow
	for _, t := range k.c.Catalog.Tasks() {
		row := taskRow{T: t, Fields: fields(t.InputSchema())}
		for _, a := range k.c.Agents() {
			if k.c.Catalog.CouldPermit(a, t.Name) {
				row.Agents = append(row.Agents, a.ID)
			}
		}
		rows = append(rows, row)
	}
	k.render(w, "tasks", http.StatusOK, k.base(s, "Tasks", rows, ""))
	return nil
}

// fields renders a schema's top-level properties as a form-like table.
func fields(schema json.RawMessage) []field {
	var sch struct {
		Required   []string                  `json:"required"`
		Properties map[string]map[string]any `json:"properties"`
	}
	json.Unmarshal(schema, &sch)
	var out []field
	for name, p := range sch.Properties {
		f := field{Name: name, Type: fmt.Sprint(p["type"])}
		var cons []string
		for _, key := range []string{"pattern", "format", "enum", "minimum", "maximum", "minLength", "maxLength"} {
			if v, ok := p[key]; ok {
				cons = append(cons, fmt.Sprintf("%s %v", key, v))
			}
		}
		f.Constraints = strings.Join(cons, ", ")
		for _, r := range sch.Required {
			f.Required = f.Required || r == name
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
