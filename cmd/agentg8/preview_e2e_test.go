package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// crmState answers the current-state read like a CRM that (carelessly)
// echoes the credential it was sent.
func crmState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet {
		json.NewEncoder(w).Encode(map[string]any{"note": map[string]any{"id": 3}})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"id": "cus_1", "plan": "pro", "notes": []any{map[string]any{"text": "first"}},
		"debug_auth": r.Header.Get("Authorization"), "internal_ref": "ref-1"})
}

type previewAction struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Preview struct {
		Outcome  string          `json:"outcome"`
		Policies []string        `json:"policies"`
		Required []any           `json:"required"`
		Current  json.RawMessage `json:"current"`
		Proposed json.RawMessage `json:"proposed"`
		Diff     []struct {
			Op       string          `json:"op"`
			Path     string          `json:"path"`
			Value    json.RawMessage `json:"value"`
			OldValue json.RawMessage `json:"old_value"`
		} `json:"diff"`
		Summary     []string `json:"summary"`
		SideEffects []string `json:"side_effects"`
		Error       string   `json:"preview_error"`
		Request     struct {
			Method  string            `json:"method"`
			URL     string            `json:"url"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"request"`
	} `json:"preview"`
}

func (e *testEnv) dryRun(key, task string, input any) (int, previewAction, string) {
	e.t.Helper()
	st, raw := e.do("POST", "/v1/actions", key, map[string]any{"task": task, "input": input, "dry_run": true})
	var a previewAction
	json.Unmarshal([]byte(raw["_body"].(string)), &a)
	if a.ID == "" { // a problem document carries the action
		var p struct{ Action previewAction }
		json.Unmarshal([]byte(raw["_body"].(string)), &p)
		a = p.Action
	}
	return st, a, raw["_body"].(string)
}

func TestDryRunShowsCurrentProposedAndDiff(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(crmState)
	st, a, body := e.dryRun(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "second"})
	if st != 200 || a.Status != "dry_run" || a.Preview.Outcome != "would_execute" {
		t.Fatalf("%d %s", st, body)
	}
	// Only the declared read went out: one GET, nothing mutating.
	if e.up.count() != 1 || e.up.last().Method != "GET" || e.up.last().Path != "/customers/cus_1" {
		t.Fatalf("upstream saw %d requests, last %s %s", e.up.count(), e.up.last().Method, e.up.last().Path)
	}
	var cur map[string]any
	json.Unmarshal(a.Preview.Current, &cur)
	if cur["debug_auth"] != "Bearer [REDACTED]" || cur["internal_ref"] != nil || strings.Contains(body, crmSecret) {
		t.Errorf("current state not redacted: %s", a.Preview.Current)
	}
	if len(a.Preview.Diff) != 1 || a.Preview.Diff[0].Op != "add" || a.Preview.Diff[0].Path != "/notes/1" || string(a.Preview.Diff[0].Value) != `{"text":"second"}` {
		t.Errorf("diff: %+v", a.Preview.Diff)
	}
	if !strings.Contains(string(a.Preview.Proposed), `"notes":[{"text":"first"},{"text":"second"}]`) {
		t.Errorf("proposed: %s", a.Preview.Proposed)
	}
	if len(a.Preview.Summary) != 1 || !strings.Contains(a.Preview.Summary[0], "add /notes/1") {
		t.Errorf("summary: %v", a.Preview.Summary)
	}
	if a.Preview.Request.Headers["Authorization"] != "[credential:crm]" || a.Preview.SideEffects[0] != "Adds a note to cus_1." {
		t.Errorf("request/side effects: %+v", a.Preview)
	}
	// A dry run is audited, creates no approval and no pending action.
	_, ev := e.do("GET", "/v1/audit?action_id="+a.ID, aliceKey, nil)
	if !strings.Contains(ev["_body"].(string), `"type":"dry_run"`) {
		t.Errorf("audit: %s", ev["_body"])
	}
	st, a, body = e.dryRun(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "needs approval"})
	if st != 200 || a.Status != "dry_run" || a.Preview.Outcome != "would_require_approval" || len(a.Preview.Required) != 1 {
		t.Fatalf("dry run of an approval-requiring action: %d %s", st, body)
	}
	if _, l := e.do("GET", "/v1/approvals", franKey, nil); len(l["approvals"].([]any)) != 0 {
		t.Errorf("a dry run created an approval: %s", l["_body"])
	}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		for _, r := range e.up.all() {
			if r.Method == m {
				t.Fatalf("dry run sent %s", m)
			}
		}
	}
}

func TestDryRunWithoutReadSendsNothing(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	if st, a, body := e.dryRun(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 || a.Preview.Request.Method != "GET" {
		t.Fatalf("%d %s", st, body)
	}
	// Denied: the outcome names the policy, and the current state is not read.
	st, a, body := e.dryRun(supportKey, "crm.delete_customer", map[string]any{"customer_id": "c"})
	if st != 200 || a.Preview.Outcome != "would_be_denied" || len(a.Preview.Policies) != 1 || a.Preview.Policies[0] != "no-deletes" {
		t.Fatalf("denied dry run: %d %s", st, body)
	}
	st, a, _ = e.dryRun(otherKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "x"})
	if st != 200 || a.Preview.Outcome != "would_be_denied" || a.Preview.Current != nil {
		t.Fatalf("agent without grant: %d %+v", st, a.Preview)
	}
	if e.up.count() != 0 {
		t.Fatalf("upstream saw %d requests", e.up.count())
	}
}

func TestDryRunFailingCurrentRead(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
		want string
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }, "404"},
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, "500"},
		{"not json", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "not JSON"},
		{"timeout", func(w http.ResponseWriter, r *http.Request) { time.Sleep(11 * time.Second) }, "in time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "timeout" && testing.Short() {
				t.Skip("slow")
			}
			e.up.setHandler(c.h)
			st, a, body := e.dryRun(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "n"})
			if st != 200 || a.Status != "dry_run" || a.Preview.Current != nil || !strings.Contains(a.Preview.Error, c.want) {
				t.Fatalf("%d %s", st, body)
			}
		})
	}
}

// The preview's request is the request that runs: same method, URL, headers
// and body bytes, but for the credential marker and the action-derived
// idempotency key.
func TestPreviewRequestIsTheRequestThatRuns(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(crmState)
	in := map[string]any{"customer_id": "cus_1", "note": "<b>&\"quoted\"</b> ünïcode", "priority": 7}
	_, dry, _ := e.dryRun(supportKey, "crm.add_note", in)
	if st, a := e.propose(supportKey, "crm.add_note", in); st != 200 {
		t.Fatalf("%d %v", st, a["_body"])
	}
	got := e.up.last()
	pr := dry.Preview.Request
	if pr.Method != got.Method || pr.URL != e.up.srv.URL+got.RawPath {
		t.Errorf("method/url: %s %s vs %s %s", pr.Method, pr.URL, got.Method, got.RawPath)
	}
	if string(pr.Body) != string(got.Body) {
		t.Errorf("body differs:\n preview %s\n sent    %s", pr.Body, got.Body)
	}
	for k, v := range pr.Headers {
		switch k {
		case "Authorization":
			if v != "[credential:crm]" || got.Header.Get(k) != "Bearer "+crmSecret {
				t.Errorf("credential header: %q / %q", v, got.Header.Get(k))
			}
		case "Idempotency-Key":
			if !strings.HasPrefix(got.Header.Get(k), "agentg8-act_") || v != "agentg8-"+dry.ID {
				t.Errorf("idempotency key: %q / %q", v, got.Header.Get(k))
			}
		default:
			if got.Header.Get(k) != v {
				t.Errorf("header %s: preview %q, sent %q", k, v, got.Header.Get(k))
			}
		}
	}
}

func TestApprovalCarriesThePreview(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(crmState)
	_, aprID, _ := e.pend(e.propose(supportKey, "crm.add_note", map[string]any{"customer_id": "cus_1", "note": "needs approval"}))
	st, v := e.do("GET", "/v1/approvals/"+aprID, franKey, nil)
	if st != 200 || !strings.Contains(v["_body"].(string), `"diff":[{"op":"add","path":"/notes/1"`) {
		t.Fatalf("approval preview: %d %s", st, v["_body"])
	}
	env := map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": franKey}
	m := NewMain()
	var o syncBuffer
	m.Stdout, m.Stderr, m.LookupEnv, m.Stdin = &o, &o, lookup(env), strings.NewReader("n\n")
	m.Run(t.Context(), []string{"approvals", "approve", aprID})
	if !strings.Contains(o.String(), "changes      add /notes/1") {
		t.Errorf("CLI approval view lacks the diff:\n%s", o.String())
	}
}

func TestDryRunCLI(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true})
	e.up.setHandler(crmState)
	env := map[string]string{"AGENTG8_URL": e.url, "AGENTG8_KEY": supportKey}
	code, out, errs := e.cli(env, "propose", "crm.add_note", "--dry-run", "--input", `{"customer_id":"cus_1","note":"second"}`)
	if code != 0 {
		t.Fatalf("%d %s", code, errs)
	}
	for _, want := range []string{"would execute", "POST " + e.up.srv.URL + "/customers/cus_1/notes", "Authorization: [credential:crm]",
		"--- current", "+++ proposed", `+    {`, `"text": "second"`, "add /notes/1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes written to a non-terminal")
	}
	code, out, _ = e.cli(env, "propose", "crm.add_note", "--dry-run", "--json", "--input", `{"customer_id":"cus_1","note":"second"}`)
	var a map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a["status"] != "dry_run" {
		t.Errorf("--json: %d %s", code, out)
	}
}

func TestRateLimitCountsDryRuns(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraConfig: "limits:\n  actions_per_minute: 3\n"})
	e.dryRun(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	e.dryRun(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	if st, _ := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 200 {
		t.Fatalf("third: %d", st)
	}
	st, p := e.propose(supportKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"})
	if st != 429 || p["code"] != "rate_limited" {
		t.Fatalf("fourth: %d %v", st, p["_body"])
	}
	if e.up.count() != 1 {
		t.Errorf("upstream calls %d", e.up.count())
	}
	// The limit is per agent.
	if st, _ := e.propose(otherKey, "crm.get_customer", map[string]any{"customer_id": "cus_1"}); st != 403 {
		t.Errorf("other agent: %d", st)
	}
}
