package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentg8/agentg8/registry"
)

// importedTask is a task file entry written by tools import: only the keys
// it sets, in the order an operator reads them.
type importedTask struct {
	Name        string         `yaml:"name"`
	Description string         `yaml:"description"`
	Risk        string         `yaml:"risk"`
	Input       map[string]any `yaml:"input"`
	Credential  string         `yaml:"credential,omitempty"`
	MCP         importedMCP    `yaml:"mcp"`
}

type importedMCP struct {
	URL  string `yaml:"url"`
	Tool string `yaml:"tool"`
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ", ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

var notTaskChars = regexp.MustCompile(`[^a-z0-9_]+`)

// cmdToolsImport lists an MCP server's tools and writes a task file that
// runs each through AgentG8 (mcp: tasks), for the operator to review.
func (m *Main) cmdToolsImport(ctx context.Context, args []string) error {
	fs := m.flags("tools import")
	u := fs.String("url", "", "the MCP server's endpoint (Streamable HTTP)")
	ns := fs.String("namespace", "", "namespace of the tasks written (task names are <namespace>.<tool>)")
	cred := fs.String("credential", "", "credential the tasks use (a name in agentg8.yaml); none if empty")
	bearerEnv := fs.String("bearer-env", "", "environment variable holding a bearer token for listing the tools (not written anywhere)")
	var headers repeated
	fs.Var(&headers, "header", "`Name: value` header for listing the tools (repeatable)")
	var only repeated
	fs.Var(&only, "tool", "import only this tool (repeatable; default: all)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *u == "" || !registry.NameRE.MatchString(*ns+".x") {
		return usageErr("usage: agentg8 tools import --url https://server/mcp --namespace name [--credential name] [--bearer-env VAR] [--header 'Name: value'] [--tool name]")
	}
	hdr := http.Header{}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return usageErr("--header %q: want Name: value", h)
		}
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if *bearerEnv != "" {
		tok, ok := m.LookupEnv(*bearerEnv)
		if !ok || tok == "" {
			return fmt.Errorf("--bearer-env: %s is not set", *bearerEnv)
		}
		hdr.Set("Authorization", "Bearer "+tok)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "agentg8-import", Version: version}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: *u, DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: headerTransport{header: hdr, next: http.DefaultTransport}}}, nil)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *u, err)
	}
	defer cs.Close()
	var out []importedTask
	names := map[string]string{} // task name -> tool
	found := map[string]bool{}
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("listing tools: %w", err)
		}
		if len(only) > 0 && !slices.Contains(only, tool.Name) {
			continue
		}
		t, err := importTool(*ns, *u, *cred, tool)
		if err != nil {
			return err
		}
		if prev, dup := names[t.Name]; dup {
			return fmt.Errorf("tools %q and %q would both be task %s: import them one at a time (--tool) and rename one", prev, tool.Name, t.Name)
		}
		names[t.Name], found[tool.Name] = tool.Name, true
		out = append(out, t)
	}
	for _, name := range only {
		if !found[name] {
			return fmt.Errorf("the server has no tool %q", name)
		}
	}
	if len(out) == 0 {
		return errors.New("the server lists no tools")
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "# Tasks for the tools of %s, written by `agentg8 tools import`.\n"+
		"# Review before use: descriptions are shown to models, risk drives policies\n"+
		"# (from the server's annotations; unannotated tools count as destructive, as\n"+
		"# MCP says), and a narrower input schema or fixed mcp.arguments limit what\n"+
		"# an agent can ask for. No task runs until a policy permits it.\n", *u)
	_, err = m.Stdout.Write(b)
	return err
}

// importTool makes the task entry of one tool.
func importTool(ns, url, cred string, tool *mcp.Tool) (importedTask, error) {
	name := ns + "." + strings.Trim(notTaskChars.ReplaceAllString(strings.ToLower(tool.Name), "_"), "_")
	if !registry.NameRE.MatchString(name) {
		return importedTask{}, fmt.Errorf("tool %q has no usable task name", tool.Name)
	}
	desc := strings.TrimSpace(tool.Description)
	if desc == "" {
		desc = strings.TrimSpace(tool.Title)
	}
	if desc == "" {
		desc = "Calls " + tool.Name + "." // validate wants a description; say what it does
	}
	// MCP's defaults: not read-only, and destructive unless said otherwise.
	risk := "destructive"
	if a := tool.Annotations; a != nil {
		switch {
		case a.ReadOnlyHint:
			risk = "read"
		case a.DestructiveHint != nil && !*a.DestructiveHint:
			risk = "write"
		}
	}
	var input map[string]any
	raw, err := json.Marshal(tool.InputSchema)
	if err == nil {
		err = json.Unmarshal(raw, &input)
	}
	if err != nil || input == nil {
		return importedTask{}, fmt.Errorf("tool %q: its input schema is not an object", tool.Name)
	}
	return importedTask{Name: name, Description: desc, Risk: risk, Input: input, Credential: cred,
		MCP: importedMCP{URL: url, Tool: tool.Name}}, nil
}
