package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// KeyName names the audit log's signing key in checkpoints.
const KeyName = "agentg8-audit"

// Key signs checkpoints. Its verifier key can be published so anyone can
// check a checkpoint without the private key.
type Key struct {
	Signer      note.Signer
	VerifierKey string
	seed        []byte
	skey        string
}

// HMACKey derives a key for fingerprints of secrets written to the log.
func (k *Key) HMACKey() []byte {
	h := sha256.Sum256(append([]byte("agentg8 secret fingerprint\x00"), k.seed...))
	return h[:]
}

// LoadOrCreateKey reads a note signer key from path, creating it (mode 0600)
// when the file does not exist.
func LoadOrCreateKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		skey, _, err := note.GenerateKey(rand.Reader, KeyName)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		// Publish without overwriting: when replicas start at once, the
		// first key wins and the others load it.
		tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
		if err := os.WriteFile(tmp, []byte(skey+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("create audit key: %w", err)
		}
		defer os.Remove(tmp)
		if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
			return LoadOrCreateKey(path)
		} else if err != nil {
			return nil, fmt.Errorf("create audit key: %w", err)
		}
		b = []byte(skey)
	} else if err != nil {
		return nil, fmt.Errorf("read audit key: %w", err)
	}
	return ParseKey(strings.TrimSpace(string(b)))
}

// ParseKey parses a note signer key ("PRIVATE+KEY+name+hash+base64").
func ParseKey(skey string) (*Key, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("audit key: not an Ed25519 note key")
	}
	seed := raw[1:]
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, err
	}
	return &Key{Signer: s, VerifierKey: vkey, seed: seed, skey: skey}, nil
}

// SignerKey returns the private key in note's text form, for storage.
func (k *Key) SignerKey() string { return k.skey }
