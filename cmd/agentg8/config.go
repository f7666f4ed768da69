package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/notify"
	"github.com/agentg8/agentg8/registry"
	"github.com/agentg8/agentg8/store"
	"github.com/agentg8/agentg8/store/postgres"
)

// Config is agentg8.yaml (SPEC §2.1). Unknown keys are errors.
type Config struct {
	Listen      string                     `yaml:"listen"`
	PublicURL   string                     `yaml:"public_url"`
	Store       string                     `yaml:"store"`
	Tasks       string                     `yaml:"tasks"`
	Policies    string                     `yaml:"policies"`
	Agents      []AgentConfig              `yaml:"agents"`
	Users       []UserConfig               `yaml:"users"`
	Credentials map[string]credential.Spec `yaml:"credentials"`
	Egress      EgressConfig               `yaml:"egress"`
	Approvals   ApprovalsConfig            `yaml:"approvals"`
	Notify      []NotifyConfig             `yaml:"notify"`
	Audit       AuditConfig                `yaml:"audit"`
	Limits      LimitsConfig               `yaml:"limits"`
	Secrets     SecretsConfig              `yaml:"secrets"`
	Vault       VaultConfig                `yaml:"vault"`
	Tokens      TokensConfig               `yaml:"tokens"`
	Execution   ExecutionConfig            `yaml:"execution"`

	// dir is the folder of the config file; relative paths resolve against it.
	dir  string
	path string
	// tokenKeysTouch, when set (tests), replaces defaultTokenKeysTouch.
	tokenKeysTouch time.Duration
}

// AgentConfig is one agent.
type AgentConfig struct {
	ID     string   `yaml:"id"`
	Key    string   `yaml:"key"`
	Groups []string `yaml:"groups"`
	ActFor []string `yaml:"act_for"`
}

// UserConfig is one user.
type UserConfig struct {
	ID     string   `yaml:"id"`
	Groups []string `yaml:"groups"`
	Key    string   `yaml:"key"`
	Email  string   `yaml:"email"`
	// Subject is the user's subject at the identity provider (token exchange).
	Subject string `yaml:"subject"`
}

// EgressConfig controls where tasks may connect.
type EgressConfig struct {
	AllowPrivate bool `yaml:"allow_private"`
}

// ApprovalsConfig tunes approvals.
type ApprovalsConfig struct {
	DefaultTTL         string `yaml:"default_ttl"`
	MaxPendingPerAgent int    `yaml:"max_pending_per_agent"`
}

// NotifyConfig is one approval notification channel.
type NotifyConfig struct {
	Type     string   `yaml:"type"`
	URL      string   `yaml:"url"`
	Format   string   `yaml:"format"`
	Addr     string   `yaml:"addr"`
	From     string   `yaml:"from"`
	ToGroups []string `yaml:"to_groups"`
	// Secret signs a webhook's requests (a secret reference).
	Secret string `yaml:"secret"`
}

// AuditConfig configures the audit log.
type AuditConfig struct {
	SigningKey string `yaml:"signing_key"`
	// Auditors are the groups whose users may read actions and the audit log.
	Auditors []string `yaml:"auditors"`
}

// SecretsConfig enables store: secret references.
type SecretsConfig struct {
	// Key is a secret reference to 32 random bytes (base64 or hex).
	Key string `yaml:"key"`
}

// VaultConfig enables vault: secret references (KV v2).
type VaultConfig struct {
	Addr  string `yaml:"addr"`
	Token string `yaml:"token"` // secret reference
	Mount string `yaml:"mount"` // default "secret"
	// Timeout bounds each read of a secret, retries included (default 10s):
	// a Vault that hangs fails the action (credential_unavailable) rather
	// than holding it for the client's defaults (60 s a try, 3 tries).
	Timeout string `yaml:"timeout"`
}

// TokensConfig configures tokens AgentG8 mints per action.
type TokensConfig struct {
	Issuer    string `yaml:"issuer"`    // default: public_url
	Keys      string `yaml:"keys"`      // file:PATH of the signing keys; created when absent
	Algorithm string `yaml:"algorithm"` // EdDSA (default) or ES256
}

// ExecutionConfig tunes execution across replicas.
type ExecutionConfig struct {
	// LeaseTTL is how long a replica's execution lease lasts without renewal.
	LeaseTTL string `yaml:"lease_ttl"`
	// Resolvers are the groups whose users may settle outcome_unknown
	// actions after checking the upstream (default: nobody).
	Resolvers []string `yaml:"resolvers"`
}

// LimitsConfig bounds requests.
type LimitsConfig struct {
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ActionsPerMinute bounds each agent's proposals, dry runs included.
	ActionsPerMinute int `yaml:"actions_per_minute"`
	// IdempotencyTTL is how long an Idempotency-Key's answer is kept.
	IdempotencyTTL string `yaml:"idempotency_ttl"`
}

var envRE = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}`)
var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)

// LoadConfig reads path strictly: defaults, then the file (with ${env:NAME}
// expanded inside string values), then Validate.
func LoadConfig(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlErr(path, err)
	}
	var errs []error
	for _, doc := range f.Docs {
		ast.Walk(visitor(func(n ast.Node) {
			s, ok := n.(*ast.StringNode)
			if !ok {
				return
			}
			s.Value = envRE.ReplaceAllStringFunc(s.Value, func(m string) string {
				name := envRE.FindStringSubmatch(m)[1]
				v, ok := lookupEnv(name)
				if !ok {
					errs = append(errs, fmt.Errorf("%s:%d: environment variable %s is not set", path, s.GetToken().Position.Line, name))
				}
				return v
			})
		}), doc)
	}
	c := &Config{Listen: "127.0.0.1:8080", Store: "sqlite:agentg8.db", Tasks: "tasks", Policies: "policies",
		Approvals: ApprovalsConfig{DefaultTTL: "24h"}, Audit: AuditConfig{SigningKey: "file:audit.key"}, Limits: LimitsConfig{IdempotencyTTL: "24h"},
		Tokens: TokensConfig{Keys: "file:token-keys.json", Algorithm: "EdDSA"}}
	if len(f.Docs) > 0 && f.Docs[0].Body != nil {
		if err := yaml.NodeToValue(f.Docs[0].Body, c, yaml.Strict()); err != nil {
			return nil, yamlErr(path, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c.path = abs
	c.dir = filepath.Dir(abs)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

type visitor func(ast.Node)

func (v visitor) Visit(n ast.Node) ast.Visitor { v(n); return v }

// Validate checks what can be checked without touching secrets.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", c.path, key, fmt.Sprintf(format, a...)))
	}
	if kind, _, err := store.Kind(c.Store); err != nil {
		bad("store", "%v", err)
	} else if kind == "postgres" {
		if _, err := postgres.CheckTransport(c.Store, os.Getenv); err != nil {
			bad("store", "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, a := range c.Agents {
		k := fmt.Sprintf("agents[%d]", i)
		if !idRE.MatchString(a.ID) {
			bad(k+".id", "%q is not a valid id", a.ID)
		}
		if seen[a.ID] {
			bad(k+".id", "%q is used twice", a.ID)
		}
		seen[a.ID] = true
		if err := credential.CheckRef(a.Key); err != nil {
			bad(k+".key", "%v", err)
		}
	}
	users := map[string]bool{}
	for i, u := range c.Users {
		k := fmt.Sprintf("users[%d]", i)
		if !idRE.MatchString(u.ID) {
			bad(k+".id", "%q is not a valid id", u.ID)
		}
		if seen[u.ID] || users[u.ID] {
			bad(k+".id", "%q is used twice (agent and user ids share one namespace)", u.ID)
		}
		users[u.ID] = true
		if u.Email != "" {
			if err := notify.CheckAddress(u.Email); err != nil {
				bad(k+".email", "%q: %v", u.Email, err)
			}
		}
		if u.Key != "" {
			if err := credential.CheckRef(u.Key); err != nil {
				bad(k+".key", "%v", err)
			}
		}
	}
	for _, n := range c.credentialNames() {
		if err := c.Credentials[n].Check(); err != nil {
			bad("credentials."+n, "%v", err)
		}
	}
	if c.Approvals.MaxPendingPerAgent < 0 {
		bad("approvals.max_pending_per_agent", "must be positive")
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		bad("public_url", "must be an http(s) URL")
	}
	if d, err := time.ParseDuration(c.Approvals.DefaultTTL); err != nil || d <= 0 {
		bad("approvals.default_ttl", "%q is not a positive duration", c.Approvals.DefaultTTL)
	}
	for i, n := range c.Notify {
		k := fmt.Sprintf("notify[%d]", i)
		switch n.Type {
		case "webhook":
			if !strings.HasPrefix(n.URL, "http://") && !strings.HasPrefix(n.URL, "https://") {
				bad(k+".url", "webhook needs an http(s) url")
			}
			if n.Format != "" && n.Format != "json" && n.Format != "slack" {
				bad(k+".format", "must be json or slack")
			}
			if n.Secret != "" {
				if err := credential.CheckRef(n.Secret); err != nil {
					bad(k+".secret", "%v", err)
				}
			}
		case "smtp":
			if n.Addr == "" || n.From == "" || len(n.ToGroups) == 0 {
				bad(k, "smtp needs addr, from and to_groups")
			}
			if n.Secret != "" {
				bad(k+".secret", "only webhooks are signed")
			}
		default:
			bad(k+".type", "must be webhook or smtp, not %q", n.Type)
		}
	}
	if c.Secrets.Key != "" {
		if err := credential.CheckRef(c.Secrets.Key); err != nil || strings.HasPrefix(c.Secrets.Key, "store:") {
			bad("secrets.key", "must be an env: or file: reference")
		}
	}
	if c.Vault.Addr != "" || c.Vault.Token != "" {
		if !strings.HasPrefix(c.Vault.Addr, "http://") && !strings.HasPrefix(c.Vault.Addr, "https://") {
			bad("vault.addr", "must be an http(s) URL")
		}
		if err := credential.CheckRef(c.Vault.Token); err != nil || strings.HasPrefix(c.Vault.Token, "vault:") {
			bad("vault.token", "must be an env:, file: or store: reference")
		}
		if c.Vault.Timeout != "" {
			if d, err := time.ParseDuration(c.Vault.Timeout); err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
				bad("vault.timeout", "must be a duration from 100ms to 5m")
			}
		}
	}
	if c.Execution.LeaseTTL != "" {
		if d, err := time.ParseDuration(c.Execution.LeaseTTL); err != nil || d < time.Second {
			bad("execution.lease_ttl", "must be a duration of at least 1s")
		}
	}
	for i, g := range c.Execution.Resolvers {
		if !slices.ContainsFunc(c.Users, func(u UserConfig) bool { return slices.Contains(u.Groups, g) }) {
			bad(fmt.Sprintf("execution.resolvers[%d]", i), "group %q has no users", g)
		}
	}
	if !strings.HasPrefix(c.Tokens.Keys, "file:") {
		bad("tokens.keys", "must be file:PATH (created on first start)")
	}
	if c.Tokens.Algorithm != credential.AlgEdDSA && c.Tokens.Algorithm != credential.AlgES256 {
		bad("tokens.algorithm", "must be EdDSA or ES256")
	}
	if !strings.HasPrefix(c.Audit.SigningKey, "file:") {
		bad("audit.signing_key", "must be file:PATH (created on first start)")
	}
	if c.Limits.ActionsPerMinute < 0 {
		bad("limits.actions_per_minute", "must be positive")
	}
	if c.Limits.MaxBodyBytes < 0 {
		bad("limits.max_body_bytes", "must be positive")
	}
	if d, err := time.ParseDuration(c.Limits.IdempotencyTTL); err != nil || d < 2*time.Hour {
		// Shorter, and an agent's ordinary retry (or the stdio bridge's)
		// could find its key forgotten and run the action again: a claim
		// given up after a store failure is dated an hour back (so every
		// replica takes it for abandoned), and must still be kept for
		// the retry that follows.
		bad("limits.idempotency_ttl", "must be a duration of at least 2h")
	}
	return errors.Join(errs...)
}

func (c *Config) credentialNames() []string {
	var out []string
	for n := range c.Credentials {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// rel resolves a path from the config against the config's folder.
func (c *Config) rel(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// storeURL returns the store with a relative sqlite path resolved.
func (c *Config) storeURL() string {
	kind, rest, _ := store.Kind(c.Store)
	if kind == "sqlite" {
		return "sqlite:" + c.rel(rest)
	}
	return c.Store
}

func (c *Config) signingKeyPath() string {
	return c.rel(strings.TrimPrefix(c.Audit.SigningKey, "file:"))
}

// notifyWarnings names webhooks that would send notices unencrypted over
// the network: a notice carries the request's input and preview.
func (c *Config) notifyWarnings() []string {
	var out []string
	for i, n := range c.Notify {
		if host, ok := plainRemote(n.URL); ok && n.Type == "webhook" {
			out = append(out, fmt.Sprintf("notify[%d].url: plain http sends approval notices (with the request's input and preview) to %s unencrypted, where a machine on the path can read or alter them; use https", i, host))
		}
	}
	return out
}

// credentialWarnings names where a credential would cross the network
// unencrypted: a task whose upstream (request or MCP server) is plain http
// on another machine, and a token endpoint likewise.
func (c *Config) credentialWarnings(tasks []*registry.Task) []string {
	var out []string
	for _, t := range tasks {
		if host, ok := plainRemote(t.Origin()); ok && t.Credential != "" {
			out = append(out, fmt.Sprintf("task %s (%s): plain http sends credential %q to %s unencrypted, where a machine on the path can read it; use https", t.Name, t.Path, t.Credential, host))
		}
	}
	names := make([]string, 0, len(c.Credentials))
	for n := range c.Credentials {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if host, ok := plainRemote(c.Credentials[n].TokenURL); ok {
			out = append(out, fmt.Sprintf("credentials.%s.token_url: plain http sends the client secret to %s unencrypted; use https", n, host))
		}
	}
	return out
}

// plainRemote reports whether raw is a plain-http URL of another machine,
// and its host.
func plainRemote(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || isLoopbackHost(u.Hostname()) {
		return "", false
	}
	return u.Host, true
}

// isLoopbackHost reports whether host names this machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) idempotencyTTL() time.Duration {
	d, _ := time.ParseDuration(c.Limits.IdempotencyTTL)
	return d
}

func (c *Config) approvalTTL() time.Duration {
	d, _ := time.ParseDuration(c.Approvals.DefaultTTL)
	return d
}

var yamlPosRE = regexp.MustCompile(`^\[(\d+):(\d+)\]\s*`)

// yamlErr formats a YAML error as file:line: message.
func yamlErr(path string, err error) error {
	msg := yaml.FormatError(err, false, false)
	if m := yamlPosRE.FindStringSubmatch(msg); m != nil {
		msg = m[1] + ": " + msg[len(m[0]):]
	} else {
		msg = " " + msg
	}
	msg, _, _ = strings.Cut(msg, "\n")
	return fmt.Errorf("%s:%s", path, msg)
}

func (c *Config) tokenKeysPath() string {
	return c.rel(strings.TrimPrefix(c.Tokens.Keys, "file:"))
}

// vaultTimeout is vault.timeout, 10 s by default.
func (c *Config) vaultTimeout() time.Duration {
	if d, err := time.ParseDuration(c.Vault.Timeout); err == nil {
		return d
	}
	return 10 * time.Second
}

func (c *Config) leaseTTL() time.Duration {
	d, _ := time.ParseDuration(c.Execution.LeaseTTL)
	return d
}
