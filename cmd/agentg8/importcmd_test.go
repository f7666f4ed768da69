package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// helpdeskServer is a real MCP server (go-sdk) with three tools annotated
// three ways, answering only "Bearer <crmSecret>".
func helpdeskServer(t *testing.T) string {
	s := mcp.NewServer(&mcp.Implementation{Name: "helpdesk", Version: "1"}, nil)
	no := false
	mcp.AddTool(s, &mcp.Tool{Name: "get-Ticket", Description: "Read a ticket.", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct {
			ID string `json:"id" jsonschema:"the ticket"`
		}) (*mcp.CallToolResult, map[string]any, error) {
			return nil, map[string]any{"id": in.ID, "state": "open"}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "close_ticket", Title: "Close a ticket", Annotations: &mcp.ToolAnnotations{DestructiveHint: &no}},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct {
			ID string `json:"id"`
		}) (*mcp.CallToolResult, any, error) {
			return nil, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "purge"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
		return nil, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+crmSecret {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// tools import writes a task file for an MCP server's tools that validate
// accepts and the gateway runs: risk from the annotations (unannotated is
// destructive), names made task names, the listing token not written.
func TestToolsImport(t *testing.T) {
	url := helpdeskServer(t)
	e := &testEnv{t: t}
	env := map[string]string{"HELPDESK_TOKEN": crmSecret}
	code, out, errs := e.cli(env, "tools", "import", "--url", url, "--namespace", "ops", "--credential", "crm", "--bearer-env", "HELPDESK_TOKEN")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Contains(out, crmSecret) {
		t.Fatal("the listing token is in the task file")
	}
	var tasks []struct {
		Name, Description, Risk, Credential string
		Input                               map[string]any
		MCP                                 struct{ URL, Tool string }
	}
	if err := yaml.Unmarshal([]byte(out), &tasks); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	got := map[string]string{}
	for _, tk := range tasks {
		got[tk.Name] = tk.Risk + "|" + tk.Description + "|" + tk.MCP.Tool + "|" + tk.Credential
		if tk.MCP.URL != url || tk.Input["type"] != "object" {
			t.Errorf("%s: %+v", tk.Name, tk)
		}
	}
	want := map[string]string{
		"ops.get_ticket":   "read|Read a ticket.|get-Ticket|crm",
		"ops.close_ticket": "write|Close a ticket|close_ticket|crm",
		"ops.purge":        "destructive|Calls purge.|purge|crm",
	}
	if len(got) != 3 {
		t.Fatalf("tasks %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}

	// The file as written runs.
	g := newTestEnv(t, envOpts{allowPrivate: true, extraTasks: out})
	if code, _, errs := g.cli(testEnvVars(), "validate", "--config", g.cfgPath); code != 0 {
		t.Fatalf("validate: %s", errs)
	}
	st, a := g.propose(supportKey, "ops.get_ticket", map[string]any{"id": "T-7"})
	if st != 200 || !strings.Contains(a["_body"].(string), `"structuredContent":{"id":"T-7","state":"open"}`) {
		t.Fatalf("%d %v", st, a["_body"])
	}

	// Refusals.
	if code, _, errs := e.cli(env, "tools", "import", "--url", url, "--namespace", "ops", "--bearer-env", "HELPDESK_TOKEN", "--tool", "nope"); code != 1 || !strings.Contains(errs, `no tool "nope"`) {
		t.Errorf("unknown --tool: %d %s", code, errs)
	}
	if code, _, errs := e.cli(nil, "tools", "import", "--url", url, "--namespace", "ops"); code != 1 || !strings.Contains(errs, "Unauthorized") {
		t.Errorf("no token: %d %s", code, errs)
	}
	if code, _, _ := e.cli(nil, "tools", "import", "--url", url, "--namespace", "Bad-NS"); code != 2 {
		t.Errorf("bad namespace: %d", code)
	}
}
