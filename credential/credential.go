// Package credential resolves secret references and applies upstream
// credentials to requests at execution time, server-side only. Every secret
// it resolves is handed back with the request so callers can redact it from
// anything an agent, a log or the audit log might see.
package credential

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentg8/agentg8"
)

// MinSecretLen is the shortest secret accepted: shorter ones cannot be
// redacted from responses without mangling them.
const MinSecretLen = 8

// Resolver turns secret references into values. Values are read at use, so a
// rotated file or environment needs no restart.
type Resolver struct {
	// Dir is the folder relative file: paths are resolved against.
	Dir string
	// LookupEnv reads the environment; injected so tests need not mutate it.
	LookupEnv func(string) (string, bool)
	// Secrets resolves store: references (nil: not configured).
	Secrets *SecretBox
	// Vault resolves vault: references (nil: not configured).
	Vault *VaultKV
	// files caches file: secrets by path (*fileSecret); a file is read
	// again when it is replaced or rewritten.
	files sync.Map
}

// fileSecret is a file: secret as last read.
type fileSecret struct {
	info  os.FileInfo
	value string
}

// CheckRef checks the syntax of a secret reference.
func CheckRef(ref string) error {
	scheme, rest, ok := strings.Cut(ref, ":")
	if !ok || rest == "" {
		return fmt.Errorf("secret reference %q must be env:NAME, file:PATH, store:NAME or vault:PATH#FIELD", ref)
	}
	switch scheme {
	case "env", "file":
		return nil
	case "store":
		if !storeNameRE.MatchString(rest) {
			return fmt.Errorf("secret reference %q: store names are letters, digits, '.', '_' and '-'", ref)
		}
		return nil
	case "vault":
		if p, f, ok := strings.Cut(rest, "#"); !ok || p == "" || f == "" {
			return fmt.Errorf("secret reference %q must be vault:PATH#FIELD", ref)
		}
		return nil
	}
	return fmt.Errorf("secret reference %q: unknown scheme %q (use env:, file:, store: or vault:)", ref, scheme)
}

// Resolve returns the secret a reference points to.
func (r *Resolver) Resolve(ref string) (string, error) {
	if err := CheckRef(ref); err != nil {
		return "", err
	}
	scheme, rest, _ := strings.Cut(ref, ":")
	switch scheme {
	case "env":
		look := r.LookupEnv
		if look == nil {
			look = os.LookupEnv
		}
		v, ok := look(rest)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", rest)
		}
		return v, nil
	case "store":
		if r.Secrets == nil {
			return "", errors.New("store: secrets need secrets.key in the server config")
		}
		return r.Secrets.Get(context.Background(), rest)
	case "vault":
		if r.Vault == nil {
			return "", errors.New("vault: secrets need a vault section in the server config")
		}
		path, field, _ := strings.Cut(rest, "#")
		return r.Vault.Get(context.Background(), path, field)
	default: // file
		p := rest
		if !filepath.IsAbs(p) {
			p = filepath.Join(r.Dir, p)
		}
		// Rotation needs no restart, so every use looks at the file; a stat
		// is enough to know it is the one read before (same file, size and
		// modification time), which saves opening and reading it per action.
		info, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		if c, ok := r.files.Load(p); ok {
			c := c.(*fileSecret)
			if os.SameFile(c.info, info) && c.info.Size() == info.Size() && c.info.ModTime().Equal(info.ModTime()) {
				return c.value, nil
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", p)
		}
		r.files.Store(p, &fileSecret{info: info, value: v})
		return v, nil
	}
}

var storeNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Credential types.
const (
	TypeAPIKey            = "api_key"
	TypeClientCredentials = "oauth2_client_credentials"
	TypeMintedJWT         = "minted_jwt"
	TypeTokenExchange     = "token_exchange"
)

// Spec is a credential as configured in agentg8.yaml (SPEC §2.1).
type Spec struct {
	Type   string `yaml:"type"`
	Secret string `yaml:"secret"`
	// Header and Format say where the secret or token goes; tokens default
	// to "Authorization: Bearer {secret}".
	Header string `yaml:"header"`
	Format string `yaml:"format"`
	Query  string `yaml:"query"`
	// OAuth2 client credentials.
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
	Resource     string   `yaml:"resource"` // RFC 8707
	Audience     string   `yaml:"audience"`
	// Minted tokens.
	TTL string `yaml:"ttl"`
	// Token exchange (RFC 8693): the user's token comes from the calling
	// app in SubjectHeader, is verified against Issuer's keys, and is
	// exchanged at TokenURL; Actor "minted" adds the agent as actor_token.
	Issuer           string `yaml:"issuer"`
	SubjectHeader    string `yaml:"subject_header"`
	SubjectTokenType string `yaml:"subject_token_type"`
	SubjectAudience  string `yaml:"subject_audience"`
	Actor            string `yaml:"actor"`
	// SubjectSecret, instead of the header, names a stored per-user token
	// (e.g. a refresh token): a secret reference where {user} is the user's id.
	SubjectSecret string `yaml:"subject_secret"`
}

// Check validates a spec's shape (not its secret's presence).
func (s Spec) Check() error {
	if s.Format != "" && strings.Count(s.Format, "{secret}") != 1 {
		return errors.New(`format must contain {secret} exactly once`)
	}
	if s.Query != "" && (s.Header != "" || s.Format != "") {
		return errors.New("use header (with format) or query, not both")
	}
	switch s.Type {
	case TypeAPIKey:
		if err := CheckRef(s.Secret); err != nil {
			return fmt.Errorf("secret: %w", err)
		}
		if s.Header == "" && s.Query == "" {
			return errors.New("api_key needs header or query")
		}
		if s.TokenURL != "" || s.ClientID != "" || s.ClientSecret != "" || len(s.Scopes) > 0 || s.Audience != "" || s.TTL != "" || s.Resource != "" {
			return errors.New("api_key takes only secret, header, format and query")
		}
	case TypeClientCredentials:
		if !strings.HasPrefix(s.TokenURL, "https://") && !strings.HasPrefix(s.TokenURL, "http://") {
			return errors.New("token_url must be an http(s) URL")
		}
		if s.ClientID == "" {
			return errors.New("client_id is required")
		}
		if err := CheckRef(s.ClientSecret); err != nil {
			return fmt.Errorf("client_secret: %w", err)
		}
		if s.Secret != "" || s.TTL != "" {
			return errors.New("oauth2_client_credentials takes token_url, client_id, client_secret, scopes, resource, audience, header, format")
		}
	case TypeMintedJWT:
		if s.Secret != "" || s.TokenURL != "" || s.ClientID != "" || s.ClientSecret != "" || s.Resource != "" {
			return errors.New("minted_jwt takes audience, ttl, scopes, header and format")
		}
		if _, err := s.ttl(); err != nil {
			return err
		}
	case TypeTokenExchange:
		if !strings.HasPrefix(s.TokenURL, "https://") && !strings.HasPrefix(s.TokenURL, "http://") {
			return errors.New("token_url must be an http(s) URL")
		}
		if s.SubjectSecret == "" && !strings.HasPrefix(s.Issuer, "https://") && !strings.HasPrefix(s.Issuer, "http://") {
			return errors.New("issuer (of the users' tokens) must be an http(s) URL, or use subject_secret")
		}
		if s.ClientID == "" {
			return errors.New("client_id is required")
		}
		if err := CheckRef(s.ClientSecret); err != nil {
			return fmt.Errorf("client_secret: %w", err)
		}
		if s.Actor != "" && s.Actor != "minted" && s.Actor != "none" {
			return errors.New(`actor must be "minted" or "none"`)
		}
		if s.SubjectSecret != "" {
			if err := CheckRef(strings.ReplaceAll(s.SubjectSecret, "{user}", "user")); err != nil || !strings.Contains(s.SubjectSecret, "{user}") {
				return errors.New("subject_secret must be a secret reference containing {user}, e.g. store:refresh-{user}")
			}
		}
		switch s.SubjectTokenType {
		case "", TokenTypeID, TokenTypeJWT, TokenTypeAccess, TokenTypeRefresh:
		default:
			return fmt.Errorf("subject_token_type %q is not supported", s.SubjectTokenType)
		}
		if s.Secret != "" || s.TTL != "" {
			return errors.New("token_exchange takes token_url, client_id, client_secret, issuer, subject_*, actor, scopes, audience, resource, header, format")
		}
	case "":
		return errors.New("type is required")
	default:
		return fmt.Errorf("unknown credential type %q", s.Type)
	}
	return nil
}

func (s Spec) ttl() (time.Duration, error) {
	if s.TTL == "" {
		return 60 * time.Second, nil
	}
	d, err := time.ParseDuration(s.TTL)
	if err != nil || d <= 0 || d > MaxMintedTTL {
		return 0, fmt.Errorf("ttl must be a duration up to %s, not %q", MaxMintedTTL, s.TTL)
	}
	return d, nil
}

// secretRefs lists a spec's secret references.
func (s Spec) secretRefs() []string {
	switch s.Type {
	case TypeAPIKey:
		return []string{s.Secret}
	case TypeClientCredentials, TypeTokenExchange:
		return []string{s.ClientSecret}
	}
	return nil
}

// Use describes one use of a credential: the request it goes on and the
// action it serves (for minted tokens' claims).
type Use struct {
	Header http.Header
	URL    *url.URL
	// Scopes narrow the credential's scopes for this task.
	Scopes []string
	// Audience is the task's upstream (scheme://host) unless the credential names one.
	Audience    string
	Task        string
	ActionID    string
	Agent       string
	User        string
	RequestHash string
	ApprovalID  string
	// Preview marks a dry-run or preview read: only static secrets are
	// used; nothing is minted or requested.
	Preview bool
	// SubjectTokens are request headers the calling app passed (token
	// exchange reads the user's token from its subject_header);
	// UserSubject is the user's subject at the identity provider.
	SubjectTokens map[string]string
	UserSubject   string
}

// Issued is what applying a credential produced, for the audit log.
type Issued struct {
	Name string
	Type string
	// Secrets are every value that must never leave the server.
	Secrets []string
	// Fingerprint is an HMAC of the secret or token, safe for the audit log.
	Fingerprint string
	Scopes      []string
	Audience    string
	JTI         string
	ExpiresAt   time.Time
	// Redactor removes Secrets (raw and encoded) from anything shown.
	Redactor *Redactor
}

// ErrNotForPreview means the credential is not used by previews.
var ErrNotForPreview = errors.New("previews use only static credentials")

// Options configure a Set.
type Options struct {
	// HMACKey keys the fingerprints written to the audit log.
	HMACKey []byte
	// Keys sign minted tokens; Issuer is their iss.
	Keys   *KeySet
	Issuer string
	Now    func() time.Time
}

// Set applies configured credentials. Safe for concurrent use.
type Set struct {
	specs    map[string]Spec
	resolver *Resolver
	opts     Options
	tokens   *tokenCache
	jwks     *jwksCache
	// derived caches what is computed from a secret that is used again and
	// again (an API key, a cached client-credentials token): its
	// fingerprint and redactor, which cost more than the rest of applying
	// it. Minted tokens, new each time, are not kept.
	mu      sync.Mutex
	derived map[string]derived
}

type derived struct {
	fingerprint string
	redactor    *Redactor
}

// maxDerived bounds the cache; it is emptied when full (rotations and
// token refreshes add entries).
const maxDerived = 1024

// derive returns the fingerprint of value and a redactor for secrets,
// from the cache when reuse is true.
func (s *Set) derive(value string, secrets []string, reuse bool) derived {
	if !reuse {
		return derived{Fingerprint(s.opts.HMACKey, value), NewRedactor(secrets...)}
	}
	key := strings.Join(secrets, "\x00") + "\x00" + value
	s.mu.Lock()
	d, ok := s.derived[key]
	s.mu.Unlock()
	if ok {
		return d
	}
	d = derived{Fingerprint(s.opts.HMACKey, value), NewRedactor(secrets...)}
	s.mu.Lock()
	if len(s.derived) >= maxDerived {
		clear(s.derived)
	}
	s.derived[key] = d
	s.mu.Unlock()
	return d
}

// NewSet builds a set.
func NewSet(specs map[string]Spec, r *Resolver, o Options) (*Set, error) {
	var errs []error
	for n, s := range specs {
		if err := s.Check(); err != nil {
			errs = append(errs, fmt.Errorf("credentials.%s: %w", n, err))
		}
		if s.Type == TypeMintedJWT && o.Keys == nil {
			errs = append(errs, fmt.Errorf("credentials.%s: minted_jwt needs token signing keys", n))
		}
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	set := &Set{specs: specs, resolver: r, opts: o, tokens: newTokenCache(o.Now), derived: map[string]derived{}}
	set.jwks = &jwksCache{keys: map[string]jose.JSONWebKeySet{}, fetched: map[string]time.Time{}, client: set.tokens.client}
	return set, errors.Join(errs...)
}

// Names lists the configured credentials.
func (s *Set) Names() []string {
	var out []string
	for n := range s.specs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// CheckAvailable resolves every secret once (for validate and start-up).
func (s *Set) CheckAvailable() error {
	var errs []error
	for _, n := range s.Names() {
		for _, ref := range s.specs[n].secretRefs() {
			v, err := s.resolver.Resolve(ref)
			if err == nil && len(v) < MinSecretLen {
				err = fmt.Errorf("secret is shorter than %d characters", MinSecretLen)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("credentials.%s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Mask returns the header or query parameter a credential fills, and the
// marker that stands for it in previews.
func (s *Set) Mask(name string) (header, query, marker string) {
	sp := s.specs[name]
	header = sp.Header
	if sp.Query == "" && header == "" {
		header = "Authorization"
	}
	return header, sp.Query, "[credential:" + name + "]"
}

func unavailable(name string) error {
	return &agentg8.Error{Code: agentg8.CodeCredentialUnavailable, Message: fmt.Sprintf("credential %q is unavailable", name)}
}

// Apply obtains the credential now and sets it on the outgoing request.
// Errors are credential_unavailable and say nothing of the secret; there is
// never a fallback to another credential.
func (s *Set) Apply(ctx context.Context, name string, u *Use) (*Issued, error) {
	sp, ok := s.specs[name]
	if !ok {
		return nil, agentg8.Errorf(agentg8.CodeCredentialUnavailable, "credential %q is not configured", name)
	}
	if u.Preview && sp.Type != TypeAPIKey {
		return nil, ErrNotForPreview
	}
	iss := &Issued{Name: name, Type: sp.Type}
	var value string
	switch sp.Type {
	case TypeAPIKey:
		v, err := s.resolver.Resolve(sp.Secret)
		if err != nil || len(v) < MinSecretLen {
			return nil, unavailable(name)
		}
		value, iss.Secrets = v, []string{v}
	case TypeClientCredentials:
		secret, err := s.resolver.Resolve(sp.ClientSecret)
		if err != nil {
			return nil, unavailable(name)
		}
		scopes := sp.Scopes
		if len(u.Scopes) > 0 {
			scopes = u.Scopes
		}
		t, err := s.tokens.clientCredentials(ctx, name, sp, secret, scopes)
		if err != nil {
			return nil, &agentg8.Error{Code: agentg8.CodeCredentialUnavailable, Message: fmt.Sprintf("credential %q is unavailable: %v", name, err)}
		}
		value = t.AccessToken
		iss.Secrets = []string{secret, t.AccessToken}
		iss.Scopes, iss.ExpiresAt, iss.Audience = scopes, t.Expiry, sp.Audience
	case TypeTokenExchange:
		scopes := sp.Scopes
		if len(u.Scopes) > 0 {
			scopes = u.Scopes
		}
		t, extra, err := s.exchange(ctx, name, sp, u, scopes)
		if err != nil {
			return nil, &agentg8.Error{Code: agentg8.CodeCredentialUnavailable, Message: fmt.Sprintf("credential %q is unavailable: %v", name, err)}
		}
		value = t.AccessToken
		iss.Secrets = append(extra, t.AccessToken)
		iss.Scopes, iss.ExpiresAt, iss.Audience = scopes, t.Expiry, sp.Audience
	case TypeMintedJWT:
		tok, claims, err := s.mint(sp, u)
		if err != nil {
			return nil, unavailable(name)
		}
		value = tok
		iss.Secrets = []string{tok}
		iss.Scopes, iss.Audience, iss.JTI, iss.ExpiresAt = claims.scopes, claims.aud, claims.jti, claims.exp
	default:
		return nil, unavailable(name)
	}
	d := s.derive(value, iss.Secrets, sp.Type == TypeAPIKey || sp.Type == TypeClientCredentials)
	iss.Fingerprint, iss.Redactor = d.fingerprint, d.redactor
	header, query, _ := s.Mask(name)
	if query != "" {
		q := u.URL.Query()
		q.Set(query, value)
		u.URL.RawQuery = q.Encode()
		return iss, nil
	}
	format := sp.Format
	if format == "" && sp.Type != TypeAPIKey {
		format = "Bearer {secret}"
	}
	if format != "" {
		value = strings.Replace(format, "{secret}", value, 1)
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return nil, unavailable(name) // a secret that would split the header
	}
	u.Header.Set(header, value)
	return iss, nil
}

type minted struct {
	aud, jti string
	scopes   []string
	exp      time.Time
}

// mint signs a per-action token.
func (s *Set) mint(sp Spec, u *Use) (string, minted, error) {
	ttl, err := sp.ttl()
	if err != nil {
		return "", minted{}, err
	}
	now := s.opts.Now()
	m := minted{aud: sp.Audience, scopes: sp.Scopes, exp: now.Add(ttl)}
	if m.aud == "" {
		m.aud = u.Audience
	}
	if len(u.Scopes) > 0 {
		m.scopes = u.Scopes
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", m, err
	}
	m.jti = "jti_" + hex.EncodeToString(b[:])
	sub := u.Agent
	if u.User != "" {
		sub = u.User
	}
	std := jwt.Claims{Issuer: s.opts.Issuer, Subject: sub, Audience: jwt.Audience{m.aud}, ID: m.jti,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(m.exp)}
	ext := MintedClaims{Act: Actor{Sub: u.Agent}, Scope: scopeString(m.scopes),
		AgentG8: Binding{Task: u.Task, ActionID: u.ActionID, RequestHash: u.RequestHash, ApprovalID: u.ApprovalID}}
	tok, _, err := s.opts.Keys.sign(std, ext)
	return tok, m, err
}

// Fingerprint is an HMAC-SHA256 of a secret, so the audit log can say which
// secret was used without holding it.
func Fingerprint(key []byte, secret string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(secret))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))[:32]
}
