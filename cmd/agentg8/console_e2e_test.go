package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie: %+v", ck)
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
