package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// RFC 8693 token type identifiers.
const (
	TokenTypeAccess  = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeID      = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT     = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeRefresh = "urn:ietf:params:oauth:token-type:refresh_token"
	grantExchange    = "urn:ietf:params:oauth:grant-type:token-exchange"
	defaultSubjectHd = "X-Subject-Token"
)

// jwksCache fetches an issuer's keys through OIDC discovery. Callers
// needing an issuer's keys at once share one fetch, and no lock is held
// across it: an identity provider that is slow or down must not make
// every caller wait in turn, nor hold up other issuers.
type jwksCache struct {
	mu      sync.Mutex
	keys    map[string]jose.JSONWebKeySet
	fetched map[string]time.Time
	client  *http.Client
	group   singleflight.Group
}

func (c *jwksCache) cached(issuer string, now time.Time) (jose.JSONWebKeySet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ks, ok := c.keys[issuer]
	return ks, ok && now.Sub(c.fetched[issuer]) < 5*time.Minute
}

func (c *jwksCache) get(ctx context.Context, issuer string, now time.Time) (jose.JSONWebKeySet, error) {
	if ks, ok := c.cached(issuer, now); ok {
		return ks, nil
	}
	v, err, _ := c.group.Do(issuer, func() (any, error) {
		if ks, ok := c.cached(issuer, now); ok {
			return ks, nil
		}
		// The fetch must not die with the first caller's context.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		ks, err := c.fetch(fctx, issuer)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.keys[issuer], c.fetched[issuer] = ks, now
		c.mu.Unlock()
		return ks, nil
	})
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	return v.(jose.JSONWebKeySet), nil
}

// fetch reads an issuer's keys.
func (c *jwksCache) fetch(ctx context.Context, issuer string) (jose.JSONWebKeySet, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := c.getJSON(ctx, strings.TrimRight(issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("issuer discovery: %w", err)
	}
	if disc.Issuer != issuer || disc.JWKSURI == "" {
		return jose.JSONWebKeySet{}, errors.New("issuer discovery: issuer or jwks_uri mismatch")
	}
	var ks jose.JSONWebKeySet
	if err := c.getJSON(ctx, disc.JWKSURI, &ks); err != nil {
		return ks, fmt.Errorf("issuer keys: %w", err)
	}
	return ks, nil
}

func (c *jwksCache) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// verifyAssertion checks a user's token (a JWT from the identity provider,
// e.g. an ID token) the calling app passed: signature against the issuer's
// JWKS, issuer, expiry, audience when configured, and subject.
func (s *Set) verifyAssertion(ctx context.Context, sp Spec, token, wantSub string) error {
	keys, err := s.jwks.get(ctx, sp.Issuer, s.opts.Now())
	if err != nil {
		return err
	}
	t, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA, jose.PS256})
	if err != nil || len(t.Headers) != 1 {
		return errors.New("user token is not a signed JWT")
	}
	k := keys.Key(t.Headers[0].KeyID)
	if len(k) == 0 {
		return errors.New("user token signed with an unknown key")
	}
	var c jwt.Claims
	if err := t.Claims(k[0].Key, &c); err != nil {
		return errors.New("user token signature is invalid")
	}
	exp := jwt.Expected{Issuer: sp.Issuer, Time: s.opts.Now()}
	if sp.SubjectAudience != "" {
		exp.AnyAudience = jwt.Audience{sp.SubjectAudience}
	}
	if err := c.ValidateWithLeeway(exp, 30*time.Second); err != nil {
		return fmt.Errorf("user token rejected: %w", err)
	}
	if c.Subject != wantSub {
		return errors.New("user token belongs to another user")
	}
	return nil
}

// exchange obtains a downscoped token for the user (RFC 8693), cached per
// (credential, user, scope set) until shortly before expiry.
func (s *Set) exchange(ctx context.Context, name string, sp Spec, u *Use, scopes []string) (*oauth2.Token, []string, error) {
	key := name + "\x00" + u.User + "\x00" + scopeString(scopes)
	if t := s.tokens.fresh(key); t != nil {
		return t, nil, nil
	}
	if u.User == "" {
		return nil, nil, errors.New("token exchange needs an action on behalf of a user")
	}
	var subject string
	if sp.SubjectSecret != "" {
		// A token stored for this user (e.g. a refresh token from when they
		// connected their account); the identity provider checks it.
		v, err := s.resolver.Resolve(strings.ReplaceAll(sp.SubjectSecret, "{user}", u.User))
		if err != nil {
			return nil, nil, errors.New("no stored token for this user")
		}
		subject = v
	} else {
		subject = u.SubjectTokens[http.CanonicalHeaderKey(sp.subjectHeader())]
		if subject == "" {
			return nil, nil, errors.New("no user token: the calling app must pass one in " + sp.subjectHeader())
		}
		sub := u.UserSubject
		if sub == "" {
			sub = u.User
		}
		if err := s.verifyAssertion(ctx, sp, subject, sub); err != nil {
			return nil, nil, err
		}
	}
	secret, err := s.resolver.Resolve(sp.ClientSecret)
	if err != nil {
		return nil, nil, errors.New("client secret unavailable")
	}
	form := url.Values{"grant_type": {grantExchange}, "subject_token": {subject}, "subject_token_type": {sp.subjectType()},
		"requested_token_type": {TokenTypeAccess}}
	if len(scopes) > 0 {
		form.Set("scope", scopeString(scopes))
	}
	if sp.Audience != "" {
		form.Set("audience", sp.Audience)
	}
	if sp.Resource != "" {
		form.Set("resource", sp.Resource)
	}
	secrets := []string{secret, subject}
	if sp.Actor == "minted" {
		// The agent, as the RFC 8693 actor: a short token AgentG8 signs.
		act, _, err := s.mint(Spec{TTL: "60s", Audience: sp.TokenURL}, &Use{Agent: u.Agent, Task: u.Task, ActionID: u.ActionID, Audience: sp.TokenURL})
		if err != nil {
			return nil, nil, err
		}
		form.Set("actor_token", act)
		form.Set("actor_token_type", TokenTypeJWT)
		secrets = append(secrets, act)
	}
	v, err, _ := s.tokens.group.Do(key, func() (any, error) {
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, sp.TokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(sp.ClientID), url.QueryEscape(secret))
		resp, err := s.tokens.client.Do(req)
		if err != nil {
			return nil, errors.New("token endpoint unreachable")
		}
		defer resp.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int64  `json:"expires_in"`
			Error       string `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
		if resp.StatusCode != 200 || out.AccessToken == "" {
			if out.Error != "" {
				return nil, fmt.Errorf("token exchange refused: %s (HTTP %d)", out.Error, resp.StatusCode)
			}
			return nil, fmt.Errorf("token exchange answered HTTP %d", resp.StatusCode)
		}
		t := &oauth2.Token{AccessToken: out.AccessToken, Expiry: s.opts.Now().Add(time.Duration(out.ExpiresIn) * time.Second)}
		if out.ExpiresIn == 0 {
			t.Expiry = s.opts.Now().Add(5 * time.Minute)
		}
		s.tokens.mu.Lock()
		s.tokens.tokens[key] = t
		s.tokens.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return nil, secrets, err
	}
	return v.(*oauth2.Token), secrets, nil
}

func (sp Spec) subjectHeader() string {
	if sp.SubjectHeader != "" {
		return sp.SubjectHeader
	}
	return defaultSubjectHd
}

func (sp Spec) subjectType() string {
	switch {
	case sp.SubjectTokenType != "":
		return sp.SubjectTokenType
	case sp.SubjectSecret != "":
		return TokenTypeRefresh
	}
	return TokenTypeID
}

// SubjectHeaders lists the request headers token_exchange credentials read
// the user's token from.
func (s *Set) SubjectHeaders() []string {
	seen := map[string]bool{}
	var out []string
	for _, sp := range s.specs {
		if sp.Type == TypeTokenExchange && sp.SubjectSecret == "" && !seen[sp.subjectHeader()] {
			seen[sp.subjectHeader()] = true
			out = append(out, sp.subjectHeader())
		}
	}
	return out
}
