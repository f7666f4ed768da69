package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	out := &syncBuffer{}
	m := NewMain()
	m.Stdout, m.Stderr, m.LookupEnv = out, &syncBuffer{}, lookup(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- m.Run(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--dir", t.TempDir()}) }()
	select {
	case <-m.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not start")
	}
	text := out.String()
	for _, want := range []string{"http://" + m.Addr(), "crm.get_customer", "crm.add_note", "crm.delete_customer", "crm.open_ticket", "audit verify"} {
		if !strings.Contains(text, want) {
			t.Errorf("banner lacks %q:\n%s", want, text)
		}
	}
	key := regexp.MustCompile(`support-bot \(agent[^\n]*?(ag8_\S+)`).FindStringSubmatch(text)
	if key == nil {
		t.Fatalf("no support-bot key in banner:\n%s", text)
	}
	req, _ := http.NewRequest("POST", "http://"+m.Addr()+"/v1/actions", strings.NewReader(`{"task":"crm.get_customer","input":{"customer_id":"cus_1"}}`))
	req.Header.Set("Authorization", "Bearer "+key[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	out2, _ := a["output"].(map[string]any)
	if a["status"] != "succeeded" || out2["name"] != "Ada Lovelace" || out2["internal_ref"] != nil {
		t.Errorf("demo read: %v", a)
	}
	// The demo's minted token reaches the CRM, which verifies it.
	e1 := &testEnv{t: t, url: "http://" + m.Addr()}
	if st, w := e1.propose(key[1], "crm.whoami", map[string]any{}); st != 200 || !strings.Contains(w["_body"].(string), `"verified":true`) ||
		!strings.Contains(w["_body"].(string), `"act":{"sub":"support-bot"}`) {
		t.Errorf("whoami: %d %v", st, w["_body"])
	}
	// The demo's MCP task: a tool of the sample CRM's MCP server.
	if st, w := e1.propose(key[1], "crm.open_ticket", map[string]any{"customer_id": "cus_1", "subject": "Invoice question"}); st != 200 ||
		!strings.Contains(w["_body"].(string), `"output":{"customer_id":"cus_1","id":"TCK-1","opened_by":"support-bot","status":"open","subject":"Invoice question"}`) {
		t.Errorf("open_ticket: %d %v", st, w["_body"])
	}
	// The demo's dry run shows a meaningful diff.
	e0 := &testEnv{t: t, url: "http://" + m.Addr()}
	if st, pa, body := e0.dryRun(key[1], "crm.update_plan", map[string]any{"customer_id": "cus_2", "plan": "enterprise"}); st != 200 ||
		len(pa.Preview.Diff) != 1 || pa.Preview.Diff[0].Path != "/plan" || string(pa.Preview.Diff[0].OldValue) != `"pro"` {
		t.Errorf("demo dry run: %d %s", st, body)
	}
	// The approval flow of the demo: bob approves an enterprise upgrade.
	bob := regexp.MustCompile(`bob [^\n]*?(ag8_\S+)`).FindStringSubmatch(text)
	if bob == nil {
		t.Fatalf("no approver key in banner:\n%s", text)
	}
	e := &testEnv{t: t, url: "http://" + m.Addr()}
	id, aprID, hash := e.pend(e.propose(key[1], "crm.update_plan", map[string]any{"customer_id": "cus_2", "plan": "enterprise"}))
	if st, d := e.approve(bob[1], aprID, hash, true); st != 200 || d["status"] != "approved" {
		t.Fatalf("bob approves: %d %v", st, d["_body"])
	}
	waitFor(t, "the upgrade", 10*time.Second, func() bool {
		_, a := e.do("GET", "/v1/actions/"+id, key[1], nil)
		out, _ := a["output"].(map[string]any)
		return a["status"] == "succeeded" && out["plan"] == "enterprise"
	})
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("demo exit %d", code)
	}
}
