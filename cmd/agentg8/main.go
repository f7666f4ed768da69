// Command agentg8 is the AgentG8 action gateway: the server, its operator
// commands and a client for agents and people. It is the only package that
// knows every other one: flags and config are read here and nowhere else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/store"
	"github.com/agentg8/agentg8/store/postgres"
)

// Exit codes (SPEC §4).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitDenied  = 3
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// Main is the program, as a value so tests run the real thing in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	LookupEnv      func(string) (string, bool)
	Clock          agentg8.Clock

	mu    sync.Mutex
	addr  string
	ready chan struct{}
}

// NewMain returns a Main bound to the process's streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv,
		Clock: agentg8.SystemClock{}, ready: make(chan struct{})}
}

// Ready is closed once a server started by Run is listening.
func (m *Main) Ready() <-chan struct{} { return m.ready }

// Addr is the address a server started by Run listens on.
func (m *Main) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

func (m *Main) setAddr(a string) {
	m.mu.Lock()
	m.addr = a
	m.mu.Unlock()
	close(m.ready)
}

const usage = `agentg8 — an action gateway for AI agents

Server:
  serve            run the gateway (--config, default ./agentg8.yaml)
  validate         check the config, tasks, policies and secrets
  demo             run everything with a sample CRM on embedded SQLite
  migrate          apply database migrations [--store URL] [--grant ROLE: least privilege for serve]
Agents and people (--url / AGENTG8_URL, key from AGENTG8_KEY):
  propose TASK --input JSON [--dry-run] [--wait]
  actions get ID [--wait 30s] | actions list
  approvals list | approve ID [--hash H] [--comment C] [--yes] | reject ID
  tools export --format openai|anthropic|mcp
  mcp --url URL     stdio MCP bridge for desktop agents (key from AGENTG8_KEY)
Operators:
  tools import --url URL --namespace NAME [--credential NAME] [--bearer-env VAR] [--tool NAME]
                   task file (stdout) running an MCP server's tools through AgentG8
  audit verify|tail|export
  keys new | keys rotate      new API key | rotate the token signing key
  secrets set NAME | list | rm NAME   secrets kept encrypted in the store
  token verify --jwks URL --aud A TOKEN   check a minted token as an upstream would
  version
Exit codes: 0 ok, 1 failure, 2 usage, 3 denied or rejected.
`

// errUsage marks a usage error (exit 2).
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return errUsage{fmt.Sprintf(format, a...)} }

// errDenied marks a denial or rejection (exit 3).
type errDenied struct{ err error }

func (e errDenied) Error() string { return e.err.Error() }

// Run executes one command and returns its exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	err := m.run(ctx, args)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintln(m.Stderr, "agentg8:", err)
	var ue errUsage
	var de errDenied
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &de):
		return exitDenied
	}
	return exitFailure
}

func (m *Main) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return usageErr("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return m.cmdServe(ctx, rest)
	case "validate":
		return m.cmdValidate(rest)
	case "demo":
		return m.cmdDemo(ctx, rest)
	case "migrate":
		return m.cmdMigrate(ctx, rest)
	case "propose":
		return m.cmdPropose(ctx, rest)
	case "actions":
		return m.cmdActions(ctx, rest)
	case "approvals":
		return m.cmdApprovals(ctx, rest)
	case "tools":
		return m.cmdTools(ctx, rest)
	case "audit":
		return m.cmdAudit(ctx, rest)
	case "keys":
		if len(rest) > 0 && rest[0] == "rotate" {
			return m.cmdKeysRotate(rest[1:])
		}
		return m.cmdKeys(rest)
	case "mcp":
		return m.cmdMCP(ctx, rest)
	case "secrets":
		return m.cmdSecrets(ctx, rest)
	case "token":
		return m.cmdToken(ctx, rest)
	case "version", "--version":
		fmt.Fprintln(m.Stdout, "agentg8", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	fmt.Fprint(m.Stderr, usage)
	return usageErr("unknown command %q", cmd)
}

func (m *Main) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("agentg8 "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	return fs
}

// parse parses flags and turns flag errors into usage errors. Flags may come
// before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// configFlag adds --config to fs; the returned func loads that file once
// the flags are parsed.
func (m *Main) configFlag(fs *flag.FlagSet) func() (*Config, error) {
	path := fs.String("config", "agentg8.yaml", "server config file")
	return func() (*Config, error) { return LoadConfig(*path, m.LookupEnv) }
}

func (m *Main) logger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: l}))
}

func (m *Main) cmdServe(ctx context.Context, args []string) error {
	fs := m.flags("serve")
	loadConfig := m.configFlag(fs)
	listen := fs.String("listen", "", "override the config's listen address")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	return m.serve(ctx, cfg, m.logger(*level), nil)
}

// gcPercent is the server's garbage-collection target unless GOGC is set.
// A gateway's live heap is small (megabytes) while each action leaves tens
// of kilobytes of garbage, so Go's default (100) collects dozens of times a
// second under load, each time scanning every connection's goroutine
// stack. 400 took about a sixth less Go CPU per action at 256 clients
// (docs/benchmarks.md) for a heap a few times a small live set; GOGC and
// GOMEMLIMIT still rule.
const gcPercent = 400

// setGC applies gcPercent unless the environment chose a GOGC; restore
// puts back what was there.
func setGC(lookupEnv func(string) (string, bool)) (restore func()) {
	if _, set := lookupEnv("GOGC"); set {
		return func() {}
	}
	prev := debug.SetGCPercent(gcPercent)
	return func() { debug.SetGCPercent(prev) }
}

// serve runs a server until ctx ends; started, if set, runs once it listens.
func (m *Main) serve(ctx context.Context, cfg *Config, logger *slog.Logger, started func(addr string)) error {
	setGC(m.LookupEnv)
	s, err := startServer(ctx, cfg, m.LookupEnv, logger, m.Clock)
	if err != nil {
		return err
	}
	addr := s.ln.Addr().String()
	if started != nil {
		started(addr)
	}
	m.setAddr(addr)
	err = s.serve(ctx)
	logger.Info("agentg8 stopped")
	return err
}

func (m *Main) cmdValidate(args []string) error {
	fs := m.flags("validate")
	loadConfig := m.configFlag(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	var secrets credential.SecretStore
	if cfg.Secrets.Key != "" {
		st, err := openStore(context.Background(), cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		secrets = st
	}
	l, err := load(cfg, m.LookupEnv, true, secrets)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "ok: %d tasks, %d policies, %d agents, %d users, %d credentials\n",
		len(l.registry.Tasks()), l.policy.Count(), len(cfg.Agents), len(cfg.Users), len(cfg.Credentials))
	if kind, _, _ := store.Kind(cfg.Store); kind == "postgres" {
		if w, _ := postgres.CheckTransport(cfg.Store, os.Getenv); w != "" {
			fmt.Fprintln(m.Stderr, "warning: store:", w)
		}
	}
	for _, w := range append(cfg.notifyWarnings(), cfg.credentialWarnings(l.registry.Tasks())...) {
		fmt.Fprintln(m.Stderr, "warning:", w)
	}
	return nil
}

func (m *Main) cmdMigrate(ctx context.Context, args []string) error {
	fs := m.flags("migrate")
	loadConfig := m.configFlag(fs)
	storeURL := fs.String("store", "", "migrate this store instead of the config's (e.g. the schema owner's postgres:// URL)")
	grant := fs.String("grant", "", "PostgreSQL: also grant this role what serve needs, and no more (no DDL, no change to audit records)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if *storeURL != "" {
		cfg.Store = *storeURL
	}
	// Name the store by kind only: a PostgreSQL URL may carry a password.
	kind, _, err := store.Kind(cfg.Store)
	if err != nil {
		return err
	}
	if *grant != "" && kind != "postgres" {
		return usageErr("--grant is for a PostgreSQL store; this one is %s", kind)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, "migrated the", kind, "store")
	if *grant != "" {
		if err := st.(*postgres.Store).GrantRuntime(ctx, *grant); err != nil {
			st.Close()
			return err
		}
		fmt.Fprintf(m.Stdout, "granted %s what serve needs\n", *grant)
	}
	return st.Close()
}
