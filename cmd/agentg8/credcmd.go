package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentg8/agentg8/credential"
)

// cmdSecrets manages store: secrets, encrypted with secrets.key.
func (m *Main) cmdSecrets(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: agentg8 secrets set NAME (value on stdin) | list | rm NAME [--config FILE]")
	}
	sub := args[0]
	fs := m.flags("secrets " + sub)
	loadConfig := m.configFlag(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	want := map[string]int{"set": 1, "list": 0, "rm": 1}
	n, ok := want[sub]
	if !ok {
		return usageErr("unknown secrets command %q", sub)
	}
	if len(pos) != n {
		return usageErr("usage: agentg8 secrets set NAME | list | rm NAME")
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if cfg.Secrets.Key == "" {
		return errors.New("secrets.key is not set in the server config")
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	l := &loaded{cfg: cfg, resolver: &credential.Resolver{Dir: cfg.dir, LookupEnv: m.LookupEnv}}
	if err := l.wireSecrets(st); err != nil {
		return err
	}
	box := l.resolver.Secrets
	switch sub {
	case "set":
		b, err := io.ReadAll(io.LimitReader(m.Stdin, 1<<20))
		if err != nil {
			return err
		}
		v := strings.TrimRight(string(b), "\r\n")
		if len(v) < credential.MinSecretLen {
			return fmt.Errorf("the value on stdin is shorter than %d characters", credential.MinSecretLen)
		}
		if err := box.Set(ctx, pos[0], v); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "stored secret %s (reference it as store:%s)\n", pos[0], pos[0])
	case "list":
		list, err := box.List(ctx)
		if err != nil {
			return err
		}
		for _, r := range list {
			fmt.Fprintf(m.Stdout, "%-32s updated %s\n", r.Name, r.UpdatedAt.Format(time.RFC3339))
		}
	case "rm":
		if err := box.Delete(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "removed secret %s\n", pos[0])
	}
	return nil
}

// cmdToken verifies a minted token the way an upstream should.
func (m *Main) cmdToken(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageErr("usage: agentg8 token verify --jwks URL|FILE --aud AUDIENCE [--iss ISSUER] [TOKEN | - for stdin]")
	}
	fs := m.flags("token verify")
	jwks := fs.String("jwks", "", "JWKS URL (https://gateway/.well-known/jwks.json) or file")
	aud := fs.String("aud", "", "the audience you are (required)")
	iss := fs.String("iss", "", "the issuer you trust (recommended)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if *jwks == "" || *aud == "" || len(pos) > 1 {
		return usageErr("usage: agentg8 token verify --jwks URL|FILE --aud AUDIENCE [--iss ISSUER] [TOKEN]")
	}
	tok := ""
	if len(pos) == 1 && pos[0] != "-" {
		tok = pos[0]
	} else {
		b, err := io.ReadAll(io.LimitReader(m.Stdin, 64<<10))
		if err != nil {
			return err
		}
		tok = strings.TrimSpace(string(b))
	}
	var raw []byte
	if strings.HasPrefix(*jwks, "http://") || strings.HasPrefix(*jwks, "https://") {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *jwks, nil)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return fmt.Errorf("fetch JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("fetch JWKS: %s", resp.Status)
		}
		raw, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
	} else if raw, err = os.ReadFile(*jwks); err != nil {
		return err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("JWKS: %w", err)
	}
	std, ext, err := credential.VerifyToken(tok, set, *iss, *aud, time.Now())
	if err != nil {
		return errDenied{fmt.Errorf("token rejected: %w", err)}
	}
	return m.printJSON(map[string]any{"valid": true, "iss": std.Issuer, "sub": std.Subject, "aud": std.Audience, "jti": std.ID,
		"exp": std.Expiry.Time().UTC(), "act": ext.Act, "scope": ext.Scope, "agentg8": ext.AgentG8})
}

// cmdKeysRotate adds a new token signing key, keeping the previous one in
// the JWKS so tokens in flight still verify.
func (m *Main) cmdKeysRotate(args []string) error {
	fs := m.flags("keys rotate")
	loadConfig := m.configFlag(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	ks, err := credential.RotateKeySet(cfg.tokenKeysPath(), cfg.Tokens.Algorithm)
	if err != nil {
		return err
	}
	set := ks.JWKS()
	fmt.Fprintf(m.Stdout, "token signing key is now %s (previous %s still verifies); restart the gateway to sign with it\n",
		set.Keys[0].KeyID, set.Keys[len(set.Keys)-1].KeyID)
	return nil
}
