package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/store/sqlite"
)

func TestConsoleHeadersAndSignIn(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	resp, err := http.Get(e.url + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %v", resp.Header)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(key string) *http.Response {
		resp, err := noRedirect.PostForm(e.url+"/console/login", map[string][]string{"key": {key}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post(supportKey); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Errorf("agent key signed in: %d", r.StatusCode)
	}
	r := post(franKey)
	if r.StatusCode != 303 || len(r.Cookies()) != 1 {
		t.Fatalf("user sign-in: %d", r.StatusCode)
	}
	ck := r.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure {
		t.Errorf("cookie over plain HTTP: %+v", ck)
	}
	// A POST without the form token is refused even with the session.
	req, _ := http.NewRequest("POST", e.url+"/console/audit/verify", strings.NewReader("csrf=wrong"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(ck)
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 403 {
		t.Errorf("missing CSRF token: %d", resp.StatusCode)
	}
}

func TestConsoleInBrowser(t *testing.T) {
	node, dir := nodeTools(t)
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (apt-get install chromium)")
		}
		t.Skip("chromium is not installed")
	}
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(crmState)
	// Three pending approvals: one to approve (with invisible characters in
	// the agent's text), one to reject, one whose hash the page will tamper with.
	_, approveID, _ := e.pend(e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "needs approval \u202egnp.exe\u200b"}))
	_, rejectID, _ := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 9}))
	_, tamperID, _ := e.pend(e.propose(supportKey, "ops.wire", map[string]any{"amount": 10}))
	// Another origin that tries to post a decision with the user's session.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<html><body><form id="f" method="post" action="%s"><input name="decision" value="approve"><input name="request_hash" value="x"><input name="csrf" value="x"></form><script>document.getElementById("f").submit()</script></body></html>`,
			r.URL.Query().Get("target"))
	}))
	defer evil.Close()
	artifacts, _ := filepath.Abs("../../test-artifacts/console")
	os.MkdirAll(artifacts, 0o755)
	cmd := exec.Command(node, "console.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+e.url, "USER_KEY="+franKey, "AUDITOR_KEY="+aliceKey, "AGENT_KEY="+supportKey, "APPROVE_ID="+approveID,
		"REJECT_ID="+rejectID, "TAMPER_ID="+tamperID, "EVIL_URL="+strings.Replace(evil.URL, "127.0.0.1", "localhost", 1), "ARTIFACTS="+artifacts)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	t.Logf("%v", out)
	if out["error"] != nil {
		t.Fatalf("browser: %v", out["error"])
	}
	for _, k := range []string{"redirectedToLogin", "agentRefused", "inboxHasApprove", "hashShown", "requestMasked", "invisibleShown", "agentMarked"} {
		if out[k] != true {
			t.Errorf("%s = %v", k, out[k])
		}
	}
	if out["inboxRows"] != float64(3) || !strings.Contains(out["diff"].(string), "/notes/1") || out["finalStatus"] != "succeeded" ||
		!strings.Contains(out["timeline"].(string), "approval_granted") || out["rejectedStatus"] != "rejected" ||
		!strings.Contains(out["changedMessage"].(string), "changed since you opened it") || !strings.HasPrefix(out["verify"].(string), "Verified") ||
		out["tasksPage"].(float64) < 5 {
		t.Errorf("browser saw %v", out)
	}
	// The cross-origin post decided nothing.
	_, v := e.do("GET", "/v1/approvals/"+tamperID, franKey, nil)
	if v["status"] != "pending" {
		t.Errorf("CSRF changed the approval: %v (landed on %v: %v)", v["status"], out["csrfLandedOn"], out["csrfBody"])
	}
	if _, err := os.Stat(filepath.Join(artifacts, "approval.png")); err != nil {
		t.Errorf("no screenshot: %v", err)
	}
}

// A resolver settles an outcome_unknown action from its console page, with
// the form token and a comment (required); a settled action offers no form
// and cannot be settled again; nothing is sent to the upstream.
func TestConsoleSettlesUnknownOutcomes(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "execution:\n  resolvers: [finance]\n"})
	// A gateway stopped mid-call leaves the action executing; the next
	// start declares it outcome_unknown.
	e.stop()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(e.dir, "data", "agentg8.db"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.LoadOrCreateKey(filepath.Join(e.dir, "data", "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	a := &agentg8.Action{ID: "act_unknown1", Principal: "support-bot", Task: "crm.add_note", Status: agentg8.StateExecuting,
		Input: json.RawMessage(`{"customer_id":"cus_1","note":"hi"}`), CreatedAt: now, UpdatedAt: now}
	l := audit.Open(st, key, audit.Options{})
	if err := l.Commit(ctx, &action.Change{Action: a}, &agentg8.AuditEvent{Type: agentg8.EventExecuting, ActionID: a.ID, Task: a.Task, Principal: a.Principal, Status: a.Status}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	st.Close()
	e.start()

	// fran is in finance — a resolver here — and no auditor: she sees the
	// action because she may settle it.
	fran := consoleSignIn(t, e.url, franKey)
	page := "/console/actions/" + a.ID
	settle := func(form url.Values) (int, string) { return fran.post(page, page+"/resolve", form) }
	st2, body := fran.get(page)
	if st2 != 200 || !strings.Contains(body, `id="resolve"`) || !strings.Contains(body, "outcome_unknown") {
		t.Fatalf("resolver's page: %d", st2)
	}
	if st, body := settle(url.Values{"outcome": {"succeeded"}, "comment": {"  "}}); st != 400 || !strings.Contains(body, "comment") {
		t.Errorf("settling without a comment: %d", st)
	}
	if st, _ := settle(url.Values{"outcome": {"succeeded"}, "comment": {"note is in the CRM (ticket 7)"}}); st != 303 {
		t.Fatalf("settle: %d", st)
	}
	st3, body := fran.get(page)
	if st3 != 200 || !strings.Contains(body, "succeeded by fran") || strings.Contains(body, `id="resolve"`) {
		t.Errorf("after settling: %d %s", st3, body)
	}
	if st, _ := settle(url.Values{"outcome": {"failed"}, "comment": {"again"}}); st != 409 {
		t.Errorf("settling twice: %d", st)
	}
	_, got := e.do("GET", "/v1/actions/"+a.ID, supportKey, nil)
	if got["status"] != "succeeded" {
		t.Errorf("action after settling: %v", got["status"])
	}
	if e.up.count() != 0 {
		t.Errorf("settling called the upstream %d times", e.up.count())
	}
}

// consoleClient is a user signed in to the console: its requests carry the
// session cookie and are not redirected.
type consoleClient struct {
	t    *testing.T
	base string
	ck   *http.Cookie
	hc   *http.Client
}

func consoleSignIn(t *testing.T, base, key string) *consoleClient {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.PostForm(base+"/console/login", url.Values{"key": {key}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	return &consoleClient{t: t, base: base, ck: resp.Cookies()[0], hc: hc}
}

func (c *consoleClient) do(req *http.Request) (int, string) {
	c.t.Helper()
	req.AddCookie(c.ck)
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *consoleClient) get(path string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+path, nil)
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post submits form to path with the form token of the page at from, as
// the browser would from that page.
func (c *consoleClient) post(from, path string, form url.Values) (int, string) {
	c.t.Helper()
	_, page := c.get(from)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("no form token on %s", from)
	}
	form.Set("csrf", html.UnescapeString(m[1]))
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

// Behind a TLS terminator (public_url https) the sign-in cookie is Secure
// even when the terminator does not send X-Forwarded-Proto.
func TestConsoleCookieSecureBehindTLS(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "public_url: https://agentg8.example.com\n"})
	ck := consoleSignIn(t, e.url, franKey).ck
	if !ck.Secure || !ck.HttpOnly {
		t.Errorf("cookie with an https public URL: %+v", ck)
	}
}
