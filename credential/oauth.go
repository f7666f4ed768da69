package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"
)

// refreshEarly is how long before expiry a cached token is replaced, so an
// expired token is never sent.
const refreshEarly = 30 * time.Second

// tokenCache holds OAuth access tokens per (credential, scope set): a token
// is never reused for another scope set, and concurrent actions share one
// token request.
type tokenCache struct {
	mu     sync.Mutex
	tokens map[string]*oauth2.Token
	group  singleflight.Group
	client *http.Client
	now    func() time.Time
}

func newTokenCache(now func() time.Time) *tokenCache {
	return &tokenCache{tokens: map[string]*oauth2.Token{}, now: now,
		client: &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *tokenCache) fresh(key string) *oauth2.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tokens[key]
	if t == nil || t.AccessToken == "" || (!t.Expiry.IsZero() && !c.now().Add(refreshEarly).Before(t.Expiry)) {
		return nil
	}
	return t
}

// clientCredentials returns an access token for the scope set, from the
// cache or the token endpoint.
func (c *tokenCache) clientCredentials(ctx context.Context, name string, sp Spec, secret string, scopes []string) (*oauth2.Token, error) {
	key := name + "\x00" + scopeString(scopes)
	if t := c.fresh(key); t != nil {
		return t, nil
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		if t := c.fresh(key); t != nil {
			return t, nil
		}
		cfg := clientcredentials.Config{ClientID: sp.ClientID, ClientSecret: secret, TokenURL: sp.TokenURL,
			Scopes: slices.Clone(scopes), EndpointParams: url.Values{}, AuthStyle: oauth2.AuthStyleInHeader}
		if sp.Resource != "" {
			cfg.EndpointParams.Set("resource", sp.Resource) // RFC 8707
		}
		if sp.Audience != "" {
			cfg.EndpointParams.Set("audience", sp.Audience)
		}
		// The request must not die with the first caller's context.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		t, err := cfg.Token(context.WithValue(tctx, oauth2.HTTPClient, c.client))
		if err != nil {
			return nil, tokenError(err)
		}
		if t.Expiry.IsZero() {
			t.Expiry = c.now().Add(5 * time.Minute) // no expires_in: assume short-lived
		}
		c.mu.Lock()
		c.tokens[key] = t
		c.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*oauth2.Token), nil
}

// tokenError describes a token endpoint failure without its body, which may
// echo secrets.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return fmt.Errorf("token endpoint refused: %s (HTTP %d)", re.ErrorCode, re.Response.StatusCode)
		}
		return fmt.Errorf("token endpoint answered HTTP %d", re.Response.StatusCode)
	}
	return errors.New("token endpoint unreachable")
}
