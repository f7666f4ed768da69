package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/httpapi"
)

func (m *Main) clientFlags(fs *flag.FlagSet) (*string, *string) {
	u := fs.String("url", "", "gateway URL (default $AGENTG8_URL or http://127.0.0.1:8080)")
	k := fs.String("key", "", "API key (default $AGENTG8_KEY; prefer the environment)")
	return u, k
}

func (m *Main) client(u, k string) (*httpapi.Client, error) {
	if u == "" {
		u, _ = m.LookupEnv("AGENTG8_URL")
	}
	if u == "" {
		u = "http://127.0.0.1:8080"
	}
	if k == "" {
		k, _ = m.LookupEnv("AGENTG8_KEY")
	}
	if k == "" {
		return nil, usageErr("no API key: set AGENTG8_KEY")
	}
	return &httpapi.Client{BaseURL: u, Key: k}, nil
}

func (m *Main) printJSON(v any) error {
	enc := json.NewEncoder(m.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clientErr turns API problems into exit codes: denials and rejections are 3.
func clientErr(err error) error {
	var p *httpapi.Problem
	if errors.As(err, &p) && (p.Code == agentg8.CodePolicyDenied || p.Code == agentg8.CodeForbidden) {
		return errDenied{err}
	}
	return err
}

func (m *Main) cmdPropose(ctx context.Context, args []string) error {
	fs := m.flags("propose")
	u, k := m.clientFlags(fs)
	input := fs.String("input", "{}", "task input as JSON")
	dry := fs.Bool("dry-run", false, "preview only; nothing executes")
	wait := fs.Bool("wait", false, "wait for a pending approval to be decided")
	obo := fs.String("on-behalf-of", "", "user the agent acts for")
	reason := fs.String("reason", "", "why the action is proposed (shown to approvers)")
	idem := fs.String("idempotency-key", "", "Idempotency-Key header (default: a new random key)")
	retry := fs.Duration("retry", 30*time.Second, "how long to ask again, under the same key, when the answer is lost or the first attempt still runs (it runs at most once); 0 never")
	asJSON := fs.Bool("json", false, "print the action as JSON (dry runs print readably otherwise)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("usage: agentg8 propose TASK --input JSON [--dry-run] [--wait]")
	}
	if !json.Valid([]byte(*input)) {
		return usageErr("--input is not valid JSON")
	}
	c, err := m.client(*u, *k)
	if err != nil {
		return err
	}
	key := *idem
	if key == "" {
		key = "cli-" + rand.Text()
	}
	req := httpapi.ProposeRequest{Task: pos[0], Input: json.RawMessage(*input), DryRun: *dry, OnBehalfOf: *obo, Reason: *reason}
	var a *agentg8.Action
	err = sendAgain(ctx, *retry, m.logger("warn"), "propose "+pos[0], func() (err error) {
		a, _, err = c.Propose(ctx, req, key)
		return err
	}, func(p *httpapi.Problem) bool { return p.Code == agentg8.CodeIdempotencyInProgress })
	if err != nil {
		var p *httpapi.Problem
		if errors.As(err, &p) {
			_ = m.printJSON(p)
		}
		return clientErr(err)
	}
	for *wait && a.Status == agentg8.StatePendingApproval {
		if a, err = c.GetAction(ctx, a.ID, 30*time.Second); err != nil {
			return err
		}
	}
	if a.Status == agentg8.StateDryRun && !*asJSON {
		printPreview(m.Stdout, a, isTerminal(m.Stdout))
		return nil
	}
	if err := m.printJSON(a); err != nil {
		return err
	}
	switch a.Status {
	case agentg8.StateRejected, agentg8.StateDenied:
		return errDenied{fmt.Errorf("action %s is %s", a.ID, a.Status)}
	case agentg8.StateFailed, agentg8.StateExpired, agentg8.StateOutcomeUnknown, agentg8.StateCancelled:
		return fmt.Errorf("action %s is %s", a.ID, a.Status)
	}
	return nil
}

func (m *Main) cmdActions(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: agentg8 actions get ID [--wait 30s] | actions list [--task T] [--status S] [--limit N] | actions resolve ID --outcome succeeded|failed --comment TEXT")
	}
	fs := m.flags("actions " + args[0])
	u, k := m.clientFlags(fs)
	switch args[0] {
	case "get":
		wait := fs.Duration("wait", 0, "long-poll until the state changes, up to this long")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageErr("usage: agentg8 actions get ID")
		}
		c, err := m.client(*u, *k)
		if err != nil {
			return err
		}
		a, err := c.GetAction(ctx, pos[0], *wait)
		if err != nil {
			return clientErr(err)
		}
		return m.printJSON(a)
	case "list":
		task := fs.String("task", "", "only this task")
		status := fs.String("status", "", "only this status")
		limit := fs.Int("limit", 50, "at most this many")
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		c, err := m.client(*u, *k)
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if *task != "" {
			q.Set("task", *task)
		}
		if *status != "" {
			q.Set("status", *status)
		}
		acts, err := c.ListActions(ctx, q)
		if err != nil {
			return clientErr(err)
		}
		for _, a := range acts {
			fmt.Fprintf(m.Stdout, "%s  %-18s %-16s %-14s %s\n", a.CreatedAt.Format(time.RFC3339), a.ID[:min(len(a.ID), 18)], a.Status, a.Principal, a.Task)
		}
		return nil
	case "resolve":
		outcome := fs.String("outcome", "", "what the upstream really did: succeeded or failed")
		comment := fs.String("comment", "", "how you established it (required)")
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || *outcome == "" || *comment == "" {
			return usageErr("usage: agentg8 actions resolve ID --outcome succeeded|failed --comment TEXT")
		}
		c, err := m.client(*u, *k)
		if err != nil {
			return err
		}
		var a *agentg8.Action
		err = sendAgain(ctx, retryLimit, m.logger("warn"), "resolve "+pos[0], func() (err error) {
			a, err = c.Resolve(ctx, pos[0], agentg8.State(*outcome), *comment)
			return err
		}, nil)
		if err != nil {
			return clientErr(err)
		}
		return m.printJSON(a)
	}
	return usageErr("unknown actions command %q", args[0])
}

func (m *Main) cmdTools(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "import" {
		return m.cmdToolsImport(ctx, args[1:])
	}
	if len(args) == 0 || args[0] != "export" {
		return usageErr("usage: agentg8 tools export --format openai|anthropic|mcp | tools import --url URL --namespace NAME")
	}
	fs := m.flags("tools export")
	u, k := m.clientFlags(fs)
	format := fs.String("format", "openai", "openai, anthropic or mcp")
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	c, err := m.client(*u, *k)
	if err != nil {
		return err
	}
	tools, err := c.Tools(ctx, *format)
	if err != nil {
		return clientErr(err)
	}
	var v any
	if err := json.Unmarshal(tools, &v); err != nil {
		return err
	}
	return m.printJSON(v)
}

func (m *Main) cmdKeys(args []string) error {
	if len(args) == 0 || args[0] != "new" {
		return usageErr("usage: agentg8 keys new")
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(key))
	fmt.Fprintf(m.Stdout, "%s\n", key)
	fmt.Fprintf(m.Stderr, "sha256:%s\nStore the key where a secret reference can reach it (env: or file:); AgentG8 keeps only its hash in memory.\n", hex.EncodeToString(sum[:]))
	return nil
}

// newKey returns "ag8_" and 256 random bits.
func newKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "ag8_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
