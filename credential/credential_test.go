package credential

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
)

func TestRedactor(t *testing.T) {
	secret := `s3cr3t/+="<&>`
	r := NewRedactor(secret)
	j, _ := json.Marshal(secret)
	forms := []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret)),
		url.QueryEscape(secret), url.PathEscape(secret), hex.EncodeToString([]byte(secret)), string(j[1 : len(j)-1])}
	for _, f := range forms {
		in := `{"x":"before ` + f + ` after"}`
		out := r.RedactString(in)
		if strings.Contains(out, f) || !strings.Contains(out, Redacted) {
			t.Errorf("form %q survived: %s", f, out)
		}
	}
	if NewRedactor().RedactString("plain") != "plain" {
		t.Error("empty redactor changed text")
	}
}

func TestResolverAndApply(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k"), []byte("file-secret-value\n"), 0o600)
	env := map[string]string{"API": "env-secret-value"}
	r := &Resolver{Dir: dir, LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	if v, err := r.Resolve("file:k"); err != nil || v != "file-secret-value" {
		t.Errorf("file: %q %v", v, err)
	}
	if v, err := r.Resolve("env:API"); err != nil || v != "env-secret-value" {
		t.Errorf("env: %q %v", v, err)
	}
	for _, bad := range []string{"env:NOPE", "file:nope", "plain", "vault:x#y", "store:x", "aws:x"} {
		if _, err := r.Resolve(bad); err == nil {
			t.Errorf("%s resolved", bad)
		}
	}
	set, err := NewSet(map[string]Spec{
		"hdr": {Type: "api_key", Secret: "env:API", Header: "Authorization", Format: "Bearer {secret}"},
		"qry": {Type: "api_key", Secret: "file:k", Query: "api_key"},
		"bad": {Type: "api_key", Secret: "env:NOPE", Header: "X-Key"},
	}, r, Options{HMACKey: []byte("hmac")})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	u, _ := url.Parse("https://h/p?a=1")
	iss, err := set.Apply(t.Context(), "hdr", &Use{Header: h, URL: u})
	if err != nil || h.Get("Authorization") != "Bearer env-secret-value" || iss.Secrets[0] != "env-secret-value" || !strings.HasPrefix(iss.Fingerprint, "hmac-sha256:") {
		t.Errorf("header: %v %v %+v", h, err, iss)
	}
	if strings.Contains(iss.Fingerprint, "env-secret") {
		t.Error("fingerprint holds the secret")
	}
	if _, err := set.Apply(t.Context(), "qry", &Use{Header: h, URL: u}); err != nil || u.Query().Get("api_key") != "file-secret-value" || u.Query().Get("a") != "1" {
		t.Errorf("query: %s %v", u, err)
	}
	// Rotation needs no restart: the file is read at use.
	os.WriteFile(filepath.Join(dir, "k"), []byte("rotated-secret-value"), 0o600)
	u, _ = url.Parse("https://h/p")
	set.Apply(t.Context(), "qry", &Use{Header: h, URL: u})
	if u.Query().Get("api_key") != "rotated-secret-value" {
		t.Errorf("rotation: %s", u)
	}
	// The cached value is not used once the file changes, even to a value
	// of the same length, or is replaced by a rename.
	qry := func() string {
		u, _ := url.Parse("https://h/p")
		set.Apply(t.Context(), "qry", &Use{Header: h, URL: u})
		return u.Query().Get("api_key")
	}
	time.Sleep(10 * time.Millisecond) // a modification time of its own
	os.WriteFile(filepath.Join(dir, "k"), []byte("rotated-secret-valuf"), 0o600)
	if got := qry(); got != "rotated-secret-valuf" {
		t.Errorf("same-length rewrite: %s", got)
	}
	os.WriteFile(filepath.Join(dir, "k.new"), []byte("renamed-secret-value"), 0o600)
	os.Rename(filepath.Join(dir, "k.new"), filepath.Join(dir, "k"))
	if got := qry(); got != "renamed-secret-value" {
		t.Errorf("replaced by rename: %s", got)
	}
	// What is derived from a reused secret (fingerprint, redactor) is
	// cached, and follows the secret when it rotates.
	a1, _ := set.Apply(t.Context(), "qry", &Use{Header: h, URL: u})
	a2, _ := set.Apply(t.Context(), "qry", &Use{Header: h, URL: u})
	if a1.Fingerprint != a2.Fingerprint || a1.Redactor != a2.Redactor ||
		a1.Redactor.RedactString("x renamed-secret-value y") != "x "+Redacted+" y" {
		t.Errorf("reused secret: %+v %+v", a1, a2)
	}
	os.WriteFile(filepath.Join(dir, "k"), []byte("rotated-again-value"), 0o600)
	a3, _ := set.Apply(t.Context(), "qry", &Use{Header: h, URL: u})
	if a3.Fingerprint == a1.Fingerprint || a3.Redactor.RedactString("rotated-again-value") != Redacted {
		t.Errorf("after rotation: %+v", a3)
	}
	_, err = set.Apply(t.Context(), "bad", &Use{Header: h, URL: u})
	var e *agentg8.Error
	if !errors.As(err, &e) || e.Code != agentg8.CodeCredentialUnavailable || strings.Contains(e.Message, "NOPE") {
		t.Errorf("unavailable: %v", err)
	}
	if err := set.CheckAvailable(); err == nil || !strings.Contains(err.Error(), "credentials.bad") {
		t.Errorf("check: %v", err)
	}
}

func TestSpecCheck(t *testing.T) {
	for name, s := range map[string]Spec{
		"no type":      {Secret: "env:A", Header: "X"},
		"both":         {Type: "api_key", Secret: "env:A", Header: "X", Query: "q"},
		"neither":      {Type: "api_key", Secret: "env:A"},
		"bad format":   {Type: "api_key", Secret: "env:A", Header: "X", Format: "Bearer"},
		"unknown type": {Type: "magic", Secret: "env:A"},
		"te no issuer": {Type: "token_exchange", TokenURL: "http://x", ClientID: "c", ClientSecret: "env:X"},
		"cc no client": {Type: "oauth2_client_credentials", TokenURL: "http://x", ClientSecret: "env:X"},
		"jwt long ttl": {Type: "minted_jwt", TTL: "10m"},
		"stray key":    {Type: "api_key", Secret: "env:A", Header: "X", TokenURL: "http://x"},
	} {
		if err := s.Check(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestSecretWithLineBreakIsRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k"), []byte("abcdefgh\r\nX-Evil: 1\n"), 0o600)
	set, _ := NewSet(map[string]Spec{"k": {Type: "api_key", Secret: "file:k", Header: "X-Key"}}, &Resolver{Dir: dir}, Options{})
	h := http.Header{}
	u, _ := url.Parse("https://h/")
	_, err := set.Apply(t.Context(), "k", &Use{Header: h, URL: u})
	var e *agentg8.Error
	if !errors.As(err, &e) || e.Code != agentg8.CodeCredentialUnavailable || len(h) != 0 {
		t.Fatalf("got %v, header %v", err, h)
	}
}

func TestMintedTokenClaims(t *testing.T) {
	ks, err := LoadOrCreateKeySet(filepath.Join(t.TempDir(), "keys.json"), AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	set, err := NewSet(map[string]Spec{"m": {Type: "minted_jwt", TTL: "90s", Scopes: []string{"b", "a"}}}, &Resolver{},
		Options{Keys: ks, Issuer: "https://gw", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	u, _ := url.Parse("https://api/")
	iss, err := set.Apply(t.Context(), "m", &Use{Header: h, URL: u, Audience: "https://api", Task: "t.x", ActionID: "act_1", Agent: "bot"})
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
	std, ext, err := VerifyToken(tok, ks.JWKS(), "https://gw", "https://api", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if std.Subject != "bot" || ext.Scope != "a b" || ext.AgentG8.ActionID != "act_1" || std.ID != iss.JTI || !std.Expiry.Time().Equal(now.Add(90*time.Second)) {
		t.Errorf("claims %+v %+v", std, ext)
	}
	if _, _, err := VerifyToken(tok, ks.JWKS(), "https://gw", "https://api", now.Add(2*time.Minute)); err == nil {
		t.Error("expired token verified")
	}
	if _, err := set.Apply(t.Context(), "m", &Use{Header: http.Header{}, URL: u, Preview: true}); !errors.Is(err, ErrNotForPreview) {
		t.Errorf("preview minted: %v", err)
	}
}
