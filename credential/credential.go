// Package credential resolves secret references and applies upstream
// credentials to requests at execution time, server-side only. Every secret
// it resolves is handed back with the request so callers can redact it from
// anything an agent, a log or the audit log might see.
package credential

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

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
}

// CheckRef checks the syntax of a secret reference.
func CheckRef(ref string) error {
	scheme, rest, ok := strings.Cut(ref, ":")
	if !ok || rest == "" {
		return fmt.Errorf("secret reference %q must be env:NAME or file:PATH", ref)
	}
	switch scheme {
	case "env", "file":
		return nil
	case "store", "vault":
		return fmt.Errorf("secret reference %q: %s: references are not supported yet", ref, scheme)
	}
	return fmt.Errorf("secret reference %q: unknown scheme %q (use env: or file:)", ref, scheme)
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
	default: // file
		p := rest
		if !filepath.IsAbs(p) {
			p = filepath.Join(r.Dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", p)
		}
		return v, nil
	}
}

// Spec is a credential as configured in agentg8.yaml (SPEC §2.1).
type Spec struct {
	Type   string `yaml:"type"`
	Secret string `yaml:"secret"`
	Header string `yaml:"header"`
	Format string `yaml:"format"`
	Query  string `yaml:"query"`
	// Keys of later credential types, accepted now so configs written for
	// them fail with a clear message rather than "unknown key".
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
	Audience     string   `yaml:"audience"`
	TTL          string   `yaml:"ttl"`
}

// Check validates a spec's shape (not its secret's presence).
func (s Spec) Check() error {
	switch s.Type {
	case "api_key":
		if err := CheckRef(s.Secret); err != nil {
			return fmt.Errorf("secret: %w", err)
		}
		if (s.Header == "") == (s.Query == "") {
			return errors.New("api_key needs exactly one of header or query")
		}
		if s.Format != "" && strings.Count(s.Format, "{secret}") != 1 {
			return errors.New(`format must contain {secret} exactly once`)
		}
		if s.Query != "" && s.Format != "" {
			return errors.New("format applies to header credentials only")
		}
		if s.TokenURL != "" || s.ClientID != "" || s.ClientSecret != "" || len(s.Scopes) > 0 || s.Audience != "" || s.TTL != "" {
			return errors.New("api_key takes only secret, header, format and query")
		}
		return nil
	case "oauth2_client_credentials", "minted_jwt", "token_exchange":
		return fmt.Errorf("credential type %q is not supported yet", s.Type)
	case "":
		return errors.New("type is required")
	}
	return fmt.Errorf("unknown credential type %q", s.Type)
}

// Issued is what applying a credential produced.
type Issued struct {
	Name string
	// Secrets are every value that must never leave the server.
	Secrets []string
	// Fingerprint is an HMAC of the secret, safe for the audit log.
	Fingerprint string
}

// Set applies configured credentials.
type Set struct {
	specs    map[string]Spec
	resolver *Resolver
	hmacKey  []byte
}

// NewSet builds a set; hmacKey keys the fingerprints written to the audit log.
func NewSet(specs map[string]Spec, r *Resolver, hmacKey []byte) (*Set, error) {
	var errs []error
	for n, s := range specs {
		if err := s.Check(); err != nil {
			errs = append(errs, fmt.Errorf("credentials.%s: %w", n, err))
		}
	}
	return &Set{specs: specs, resolver: r, hmacKey: hmacKey}, errors.Join(errs...)
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

// Scopes returns the scopes a credential may grant.
func (s *Set) Scopes(name string) []string { return s.specs[name].Scopes }

// CheckAvailable resolves every secret once (for validate and start-up).
func (s *Set) CheckAvailable() error {
	var errs []error
	for _, n := range s.Names() {
		v, err := s.resolver.Resolve(s.specs[n].Secret)
		if err == nil && len(v) < MinSecretLen {
			err = fmt.Errorf("secret is shorter than %d characters", MinSecretLen)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("credentials.%s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// Mask returns the header or query parameter a credential fills, and the
// marker that stands for it in previews.
func (s *Set) Mask(name string) (header, query, marker string) {
	sp := s.specs[name]
	return sp.Header, sp.Query, "[credential:" + name + "]"
}

// Apply resolves the credential now and sets it on the outgoing request.
// Errors are credential_unavailable and say nothing of the secret.
func (s *Set) Apply(_ context.Context, name string, h http.Header, u *url.URL) (*Issued, error) {
	sp, ok := s.specs[name]
	if !ok {
		return nil, agentg8.Errorf(agentg8.CodeCredentialUnavailable, "credential %q is not configured", name)
	}
	v, err := s.resolver.Resolve(sp.Secret)
	if err != nil || len(v) < MinSecretLen {
		return nil, &agentg8.Error{Code: agentg8.CodeCredentialUnavailable, Message: fmt.Sprintf("credential %q is unavailable", name)}
	}
	if sp.Header != "" {
		val := v
		if sp.Format != "" {
			val = strings.Replace(sp.Format, "{secret}", v, 1)
		}
		h.Set(sp.Header, val)
	} else {
		q := u.Query()
		q.Set(sp.Query, v)
		u.RawQuery = q.Encode()
	}
	return &Issued{Name: name, Secrets: []string{v}, Fingerprint: Fingerprint(s.hmacKey, v)}, nil
}

// Fingerprint is an HMAC-SHA256 of a secret, so the audit log can say which
// secret was used without holding it.
func Fingerprint(key []byte, secret string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(secret))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))[:32]
}
