package credential

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Signing algorithms for minted tokens.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// MaxMintedTTL caps a minted token's lifetime.
const MaxMintedTTL = 5 * time.Minute

// KeySet holds the keys that sign minted tokens: the first signs, the rest
// (the previous key after a rotation) still verify, so tokens in flight
// survive a rotation.
type KeySet struct {
	mu   sync.RWMutex
	keys []jose.JSONWebKey // private, newest first
}

type keyFile struct {
	Keys []jose.JSONWebKey `json:"keys"`
}

func newKey(alg string) (jose.JSONWebKey, error) {
	var priv any
	switch alg {
	case AlgEdDSA, "":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return jose.JSONWebKey{}, err
		}
		priv, alg = k, AlgEdDSA
	case AlgES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return jose.JSONWebKey{}, err
		}
		priv = k
	default:
		return jose.JSONWebKey{}, fmt.Errorf("unknown signing algorithm %q (use EdDSA or ES256)", alg)
	}
	k := jose.JSONWebKey{Key: priv, Algorithm: alg, Use: "sig"}
	pub := k.Public()
	tp, err := pub.Thumbprint(cryptoSHA256)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	k.KeyID = fmt.Sprintf("%x", tp[:8])
	return k, nil
}

// LoadOrCreateKeySet reads the key file, creating it with one key (mode
// 0600) when absent.
func LoadOrCreateKeySet(path, alg string) (*KeySet, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := newKey(alg)
		if err != nil {
			return nil, err
		}
		ks := &KeySet{keys: []jose.JSONWebKey{k}}
		// Publish without overwriting: when two replicas start at once, the
		// first file wins and the other loads it.
		tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
		if err := ks.saveAs(tmp); err != nil {
			return nil, err
		}
		defer os.Remove(tmp)
		if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
			return LoadOrCreateKeySet(path, alg)
		} else if err != nil {
			return nil, err
		}
		return ks, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil || len(f.Keys) == 0 {
		return nil, fmt.Errorf("token keys %s: not a key file", path)
	}
	for _, k := range f.Keys {
		if k.IsPublic() || !k.Valid() {
			return nil, fmt.Errorf("token keys %s: key %s is not a private signing key", path, k.KeyID)
		}
	}
	return &KeySet{keys: f.Keys}, nil
}

// save replaces the key file atomically (temp file, then rename), mode 0600.
func (ks *KeySet) save(path string) error {
	tmp := path + ".tmp"
	if err := ks.saveAs(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (ks *KeySet) saveAs(path string) error {
	b, err := json.MarshalIndent(keyFile{Keys: ks.keys}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// RotateKeySet adds a new signing key and keeps the previous one for
// verification; older keys are dropped.
func RotateKeySet(path, alg string) (*KeySet, error) {
	ks, err := LoadOrCreateKeySet(path, alg)
	if err != nil {
		return nil, err
	}
	k, err := newKey(alg)
	if err != nil {
		return nil, err
	}
	ks.mu.Lock()
	ks.keys = append([]jose.JSONWebKey{k}, ks.keys[0])
	ks.mu.Unlock()
	return ks, ks.save(path)
}

// JWKS returns the public keys, newest first.
func (ks *KeySet) JWKS() jose.JSONWebKeySet {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	var out jose.JSONWebKeySet
	for _, k := range ks.keys {
		out.Keys = append(out.Keys, k.Public())
	}
	return out
}

// KeyIDs returns the keys' IDs (kid), newest first.
func (ks *KeySet) KeyIDs() []string {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	var out []string
	for _, k := range ks.keys {
		out = append(out, k.KeyID)
	}
	return out
}

// sign serialises claims with the current key.
func (ks *KeySet) sign(claims ...any) (string, string, error) {
	ks.mu.RLock()
	k := ks.keys[0]
	ks.mu.RUnlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", "", err
	}
	b := jwt.Signed(signer)
	for _, c := range claims {
		b = b.Claims(c)
	}
	tok, err := b.Serialize()
	return tok, k.KeyID, err
}

// Actor is the RFC 8693 act claim.
type Actor struct {
	Sub string `json:"sub"`
}

// Binding is the agentg8 claim: which action, and for approved actions,
// which exact request, the token was minted for.
type Binding struct {
	Task        string `json:"task"`
	ActionID    string `json:"action_id"`
	RequestHash string `json:"request_hash,omitempty"`
	ApprovalID  string `json:"approval_id,omitempty"`
}

// MintedClaims are a minted token's claims beyond the registered ones.
type MintedClaims struct {
	Act     Actor   `json:"act"`
	Scope   string  `json:"scope,omitempty"`
	AgentG8 Binding `json:"agentg8"`
}

// VerifyToken checks a minted token against a JWKS: signature, issuer (when
// iss is set), audience, expiry. It returns the claims.
func VerifyToken(token string, keys jose.JSONWebKeySet, iss, aud string, now time.Time) (*jwt.Claims, *MintedClaims, error) {
	t, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return nil, nil, fmt.Errorf("not a signed JWT: %w", err)
	}
	if len(t.Headers) != 1 {
		return nil, nil, errors.New("token must have exactly one signature")
	}
	found := keys.Key(t.Headers[0].KeyID)
	if len(found) == 0 {
		return nil, nil, fmt.Errorf("no key %q in the JWKS", t.Headers[0].KeyID)
	}
	var std jwt.Claims
	var ext MintedClaims
	if err := t.Claims(found[0].Key, &std, &ext); err != nil {
		return nil, nil, fmt.Errorf("signature: %w", err)
	}
	exp := jwt.Expected{Issuer: iss, Time: now}
	if aud != "" {
		exp.AnyAudience = jwt.Audience{aud}
	}
	if err := std.ValidateWithLeeway(exp, 5*time.Second); err != nil {
		return nil, nil, err
	}
	if std.Expiry == nil || std.ID == "" {
		return nil, nil, errors.New("token lacks exp or jti")
	}
	return &std, &ext, nil
}

// scopeString joins scopes the way OAuth does.
func scopeString(s []string) string {
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(s, " ")
}
