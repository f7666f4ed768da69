package credential

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SecretRecord is one encrypted secret as stored.
type SecretRecord struct {
	Name       string
	Nonce      []byte
	Ciphertext []byte
	UpdatedAt  time.Time
}

// SecretStore persists encrypted secrets (store: references).
type SecretStore interface {
	GetSecret(ctx context.Context, name string) (*SecretRecord, error)
	PutSecret(ctx context.Context, r SecretRecord) error
	ListSecrets(ctx context.Context) ([]SecretRecord, error)
	DeleteSecret(ctx context.Context, name string) (bool, error)
}

// ErrNoSecret means no stored secret has the name.
var ErrNoSecret = errors.New("no such secret")

// SecretBox keeps secrets in the store, sealed with AES-256-GCM; the
// secret's name is authenticated data, so a ciphertext cannot be moved to
// another name.
type SecretBox struct {
	store SecretStore
	aead  cipher.AEAD
	now   func() time.Time
}

// ParseSecretsKey decodes a 32-byte key given as base64 or hex.
func ParseSecretsKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, dec := range []func(string) ([]byte, error){base64.StdEncoding.DecodeString, base64.RawURLEncoding.DecodeString, hex.DecodeString} {
		if b, err := dec(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("secrets key must be 32 random bytes, base64 or hex encoded (e.g. `head -c32 /dev/urandom | base64`)")
}

// NewSecretBox returns a box over store with a 32-byte key.
func NewSecretBox(store SecretStore, key []byte, now func() time.Time) (*SecretBox, error) {
	block, err := aes.NewCipher(key)
	if err != nil || len(key) != 32 {
		return nil, errors.New("secrets key must be 32 bytes")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &SecretBox{store: store, aead: aead, now: now}, nil
}

// Set seals and stores a secret.
func (b *SecretBox) Set(ctx context.Context, name, value string) error {
	if !storeNameRE.MatchString(name) {
		return fmt.Errorf("secret name %q: letters, digits, '.', '_' and '-' only", name)
	}
	if value == "" {
		return errors.New("secret value is empty")
	}
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	ct := b.aead.Seal(nil, nonce, []byte(value), []byte(name))
	return b.store.PutSecret(ctx, SecretRecord{Name: name, Nonce: nonce, Ciphertext: ct, UpdatedAt: b.now()})
}

// Get opens a stored secret.
func (b *SecretBox) Get(ctx context.Context, name string) (string, error) {
	r, err := b.store.GetSecret(ctx, name)
	if err != nil {
		return "", fmt.Errorf("stored secret %s: %w", name, err)
	}
	pt, err := b.aead.Open(nil, r.Nonce, r.Ciphertext, []byte(name))
	if err != nil {
		return "", fmt.Errorf("stored secret %s cannot be decrypted (wrong secrets key?)", name)
	}
	return string(pt), nil
}

// List returns names and update times, never values.
func (b *SecretBox) List(ctx context.Context) ([]SecretRecord, error) {
	rs, err := b.store.ListSecrets(ctx)
	for i := range rs {
		rs[i].Nonce, rs[i].Ciphertext = nil, nil
	}
	return rs, err
}

// Delete removes a secret.
func (b *SecretBox) Delete(ctx context.Context, name string) error {
	ok, err := b.store.DeleteSecret(ctx, name)
	if err == nil && !ok {
		return ErrNoSecret
	}
	return err
}
