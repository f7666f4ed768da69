package main

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentg8/agentg8/examples"
	"github.com/agentg8/agentg8/examples/crm"
)

func (m *Main) cmdDemo(ctx context.Context, args []string) error {
	fset := m.flags("demo")
	listen := fset.String("listen", "127.0.0.1:8080", "gateway address (a free port is chosen if busy)")
	dir := fset.String("dir", "", "folder for the demo's files (default: a new temporary folder)")
	level := fset.String("log-level", "warn", "debug, info, warn or error")
	if _, err := parse(fset, args); err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "agentg8-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	crmKey, err := newKey()
	if err != nil {
		return err
	}
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	crmSrv := crm.New(crmKey)
	upSrv := &http.Server{Handler: crmSrv, ReadHeaderTimeout: 5 * time.Second}
	go upSrv.Serve(up)
	defer upSrv.Close()
	upURL := "http://" + up.Addr().String()

	if err := writeDemo(*dir, upURL); err != nil {
		return err
	}
	keys := map[string]string{"crm-api": crmKey}
	for _, n := range []string{"support-bot", "intern-bot", "alice", "bob"} {
		if keys[n], err = newKey(); err != nil {
			return err
		}
	}
	for n, k := range keys {
		if err := os.WriteFile(filepath.Join(*dir, "keys", n+".key"), []byte(k+"\n"), 0o600); err != nil {
			return err
		}
	}
	cfg, err := LoadConfig(filepath.Join(*dir, "agentg8.yaml"), m.LookupEnv)
	if err != nil {
		return err
	}
	cfg.Listen = *listen
	if ln, err := net.Listen("tcp", cfg.Listen); err != nil {
		cfg.Listen = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	return m.serve(ctx, cfg, m.logger(*level), func(addr string) {
		crmSrv.SetJWKS("http://" + addr + "/.well-known/jwks.json")
		m.printDemo(addr, *dir, upURL, keys)
	})
}

func writeDemo(dir, upstream string) error {
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return err
	}
	return fs.WalkDir(examples.Demo, "demo", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, strings.TrimPrefix(p, "demo"))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := examples.Demo.ReadFile(p)
		if err != nil {
			return err
		}
		b = []byte(strings.ReplaceAll(string(b), examples.DemoUpstream, upstream))
		return os.WriteFile(target, b, 0o644)
	})
}

func (m *Main) printDemo(addr, dir, upstream string, keys map[string]string) {
	u := "http://" + addr
	w := m.Stdout
	fmt.Fprintf(w, `
AgentG8 demo is running.

  gateway     %s
  console     %s/console/  (sign in with alice's or bob's key)
  files       %s
  sample CRM  %s (the agent never sees its key)

Keys (demo only):
  support-bot (agent, may read and write the CRM)   %s
  intern-bot  (agent, may only read)                %s
  alice       (user, auditor)                       %s
  bob         (user, team lead: approves upgrades)  %s

Try it in another terminal:

  export AGENTG8_URL=%s AGENTG8_KEY=%s

  # an allowed read
  curl -s -H "Authorization: Bearer $AGENTG8_KEY" -d '{"task":"crm.get_customer","input":{"customer_id":"cus_1"}}' $AGENTG8_URL/v1/actions

  # an allowed write
  go run ./cmd/agentg8 propose crm.add_note --input '{"customer_id":"cus_1","note":"Called about the invoice."}'

  # an invalid input (400 invalid_input; nothing reaches the CRM)
  go run ./cmd/agentg8 propose crm.add_note --input '{"customer_id":"bob","note":""}'

  # a policy denial (403 policy_denied; exit code 3)
  go run ./cmd/agentg8 propose crm.delete_customer --input '{"customer_id":"cus_2"}'

  # the intern may read but not write
  AGENTG8_KEY=%s go run ./cmd/agentg8 propose crm.add_note --input '{"customer_id":"cus_1","note":"hi"}'

  # an action that needs approval: 202 pending_approval; nothing runs yet
  go run ./cmd/agentg8 propose crm.update_plan --input '{"customer_id":"cus_2","plan":"enterprise"}'

  # bob sees exactly what will run, and approves it (the agent's poll then sees succeeded)
  AGENTG8_KEY=%s go run ./cmd/agentg8 approvals list
  AGENTG8_KEY=%s go run ./cmd/agentg8 approvals approve <apr_… id from the list>

  # a task that runs as a tool of the CRM's MCP server (its key stays in AgentG8)
  go run ./cmd/agentg8 propose crm.open_ticket --input '{"customer_id":"cus_1","subject":"Invoice question"}'

  # a per-action minted token: the CRM verifies it and shows its claims
  go run ./cmd/agentg8 propose crm.whoami --input '{}'

  # the tamper-evident audit log
  go run ./cmd/agentg8 audit tail --config %s/agentg8.yaml
  go run ./cmd/agentg8 audit verify --config %s/agentg8.yaml

Press Ctrl-C to stop.
`, u, u, dir, upstream, keys["support-bot"], keys["intern-bot"], keys["alice"], keys["bob"], u, keys["support-bot"], keys["intern-bot"],
		keys["bob"], keys["bob"], dir, dir)
}
