package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentg8/agentg8/credential"
)

const mintedCreds = `  internal: {type: minted_jwt, ttl: 30s, scopes: ["a:read", "a:write"]}
`

const mintedTasks = `
- name: int.read
  description: Read from the internal API with a minted token.
  risk: read
  input: {type: object, properties: {x: {type: string}}}
  credential: internal
  scopes: ["a:read"]
  request: {method: GET, url: "UPSTREAM/int/read"}
- name: int.write
  description: Write to the internal API; always approved first.
  risk: write
  input: {type: object, properties: {x: {type: string}}}
  approval: always
  approvers: [finance]
  credential: internal
  scopes: ["a:write"]
  request: {method: POST, url: "UPSTREAM/int/write", body: {x: "${input.x}"}}
`

// jwtUpstream is an internal API that accepts only valid minted tokens for
// itself, once each (replays are refused).
type jwtUpstream struct {
	mu     sync.Mutex
	seen   map[string]bool
	tokens []string
	jwks   string // gateway JWKS URL
	aud    string
}

func (u *jwtUpstream) handler(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	resp, err := http.Get(u.jwks)
	if err != nil {
		w.WriteHeader(500)
		return
	}
	var set jose.JSONWebKeySet
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	std, _, err := credential.VerifyToken(tok, set, "", u.aud, time.Now())
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil || u.seen[std.ID] {
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":"bad token"}`)
		return
	}
	u.seen[std.ID] = true
	u.tokens = append(u.tokens, tok)
	w.Header().Set("Content-Type", "application/json")
	// A careless API that echoes what it was sent.
	json.NewEncoder(w).Encode(map[string]any{"ok": true, "echo": tok, "b64": base64.StdEncoding.EncodeToString([]byte(tok))})
}

func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func TestMintedTokens(t *testing.T) {
	e := newTestEnv(t, envOpts{allowPrivate: true, extraCreds: mintedCreds, extraTasks: mintedTasks})
	ju := &jwtUpstream{seen: map[string]bool{}, jwks: e.url + "/.well-known/jwks.json", aud: e.up.srv.URL}
	e.up.setHandler(ju.handler)

	st, a := e.propose(supportKey, "int.read", map[string]any{})
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("%d %v", st, a["_body"])
	}
	c := decodeClaims(t, ju.tokens[0])
	if c["iss"] != e.url || c["sub"] != "support-bot" || c["aud"] != e.up.srv.URL || c["scope"] != "a:read" ||
		c["act"].(map[string]any)["sub"] != "support-bot" || c["agentg8"].(map[string]any)["action_id"] != a["id"] ||
		c["agentg8"].(map[string]any)["task"] != "int.read" {
		t.Errorf("claims: %v", c)
	}
	if ttl := c["exp"].(float64) - c["iat"].(float64); ttl <= 0 || ttl > 30 {
		t.Errorf("lifetime %v", ttl)
	}
	// Acting for a user: sub is the user, act the agent; every execution a new jti.
	st, _ = e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "int.read", "input": map[string]any{}, "on_behalf_of": "alice"})
	if st != 200 {
		t.Fatal(st)
	}
	c2 := decodeClaims(t, ju.tokens[1])
	if c2["sub"] != "alice" || c2["act"].(map[string]any)["sub"] != "support-bot" || c2["jti"] == c["jti"] {
		t.Errorf("claims for alice: %v", c2)
	}
	// A replayed token is refused by an upstream that checks jti.
	req, _ := http.NewRequest("GET", e.up.srv.URL+"/int/read", nil)
	req.Header.Set("Authorization", "Bearer "+ju.tokens[0])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("replay accepted")
	}
	// An approved action's token names the approval and the exact request.
	id, aprID, hash := e.pend(e.propose(supportKey, "int.write", map[string]any{"x": "y"}))
	e.approve(franKey, aprID, hash, true)
	waitFor(t, "approved write", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	c3 := decodeClaims(t, ju.tokens[2])
	if b := c3["agentg8"].(map[string]any); b["request_hash"] != hash || b["approval_id"] != aprID || c3["scope"] != "a:write" {
		t.Errorf("approved claims: %v", c3)
	}
	// Dry runs mint nothing.
	before := e.up.count()
	_, dry, body := e.dryRun(supportKey, "int.read", map[string]any{"x": "1"})
	if dry.Preview.Request.Headers["Authorization"] != "[credential:internal]" || e.up.count() != before {
		t.Errorf("dry run: %s", body)
	}
	_, ev := e.do("GET", "/v1/audit?action_id="+dry.ID, aliceKey, nil)
	if strings.Contains(ev["_body"].(string), "credential_issued") {
		t.Error("a dry run issued a credential")
	}
	// The issuance is audited by jti and fingerprint, never the token.
	_, ev = e.do("GET", "/v1/audit?action_id="+a["id"].(string), aliceKey, nil)
	if !strings.Contains(ev["_body"].(string), `"jti":"`+c["jti"].(string)+`"`) || !strings.Contains(ev["_body"].(string), `"type":"minted_jwt"`) {
		t.Errorf("issuance not audited: %s", ev["_body"])
	}
	// agentg8 token verify, as an upstream would.
	tok := ju.tokens[0]
	code, out, errs := e.cli(nil, "token", "verify", "--jwks", e.url+"/.well-known/jwks.json", "--aud", e.up.srv.URL, "--iss", e.url, tok)
	if code != 0 || !strings.Contains(out, `"action_id": "`+a["id"].(string)) {
		t.Errorf("token verify: %d %s %s", code, out, errs)
	}
	if code, _, _ := e.cli(nil, "token", "verify", "--jwks", e.url+"/.well-known/jwks.json", "--aud", "https://elsewhere", tok); code != exitDenied {
		t.Errorf("wrong audience accepted: %d", code)
	}
	tampered := tok[:len(tok)-4] + "AAAA"
	if code, _, _ := e.cli(nil, "token", "verify", "--jwks", e.url+"/.well-known/jwks.json", "--aud", e.up.srv.URL, tampered); code != exitDenied {
		t.Errorf("tampered token accepted: %d", code)
	}
	// No token anywhere an agent, a log or the disk could leak it.
	responses := a["_body"].(string) + body + ev["_body"].(string)
	e.stop()
	assertAbsent(t, e, responses, ju.tokens...)

	// Rotation: the new key signs, the old one still verifies.
	if code, out, errs := e.cli(testEnvVars(), "keys", "rotate", "--config", e.cfgPath); code != 0 {
		t.Fatalf("rotate: %s %s", out, errs)
	}
	e.start()
	ju.jwks = e.url + "/.well-known/jwks.json"
	_, jw := e.do("GET", "/.well-known/jwks.json", "", nil)
	if keys := jw["keys"].([]any); len(keys) != 2 {
		t.Fatalf("jwks after rotation: %v", jw["_body"])
	}
	if st, a := e.propose(supportKey, "int.read", map[string]any{}); st != 200 {
		t.Fatalf("after rotation: %d %v", st, a["_body"])
	}
}

// assertAbsent checks that no secret (raw, base64, hex, URL-encoded) is in
// the responses, the logs or any file under the data directory.
func assertAbsent(t *testing.T, e *testEnv, responses string, secrets ...string) {
	t.Helper()
	var files []string
	filepath.Walk(filepath.Join(e.dir, "data"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			files = append(files, p+"\x00"+string(b))
		}
		return nil
	})
	for _, s := range secrets {
		for _, f := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), hex.EncodeToString([]byte(s)), url.QueryEscape(s)} {
			if strings.Contains(responses, f) {
				t.Errorf("secret form %.20q… in API responses", f)
			}
			if strings.Contains(e.logs.String(), f) {
				t.Errorf("secret form %.20q… in logs", f)
			}
			for _, file := range files {
				if strings.Contains(file, f) {
					t.Errorf("secret form %.20q… in %s", f, strings.SplitN(file, "\x00", 2)[0])
				}
			}
		}
	}
}

// oidcOP starts the real OpenID Provider (zitadel/oidc's example OP) behind
// a proxy that counts token requests and records the tokens it issues.
type oidcOP struct {
	issuer   string           // the OP itself (discovery, keys)
	proxy    *httptest.Server // counts token requests
	mu       sync.Mutex
	requests map[string]int // by scope set
	issued   []string
	forms    []url.Values
	down     bool
}

// signIn runs the OP's authorization code flow for its test user and
// returns the user's ID token (subject "id1").
func (op *oidcOP) signIn(t *testing.T) string {
	id, _ := op.signInTokens(t, "openid profile")
	return id
}

// signInTokens returns the user's ID token and, with offline_access, a refresh token.
func (op *oidcOP) signInTokens(t *testing.T, scope string) (string, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirect := "http://127.0.0.1:1/callback"
	resp, err := c.Get(op.issuer + "auth?" + url.Values{"client_id": {"web"}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {scope}, "state": {"s"}, "nonce": {"n"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	id := loc.Query().Get("authRequestID")
	resp, err = c.PostForm(op.issuer+"login/username", url.Values{"id": {id}, "username": {"test-user@127.0.0.1"}, "password": {"verysecure"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = c.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	loc, _ = url.Parse(resp.Header.Get("Location"))
	req, _ := http.NewRequest("POST", op.issuer+"oauth/token", strings.NewReader(url.Values{"grant_type": {"authorization_code"},
		"code": {loc.Query().Get("code")}, "redirect_uri": {redirect}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("web", "web-client-secret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		IDToken      string `json:"id_token"`
		RefreshToken string `json:"refresh_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	if tok.IDToken == "" {
		t.Fatalf("sign-in at the OP failed (%d)", resp.StatusCode)
	}
	return tok.IDToken, tok.RefreshToken
}

func startOIDC(t *testing.T) *oidcOP {
	t.Helper()
	bin := os.Getenv("AGENTG8_OIDCOP")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/oidcop")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the OpenID Provider is not built; run make tools")
		}
		t.Skip("the OpenID Provider is not built; `make tools` builds it")
	}
	cmd := exec.Command(bin)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		t.Fatalf("oidcop: %q %v", line, err)
	}
	target, _ := url.Parse(strings.TrimSpace(strings.TrimPrefix(line, "listening ")))
	op := &oidcOP{requests: map[string]int{}, issuer: target.String()}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.Out.Host = target.Host },
		ModifyResponse: func(resp *http.Response) error {
			b, _ := io.ReadAll(resp.Body)
			resp.Body = io.NopCloser(strings.NewReader(string(b)))
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			if json.Unmarshal(b, &tok) == nil && tok.AccessToken != "" {
				op.mu.Lock()
				op.issued = append(op.issued, tok.AccessToken)
				op.mu.Unlock()
			}
			return nil
		}}
	op.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		form, _ := url.ParseQuery(string(body))
		op.mu.Lock()
		op.requests[form.Get("scope")]++
		op.forms = append(op.forms, form)
		down := op.down
		op.mu.Unlock()
		if down {
			w.WriteHeader(503)
			w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"client_secret=verysecret is wrong"}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(op.proxy.Close)
	return op
}

func (op *oidcOP) count(scope string) int {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.requests[scope]
}

func TestOAuthClientCredentials(t *testing.T) {
	op := startOIDC(t)
	clock := newTestClock(time.Now().UTC())
	e := newTestEnv(t, envOpts{allowPrivate: true, clock: clock, extraCreds: fmt.Sprintf(`  notes: {type: oauth2_client_credentials, token_url: %q, client_id: sid1, client_secret: "env:CC_SECRET", scopes: ["notes:read", "notes:write"], resource: "https://notes.example"}
  notes_bad: {type: oauth2_client_credentials, token_url: %q, client_id: sid1, client_secret: "env:CC_WRONG"}
`, op.proxy.URL+"/oauth/token", op.proxy.URL+"/oauth/token"),
		extraTasks: `
- {name: notes.read, description: Read notes., risk: read, input: {type: object}, credential: notes, scopes: ["notes:read"], request: {method: GET, url: "UPSTREAM/notes"}}
- {name: notes.write, description: Write notes., risk: write, input: {type: object}, credential: notes, scopes: ["notes:write"], request: {method: POST, url: "UPSTREAM/notes"}}
- {name: notes.bad, description: Wrong secret., risk: read, input: {type: object}, credential: notes_bad, request: {method: GET, url: "UPSTREAM/notes"}}
`, noStart: true})
	e.env["CC_SECRET"] = "verysecret"
	e.env["CC_WRONG"] = "not-the-secret"
	e.start()
	e.up.setHandler(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		json.NewEncoder(w).Encode(map[string]any{"raw": tok, "b64": base64.StdEncoding.EncodeToString([]byte(tok)),
			"hex": hex.EncodeToString([]byte(tok)), "url": url.QueryEscape(tok)})
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bodies []string
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, a := e.propose(supportKey, "notes.read", map[string]any{})
			mu.Lock()
			bodies = append(bodies, a["_body"].(string))
			mu.Unlock()
			if st != 200 {
				t.Errorf("%d %v", st, a["_body"])
			}
		}()
	}
	wg.Wait()
	if n := op.count("notes:read"); n != 1 {
		t.Errorf("%d token requests for 10 concurrent actions", n)
	}
	sent := map[string]bool{}
	for _, r := range e.up.all() {
		sent[r.Header.Get("Authorization")] = true
	}
	if len(sent) != 1 || !sent["Bearer "+op.issued[0]] {
		t.Errorf("upstream saw tokens %v", sent)
	}
	// Another scope set is another token.
	e.propose(supportKey, "notes.write", map[string]any{})
	if op.count("notes:write") != 1 || e.up.last().Header.Get("Authorization") == "Bearer "+op.issued[0] {
		t.Errorf("token reused across scope sets")
	}
	// Past its expiry (minus a margin) a cached token is never sent.
	clock.Advance(299 * time.Second)
	e.propose(supportKey, "notes.read", map[string]any{})
	if op.count("notes:read") != 2 || e.up.last().Header.Get("Authorization") == "Bearer "+op.issued[0] {
		t.Errorf("expired token sent (requests %d)", op.count("notes:read"))
	}
	// Wrong secret and a down token endpoint fail cleanly, with no upstream call.
	before := e.up.count()
	st, p := e.propose(supportKey, "notes.bad", map[string]any{})
	if st != 502 || p["code"] != "credential_unavailable" {
		t.Errorf("wrong secret: %d %v", st, p["_body"])
	}
	op.mu.Lock()
	op.down = true
	op.mu.Unlock()
	clock.Advance(10 * time.Minute)
	st, p = e.propose(supportKey, "notes.write", map[string]any{})
	if st != 502 || p["code"] != "credential_unavailable" || strings.Contains(p["_body"].(string), "verysecret") {
		t.Errorf("endpoint down: %d %v", st, p["_body"])
	}
	if e.up.count() != before {
		t.Errorf("upstream called without a credential")
	}
	bodies = append(bodies, p["_body"].(string))
	e.stop()
	assertAbsent(t, e, strings.Join(bodies, "\n"), append([]string{"verysecret"}, op.issued...)...)
}

func TestStoredAndVaultSecrets(t *testing.T) {
	// A small in-repo fake of Vault's KV v2 HTTP API (the real client talks to it).
	var vaultHits int
	hung := make(chan struct{})
	var hangs atomic.Bool
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hangs.Load() {
			<-hung // a Vault that does not answer
			return
		}
		if r.Header.Get("X-Vault-Token") != "vault-root-token" || r.URL.Path != "/v1/kv/data/apps/crm" {
			w.WriteHeader(403)
			w.Write([]byte(`{"errors":["permission denied"]}`))
			return
		}
		vaultHits++
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"data": map[string]any{"api_key": "vault-held-key-123"},
			"metadata": map[string]any{"version": 3}}})
	}))
	defer vault.Close()
	defer close(hung) // before Close, which waits for the hung handler
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	e := newTestEnv(t, envOpts{allowPrivate: true,
		extraConfig: fmt.Sprintf("secrets:\n  key: env:SECRETS_KEY\nvault:\n  addr: %s\n  token: env:VAULT_TOKEN\n  mount: kv\n  timeout: 1s\n", vault.URL),
		extraCreds:  "  stored: {type: api_key, secret: \"store:crm-key\", header: X-Api-Key}\n  fromvault: {type: api_key, secret: \"vault:apps/crm#api_key\", header: X-Api-Key}\n",
		extraTasks: `
- {name: s.stored, description: Uses a stored secret., risk: read, input: {type: object}, credential: stored, request: {method: GET, url: "UPSTREAM/s"}}
- {name: s.vault, description: Uses a Vault secret., risk: read, input: {type: object}, credential: fromvault, request: {method: GET, url: "UPSTREAM/v"}}
`, noStart: true})
	e.env["SECRETS_KEY"] = key
	e.env["VAULT_TOKEN"] = "vault-root-token"
	m := NewMain()
	var o syncBuffer
	m.Stdout, m.Stderr, m.LookupEnv, m.Stdin = &o, &o, lookup(e.env), strings.NewReader("stored-crm-key-456\n")
	if code := m.Run(t.Context(), []string{"secrets", "set", "crm-key", "--config", e.cfgPath}); code != 0 {
		t.Fatalf("secrets set: %s", o.String())
	}
	code, out, _ := e.cli(e.env, "secrets", "list", "--config", e.cfgPath)
	if code != 0 || !strings.Contains(out, "crm-key") || strings.Contains(out, "stored-crm-key") {
		t.Errorf("list: %s", out)
	}
	if code, _, errs := e.cli(e.env, "validate", "--config", e.cfgPath); code != 0 {
		t.Fatalf("validate: %s", errs)
	}
	e.start()
	if st, a := e.propose(supportKey, "s.stored", map[string]any{}); st != 200 || e.up.last().Header.Get("X-Api-Key") != "stored-crm-key-456" {
		t.Errorf("stored secret: %d %v", st, a["_body"])
	}
	if st, a := e.propose(supportKey, "s.vault", map[string]any{}); st != 200 || e.up.last().Header.Get("X-Api-Key") != "vault-held-key-123" {
		t.Errorf("vault secret: %d %v", st, a["_body"])
	}
	// A Vault that does not answer fails the action after vault.timeout
	// (1s here), not after the client's defaults (60 s a try, 3 tries).
	calls := e.up.count()
	hangs.Store(true)
	answered := e.proposeLater(supportKey, "s.vault", map[string]any{})
	if a := await(t, answered, 20*time.Second, "an action whose Vault hangs"); a["_status"] != 502 || a["code"] != "credential_unavailable" {
		t.Errorf("hung vault: %v %v", a["_status"], a["_body"])
	}
	if e.up.count() != calls {
		t.Error("the upstream was called without its credential")
	}
	e.stop()
	// The stored secret is encrypted at rest.
	assertAbsent(t, e, "", "stored-crm-key-456", "vault-held-key-123")
	if code, _, _ := e.cli(e.env, "secrets", "rm", "crm-key", "--config", e.cfgPath); code != 0 {
		t.Error("rm failed")
	}
	if code, _, errs := e.cli(e.env, "validate", "--config", e.cfgPath); code == 0 || !strings.Contains(errs, "crm-key") {
		t.Errorf("validate after rm: %d %s", code, errs)
	}
}

// A request under an Idempotency-Key that is slow before it creates its
// action (here: its first Vault read hangs) is taken for dead after a
// minute; a retry takes its claim over and runs the action under the
// claim's ID. When the slow request goes on, its action exists: it answers
// with that action, as the retry did — not 503 "the audit log cannot be
// written" — and nothing runs twice.
func TestSlowRequestLosesItsClaimCleanly(t *testing.T) {
	var armed atomic.Bool // the next read hangs
	entered, release := make(chan struct{}, 1), make(chan struct{})
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"data": map[string]any{"api_key": "vault-held-key-123"},
			"metadata": map[string]any{"version": 1}}})
	}))
	defer vault.Close()
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before Close, which waits for the held handler
	clock := newTestClock(time.Now())
	e := newTestEnv(t, envOpts{allowPrivate: true, clock: clock, noStart: true,
		extraConfig: fmt.Sprintf("vault:\n  addr: %s\n  token: env:VAULT_TOKEN\n  mount: kv\n", vault.URL),
		extraCreds:  "  fromvault: {type: api_key, secret: \"vault:apps/crm#api_key\", header: X-Api-Key}\n",
		extraTasks: `
- {name: s.vault, description: Uses a Vault secret., risk: read, input: {type: object}, credential: fromvault, request: {method: GET, url: "UPSTREAM/v"}}
`})
	e.env["VAULT_TOKEN"] = "vault-root-token"
	e.start() // reads the secret once, to check it
	armed.Store(true)
	first := e.proposeLater(supportKey, "s.vault", map[string]any{}, "Idempotency-Key", "slow")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request did not read Vault")
	}
	clock.Advance(2 * time.Minute)
	st, a := e.propose(supportKey, "s.vault", map[string]any{}, "Idempotency-Key", "slow")
	if st != 200 || a["status"] != "succeeded" {
		t.Fatalf("the retry that took the claim over: %d %v", st, a["_body"])
	}
	free()
	if f := await(t, first, 20*time.Second, "the slow first request"); f["_status"] != 200 || f["status"] != "succeeded" || f["id"] != a["id"] {
		t.Errorf("the slow first request: %v %v", f["_status"], f["_body"])
	}
	if n := e.up.count(); n != 1 {
		t.Errorf("%d upstream calls for one key", n)
	}
}

func TestTokenExchange(t *testing.T) {
	op := startOIDC(t)
	tokenURL := op.proxy.URL + "/oauth/token"
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true, extraCreds: fmt.Sprintf(`  asuser: {type: token_exchange, token_url: %q, client_id: web, client_secret: "env:TE_SECRET", issuer: %q, subject_audience: web, scopes: [openid, profile], actor: none}
  asuser_actor: {type: token_exchange, token_url: %q, client_id: web, client_secret: "env:TE_SECRET", issuer: %q, actor: minted}
`, tokenURL, op.issuer, tokenURL, op.issuer),
		extraTasks: `
- {name: te.read, description: Read as the user., risk: read, input: {type: object}, credential: asuser, request: {method: GET, url: "UPSTREAM/te"}}
- {name: te.actor, description: Read as the user with the agent as actor., risk: read, input: {type: object}, credential: asuser_actor, request: {method: GET, url: "UPSTREAM/te"}}
`})
	e.env["TE_SECRET"] = "web-client-secret"
	e.start()
	idToken := op.signIn(t)
	propose := func(task, user, token string) (int, map[string]any) {
		hdr := []string{}
		if token != "" {
			hdr = []string{"X-Subject-Token", token}
		}
		return e.do("POST", "/v1/actions", supportKey, map[string]any{"task": task, "input": map[string]any{}, "on_behalf_of": user}, hdr...)
	}
	st, a := propose("te.read", "alice", idToken)
	if st != 200 {
		t.Fatalf("exchange: %d %v", st, a["_body"])
	}
	last := op.forms[len(op.forms)-1]
	if last.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" || last.Get("subject_token") != idToken ||
		last.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token" || last.Get("actor_token") != "" {
		t.Errorf("exchange request: %v", last)
	}
	exchanged := op.issued[len(op.issued)-1]
	if got := e.up.last().Header.Get("Authorization"); got != "Bearer "+exchanged {
		t.Errorf("upstream got %.30q…", got)
	}
	// Cached per (user, scope set): no user token needed, no new exchange.
	n := len(op.forms)
	if st, a := propose("te.read", "alice", ""); st != 200 || len(op.forms) != n {
		t.Errorf("cached: %d %v (exchanges %d→%d)", st, a["_body"], n, len(op.forms))
	}
	// Another user's action with alice's token, a forged token, no token.
	before := e.up.count()
	for _, c := range []struct{ user, token, want string }{
		{"sam", idToken, "another user"},
		{"sam", idToken[:len(idToken)-6] + "AAAAAA", "signature"},
		{"sam", "", "no user token"},
	} {
		st, p := propose("te.read", c.user, c.token)
		if st != 502 || p["code"] != "credential_unavailable" || !strings.Contains(p["_body"].(string), c.want) {
			t.Errorf("%s/%q: %d %v", c.user, c.want, st, p["_body"])
		}
	}
	if e.up.count() != before {
		t.Error("upstream called without a valid exchange")
	}
	// With actor: minted, the agent is named in an actor token AgentG8 signs
	// (this OP accepts only actor tokens it issued itself, so it refuses).
	st, p := propose("te.actor", "alice", idToken)
	last = op.forms[len(op.forms)-1]
	act := decodeClaims(t, last.Get("actor_token"))
	if last.Get("actor_token_type") != "urn:ietf:params:oauth:token-type:jwt" || act["sub"] != "support-bot" || st != 502 {
		t.Errorf("actor token: %d %v %v", st, act, p["_body"])
	}
	_, ev := e.do("GET", "/v1/audit?action_id="+a["id"].(string), aliceKey, nil)
	if !strings.Contains(ev["_body"].(string), `"type":"token_exchange"`) {
		t.Errorf("issuance not audited: %s", ev["_body"])
	}
	body := a["_body"].(string) + ev["_body"].(string) + p["_body"].(string)
	e.stop()
	assertAbsent(t, e, body, idToken, exchanged, "web-client-secret")
}

// A stored per-user refresh token lets an approved action run later as the
// user, without the calling app present.
func TestTokenExchangeWithStoredRefreshToken(t *testing.T) {
	op := startOIDC(t)
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	e := newTestEnv(t, envOpts{allowPrivate: true, noStart: true,
		extraConfig: "secrets:\n  key: env:SECRETS_KEY\n",
		extraCreds: fmt.Sprintf(`  stored_user: {type: token_exchange, token_url: %q, client_id: web, client_secret: "env:TE_SECRET", subject_secret: "store:refresh-{user}", scopes: [openid]}
`, op.proxy.URL+"/oauth/token"),
		extraTasks: `
- {name: te.later, description: Runs as the user after approval., risk: write, input: {type: object}, approval: always, approvers: [finance], credential: stored_user, request: {method: POST, url: "UPSTREAM/te"}}
`})
	e.env["TE_SECRET"] = "web-client-secret"
	e.env["SECRETS_KEY"] = key
	_, refresh := op.signInTokens(t, "openid offline_access")
	if refresh == "" {
		t.Fatal("no refresh token from the OP")
	}
	m := NewMain()
	var o syncBuffer
	m.Stdout, m.Stderr, m.LookupEnv, m.Stdin = &o, &o, lookup(e.env), strings.NewReader(refresh)
	if code := m.Run(t.Context(), []string{"secrets", "set", "refresh-alice", "--config", e.cfgPath}); code != 0 {
		t.Fatalf("secrets set: %s", o.String())
	}
	e.start()
	st, a := e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "te.later", "input": map[string]any{}, "on_behalf_of": "alice"})
	id, aprID, hash := pendingOf(t, st, a)
	e.approve(franKey, aprID, hash, true)
	waitFor(t, "the approved action to run as alice", 10*time.Second, func() bool { return e.status(id) == "succeeded" })
	last := op.forms[len(op.forms)-1]
	if last.Get("subject_token") != refresh || last.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:refresh_token" {
		t.Errorf("exchange request: %v", last)
	}
	if got := e.up.last().Header.Get("Authorization"); got != "Bearer "+op.issued[len(op.issued)-1] {
		t.Errorf("upstream got %.30q…", got)
	}
	// A user with no stored token: credential_unavailable, nothing sent.
	st, a = e.do("POST", "/v1/actions", supportKey, map[string]any{"task": "te.later", "input": map[string]any{"x": 1}, "on_behalf_of": "sam"})
	id, aprID, hash = pendingOf(t, st, a)
	e.approve(franKey, aprID, hash, true)
	waitFor(t, "the failure", 10*time.Second, func() bool { return e.status(id) == "failed" })
	e.stop()
	assertAbsent(t, e, "", refresh)
}
