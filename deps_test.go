package agentg8_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the architecture of STYLE.md: the root
// package imports only the standard library, step packages never import the
// pipeline, transports or stores, and transports never import a store.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/agentg8/agentg8"
	steps := []string{"registry", "policy", "credential", "connector/httpconn", "connector/mcpconn", "audit", "tooldef"}
	forbidden := map[string][]string{
		"":        {"/"}, // root: nothing of ours
		"httpapi": {"store"},
		"action":  {"store", "httpapi", "cmd"},
	}
	for _, s := range steps {
		forbidden[s] = []string{"action", "httpapi", "store", "cmd"}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], mod), "/")
		for _, imp := range fields[1:] {
			if pkg == "" && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				t.Errorf("root package imports non-standard %s", imp)
			}
			if !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			rel := strings.TrimPrefix(imp, mod+"/")
			for _, f := range forbidden[pkg] {
				if f == "/" || rel == f || strings.HasPrefix(rel, f+"/") {
					t.Errorf("%s imports %s", fields[0], imp)
				}
			}
		}
	}
}
