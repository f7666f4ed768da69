package credential

import (
	"context"
	"fmt"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// VaultKV reads secrets from a HashiCorp Vault KV v2 engine
// (vault:PATH#FIELD references).
type VaultKV struct {
	kv      *vault.KVv2
	timeout time.Duration
}

// NewVaultKV connects to Vault at addr with token, on the KV v2 mount;
// each read gives up after timeout, retries included.
func NewVaultKV(addr, token, mount string, timeout time.Duration) (*VaultKV, error) {
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = timeout
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	c.SetToken(token)
	if mount == "" {
		mount = "secret"
	}
	return &VaultKV{kv: c.KVv2(mount), timeout: timeout}, nil
}

// Get reads one field of the latest version of a secret.
func (v *VaultKV) Get(ctx context.Context, path, field string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	s, err := v.kv.Get(ctx, strings.Trim(path, "/"))
	if err != nil {
		return "", fmt.Errorf("vault secret %s: unavailable", path)
	}
	val, ok := s.Data[field].(string)
	if !ok || val == "" {
		return "", fmt.Errorf("vault secret %s has no string field %q", path, field)
	}
	return val, nil
}
