package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	base := func(t *testing.T) string {
		dir := t.TempDir()
		return writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	}
	e := &testEnv{t: t}
	t.Run("good config", func(t *testing.T) {
		cfg := base(t)
		code, out, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
		if code != 0 || !strings.Contains(out, "ok: 7 tasks, 9 policies") {
			t.Fatalf("%d %s %s", code, out, errs)
		}
	})
	cases := []struct {
		name  string
		edit  func(t *testing.T, dir string)
		wants []string
	}{
		{"unknown config key", func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "colour: blue\n")
		}, []string{"agentg8.yaml:COLOURLINE:", "colour"}},
		{"remote PostgreSQL without sslmode", func(t *testing.T, dir string) {
			replaceIn(t, filepath.Join(dir, "agentg8.yaml"), "store: sqlite:data/agentg8.db", "store: postgres://agentg8@db.example.net/agentg8")
		}, []string{"store", "db.example.net is not on this machine", "sslmode=verify-full"}},
		{"resolver group without users", func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "execution:\n  resolvers: [night-shift]\n")
		}, []string{"execution.resolvers[0]", `group "night-shift" has no users`}},
		{"idempotency keys kept too briefly", func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "limits:\n  idempotency_ttl: 90m\n")
		}, []string{"limits.idempotency_ttl", "at least 2h"}},
		{"webhook signing secret too short", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "secrets", "hook"), "short-secret\n")
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "notify:\n  - {type: webhook, url: \"http://h/\", secret: \"file:secrets/hook\"}\n")
		}, []string{"notify[0].secret", "at least 16 characters"}},
		{"webhook signing secret missing", func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "notify:\n  - {type: webhook, url: \"http://h/\", secret: \"env:NO_SUCH_HOOK_SECRET\"}\n")
		}, []string{"notify[0].secret", "NO_SUCH_HOOK_SECRET"}},
		{"signing secret on mail", func(t *testing.T, dir string) {
			appendFile(t, filepath.Join(dir, "agentg8.yaml"), "notify:\n  - {type: smtp, addr: \"127.0.0.1:25\", from: a@example.com, to_groups: [finance], secret: \"env:X\"}\n")
		}, []string{"notify[0].secret", "only webhooks are signed"}},
		{"unknown nested config key", func(t *testing.T, dir string) {
			replaceIn(t, filepath.Join(dir, "agentg8.yaml"), "allow_private: true", "allow_private: true\n  allow_all: true")
		}, []string{"agentg8.yaml", "allow_all"}},
		{"unknown task key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object}\nrequest: {method: GET, url: http://h/}\nretries: 3\n")
		}, []string{"x.yaml:6", "retries"}},
		{"unknown placeholder", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object}\nrequest:\n  method: GET\n  url: http://h/${secret.key}\n")
		}, []string{"x.yaml:7", "request.url", "unknown placeholder ${secret.key}"}},
		{"placeholder naming no property", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object, properties: {a: {type: string}}, additionalProperties: false}\nrequest:\n  method: POST\n  url: http://h/\n  body: {b: \"${input.b}\"}\n")
		}, []string{"x.yaml:8", "request.body", "${input.b}"}},
		{"placeholder in host", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object, properties: {h: {type: string}}}\nrequest: {method: GET, url: \"http://${input.h}/\"}\n")
		}, []string{"x.yaml", "scheme, host or port"}},
		{"bad schema", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object, properties: {a: {type: strng}}}\nrequest: {method: GET, url: http://h/}\n")
		}, []string{"x.yaml:4", "input", "invalid JSON Schema"}},
		{"remote ref", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object, properties: {a: {$ref: \"https://example.com/s.json\"}}}\nrequest: {method: GET, url: http://h/}\n")
		}, []string{"x.yaml:4", "input"}},
		{"bad task name", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: Bad.Name\ndescription: d\nrisk: read\ninput: {type: object}\nrequest: {method: GET, url: http://h/}\n")
		}, []string{"x.yaml:1", "name"}},
		{"missing credential", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: x.y\ndescription: d\nrisk: read\ninput: {type: object}\ncredential: billing\nrequest: {method: GET, url: http://h/}\n")
		}, []string{"x.yaml:5", "credential", `"billing"`}},
		{"cedar parse error", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "policies", "bad.cedar"), "permit (principal, action, resource)\nwhen { context.input.x > };\n")
		}, []string{"bad.cedar:2"}},
		{"approval group without users", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "policies", "a.cedar"), `@id("r") @approval("ghosts") permit (principal, action, resource);`)
		}, []string{"a.cedar", `"ghosts"`}},
		{"impossible quorum", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "policies", "a.cedar"), `@id("r") @approval("finance") @quorum("4") permit (principal, action, resource);`)
		}, []string{"a.cedar", "needs 4 approvers"}},
		{"approval on forbid", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "policies", "a.cedar"), `@id("r") @approval("finance") forbid (principal, action, resource);`)
		}, []string{"a.cedar:1", "permit"}},
		{"missing secret", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "secrets", "crm"))
		}, []string{"credentials.crm", "secret file"}},
		{"unknown secret scheme", func(t *testing.T, dir string) {
			replaceIn(t, filepath.Join(dir, "agentg8.yaml"), `file:secrets/crm`, `aws:secrets/crm`)
		}, []string{"credentials.crm", "unknown scheme"}},
		{"duplicate task", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "tasks", "x.yaml"), "name: crm.get_customer\ndescription: d\nrisk: read\ninput: {type: object}\nrequest: {method: GET, url: http://h/}\n")
		}, []string{"also defined"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base(t)
			c.edit(t, filepath.Dir(cfg))
			code, out, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
			if code != 1 {
				t.Fatalf("exit %d, want 1: %s %s", code, out, errs)
			}
			for _, w := range c.wants {
				if strings.Contains(w, "COLOURLINE") { // the line the test appended
					b, _ := os.ReadFile(cfg)
					w = strings.Replace(w, "COLOURLINE", fmt.Sprint(strings.Count(string(b), "\n")), 1)
				}
				if !strings.Contains(errs, w) {
					t.Errorf("error %q lacks %q", errs, w)
				}
			}
		})
	}
	t.Run("missing environment variable in config", func(t *testing.T) {
		cfg := base(t)
		replaceIn(t, cfg, "listen: 127.0.0.1:0", "listen: ${env:AG8_LISTEN}")
		code, _, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
		if code != 1 || !strings.Contains(errs, "AG8_LISTEN") || !strings.Contains(errs, ":1:") {
			t.Fatalf("%d %s", code, errs)
		}
		env := testEnvVars()
		env["AG8_LISTEN"] = "127.0.0.1:0"
		if code, _, errs := e.cli(env, "validate", "--config", cfg); code != 0 {
			t.Fatalf("with env: %s", errs)
		}
	})
}

func appendFile(t *testing.T, path, s string) {
	b, _ := os.ReadFile(path)
	writeFile(t, path, string(b)+s)
}

func replaceIn(t testing.TB, path, old, new string) {
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), old) {
		t.Fatalf("%q not in %s", old, path)
	}
	writeFile(t, path, strings.Replace(string(b), old, new, 1))
}

func TestMigrateNamesNoSecret(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	e := &testEnv{t: t}
	code, out, errs := e.cli(testEnvVars(), "migrate", "--config", cfg)
	if code != 0 || strings.TrimSpace(out) != "migrated the sqlite store" {
		t.Fatalf("%d %q %s", code, out, errs)
	}
}

// serve and migrate refuse a PostgreSQL on another machine whose URL sets
// no sslmode before connecting (pgx would fall back to plaintext).
func TestRemoteStoreNeedsSSLMode(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: postgres://agentg8@db.example.net:5432/agentg8")
	e := &testEnv{t: t}
	for _, cmd := range []string{"serve", "migrate"} {
		code, out, errs := e.cli(testEnvVars(), cmd, "--config", cfg)
		if code == 0 || !strings.Contains(errs, "db.example.net is not on this machine and the URL sets no sslmode") {
			t.Errorf("%s: %d %s %s", cmd, code, out, errs)
		}
	}
}

// migrate --grant is for PostgreSQL: on SQLite it is a usage error, and
// nothing is migrated.
func TestGrantNeedsPostgres(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	e := &testEnv{t: t}
	code, out, errs := e.cli(testEnvVars(), "migrate", "--config", cfg, "--grant", "app")
	if code != 2 || !strings.Contains(errs, "--grant is for a PostgreSQL store") || strings.Contains(out, "migrated") {
		t.Errorf("%d %q %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "agentg8.db")); err == nil {
		t.Error("the SQLite store was created")
	}
}

// validate passes a remote PostgreSQL whose URL sets a weak sslmode, and
// warns about it.
func TestValidateWarnsOfWeakSSLMode(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: postgres://agentg8@db.example.net:5432/agentg8?sslmode=require")
	e := &testEnv{t: t}
	code, out, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "ok:") || !strings.Contains(errs, "warning: store: sslmode=require encrypts but does not verify db.example.net") {
		t.Errorf("%d %q %q", code, out, errs)
	}
}

// A webhook reached over plain http on another machine gets the request's
// input in the clear: validate warns (loopback is fine) and still passes.
func TestValidateWarnsOfPlainHTTPWebhooks(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true})
	appendFile(t, cfg, "notify:\n  - {type: webhook, url: \"http://127.0.0.1:9/hook\"}\n  - {type: webhook, url: \"http://hooks.example.net/agentg8\"}\n  - {type: webhook, url: \"https://hooks.example.org/agentg8\"}\n")
	e := &testEnv{t: t}
	code, out, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "ok:") || strings.Count(errs, "warning:") != 1 ||
		!strings.Contains(errs, "warning: notify[1].url: plain http sends approval notices") || !strings.Contains(errs, "hooks.example.net") {
		t.Errorf("%d %q %q", code, out, errs)
	}
}

// validate and serve warn where a credential would cross the network in
// clear: a task's plain-http upstream on another machine (HTTP or MCP) and
// a token endpoint likewise; loopback upstreams and https are fine.
func TestValidateWarnsOfPlainHTTPCredentials(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", envOpts{allowPrivate: true,
		extraCreds: "  billing: {type: oauth2_client_credentials, token_url: \"http://auth.example.net/token\", client_id: a, client_secret: \"file:secrets/crm\"}\n",
		extraTasks: `
- {name: remote.get, description: d, risk: read, input: {type: object}, credential: crm, request: {method: GET, url: "http://api.example.net/x"}}
- {name: remote.tool, description: d, risk: read, input: {type: object}, credential: crm, mcp: {url: "http://tools.example.net/mcp", tool: t}}
- {name: remote.safe, description: d, risk: read, input: {type: object}, credential: crm, request: {method: GET, url: "https://api.example.net/x"}}
- {name: remote.open, description: d, risk: read, input: {type: object}, request: {method: GET, url: "http://api.example.net/open"}}
`})
	e := &testEnv{t: t}
	code, out, errs := e.cli(testEnvVars(), "validate", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "ok:") || strings.Count(errs, "warning:") != 3 ||
		!strings.Contains(errs, `warning: task remote.get (`) || !strings.Contains(errs, `plain http sends credential "crm" to api.example.net unencrypted`) ||
		!strings.Contains(errs, `warning: task remote.tool (`) || !strings.Contains(errs, "tools.example.net") ||
		!strings.Contains(errs, "warning: credentials.billing.token_url: plain http sends the client secret to auth.example.net") {
		t.Errorf("%d %q %q", code, out, errs)
	}
	// serve logs the same.
	logs := &syncBuffer{}
	m := NewMain()
	m.Stdout, m.Stderr, m.LookupEnv = logs, logs, lookup(testEnvVars())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- m.Run(ctx, []string{"serve", "--config", cfg}) }()
	select {
	case <-m.Ready():
	case c := <-done:
		t.Fatalf("serve exited %d: %s", c, logs.String())
	}
	cancel()
	<-done
	if n := strings.Count(logs.String(), "a credential would be sent unencrypted"); n != 3 {
		t.Errorf("serve logged %d warnings: %s", n, logs.String())
	}
}

// A PostgreSQL that cannot be reached is reported as such by serve, not
// as a failed migration.
func TestUnreachableStore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:9", envOpts{allowPrivate: true})
	replaceIn(t, cfg, "store: sqlite:data/agentg8.db", "store: postgres://agentg8:pw-not-shown@"+addr+"/agentg8?sslmode=disable")
	e := &testEnv{t: t}
	code, _, errs := e.cli(testEnvVars(), "serve", "--config", cfg)
	if code == 0 || !strings.Contains(errs, "postgres: failed to connect") || strings.Contains(errs, "migrate") || strings.Contains(errs, "pw-not-shown") {
		t.Errorf("%d %q", code, errs)
	}
}
