package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/connector/httpconn"
	"github.com/agentg8/agentg8/connector/mcpconn"
	"github.com/agentg8/agentg8/console"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/httpapi"
	"github.com/agentg8/agentg8/mcpserver"
	"github.com/agentg8/agentg8/notify"
	"github.com/agentg8/agentg8/policy"
	"github.com/agentg8/agentg8/registry"
	"github.com/agentg8/agentg8/store"
	"github.com/agentg8/agentg8/store/postgres"
	"github.com/agentg8/agentg8/store/sqlite"
)

// minSigningSecret is the shortest webhook signing secret accepted: the
// receiver holds it too, and a short one could be guessed from signatures.
const minSigningSecret = 16

// loaded is everything a config yields that needs no store.
type loaded struct {
	cfg      *Config
	resolver *credential.Resolver
	registry *registry.Registry
	policy   *policy.Engine
	users    map[string]agentg8.User
	agents   map[string]agentg8.Principal
}

// load reads tasks and policies and cross-checks them against the config.
// With checkSecrets it also resolves every secret reference once.
func load(cfg *Config, lookupEnv func(string) (string, bool), checkSecrets bool, secrets credential.SecretStore) (*loaded, error) {
	l := &loaded{cfg: cfg, resolver: &credential.Resolver{Dir: cfg.dir, LookupEnv: lookupEnv}, users: map[string]agentg8.User{},
		agents: map[string]agentg8.Principal{}}
	if err := l.wireSecrets(secrets); err != nil {
		return nil, err
	}
	p := peopleOf(cfg)
	l.users, l.agents = p.Users, p.Agents
	var errs []error
	l.registry, l.policy, errs = loadCatalog(cfg)
	if checkSecrets {
		for i, a := range cfg.Agents {
			if _, err := l.resolver.Resolve(a.Key); err != nil {
				errs = append(errs, fmt.Errorf("agents[%d] (%s).key: %w", i, a.ID, err))
			}
		}
		for i, u := range cfg.Users {
			if u.Key == "" {
				continue
			}
			if _, err := l.resolver.Resolve(u.Key); err != nil {
				errs = append(errs, fmt.Errorf("users[%d] (%s).key: %w", i, u.ID, err))
			}
		}
		errs = append(errs, notifySecrets(cfg, l.resolver)...)
		set, err := credential.NewSet(cfg.Credentials, l.resolver, credential.Options{Keys: &credential.KeySet{}})
		if err == nil {
			err = set.CheckAvailable()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return l, errors.Join(errs...)
}

// notifySecrets checks that every webhook signing secret can be read and
// is long enough.
func notifySecrets(cfg *Config, r *credential.Resolver) []error {
	var errs []error
	for i, n := range cfg.Notify {
		if n.Secret == "" {
			continue
		}
		if v, err := r.Resolve(n.Secret); err != nil {
			errs = append(errs, fmt.Errorf("notify[%d].secret: %w", i, err))
		} else if len(v) < minSigningSecret {
			errs = append(errs, fmt.Errorf("notify[%d].secret: a signing secret needs at least %d characters", i, minSigningSecret))
		}
	}
	return errs
}

// channelsOf is the config's notification channels.
func channelsOf(cfg *Config) []notify.Channel {
	var out []notify.Channel
	for _, n := range cfg.Notify {
		out = append(out, notify.Channel{Type: n.Type, URL: n.URL, Format: n.Format, Addr: n.Addr, From: n.From, ToGroups: n.ToGroups, SecretRef: n.Secret})
	}
	return out
}

// rulesOf is the config's access groups and limits, which a reload may
// change (restartOnly leaves them out).
func rulesOf(cfg *Config) action.Rules {
	return action.Rules{AuditorGroups: cfg.Audit.Auditors, ResolverGroups: cfg.Execution.Resolvers, ApprovalTTL: cfg.approvalTTL(),
		MaxPending: cfg.Approvals.MaxPendingPerAgent, RatePerMinute: cfg.Limits.ActionsPerMinute, IdempotencyTTL: cfg.idempotencyTTL()}
}

// peopleOf returns the configured users and agents.
func peopleOf(cfg *Config) *action.People {
	p := &action.People{Users: map[string]agentg8.User{}, Agents: map[string]agentg8.Principal{}}
	for _, a := range cfg.Agents {
		p.Agents[a.ID] = agentg8.Principal{Kind: agentg8.KindAgent, ID: a.ID, Groups: a.Groups, ActFor: a.ActFor}
	}
	for _, u := range cfg.Users {
		p.Users[u.ID] = agentg8.User{ID: u.ID, Groups: u.Groups, Subject: u.Subject}
	}
	return p
}

// agentsOf lists the configured agents in config order.
func agentsOf(cfg *Config) []agentg8.Principal {
	var out []agentg8.Principal
	for _, a := range cfg.Agents {
		out = append(out, agentg8.Principal{Kind: agentg8.KindAgent, ID: a.ID, Groups: a.Groups, ActFor: a.ActFor})
	}
	return out
}

// emailsOf maps each group to its users' addresses (approval notices).
func emailsOf(cfg *Config) map[string][]string {
	emails := map[string][]string{}
	for _, u := range cfg.Users {
		for _, g := range u.Groups {
			if u.Email != "" {
				emails[g] = append(emails[g], u.Email)
			}
		}
	}
	return emails
}

// loadCatalog reads tasks and policies and checks them against the config:
// task credentials exist, and approval rules can be met by its users. At
// start and on every reload (SIGHUP).
func loadCatalog(cfg *Config) (*registry.Registry, *policy.Engine, []error) {
	var errs []error
	creds := map[string]registry.CredentialInfo{}
	for n, s := range cfg.Credentials {
		creds[n] = registry.CredentialInfo{Scopes: s.Scopes}
	}
	reg, err := registry.Load(cfg.rel(cfg.Tasks), creds)
	if err != nil {
		errs = append(errs, err)
	}
	var names []string
	if reg != nil {
		for _, t := range reg.Tasks() {
			names = append(names, t.Name)
		}
	}
	srcs, err := policy.LoadDir(cfg.rel(cfg.Policies))
	if err != nil {
		errs = append(errs, err)
	}
	eng, err := policy.New(srcs, names)
	if err != nil {
		errs = append(errs, err)
	}
	groups := map[string]int{}
	for _, u := range cfg.Users {
		for _, g := range u.Groups {
			groups[g]++
		}
	}
	// Approval rules must be satisfiable by the configured users.
	if eng != nil {
		for _, r := range eng.Rules() {
			if groups[r.Group] == 0 {
				errs = append(errs, fmt.Errorf("%s: approval rule %s names group %q, which has no users", r.File, r.ID, r.Group))
			} else if groups[r.Group] < r.Quorum {
				errs = append(errs, fmt.Errorf("%s: approval rule %s needs %d approvers from %q, which has only %d users", r.File, r.ID, r.Quorum, r.Group, groups[r.Group]))
			}
		}
	}
	if reg != nil {
		for _, t := range reg.Tasks() {
			for _, g := range t.Approvers {
				if groups[g] == 0 {
					errs = append(errs, fmt.Errorf("%s: approvers: group %q has no users", t.Path, g))
				}
			}
		}
	}
	return reg, eng, errs
}

// wireSecrets connects store: and vault: references, when configured.
func (l *loaded) wireSecrets(store credential.SecretStore) error {
	if l.cfg.Secrets.Key != "" && store != nil {
		raw, err := l.resolver.Resolve(l.cfg.Secrets.Key)
		if err != nil {
			return fmt.Errorf("secrets.key: %w", err)
		}
		key, err := credential.ParseSecretsKey(raw)
		if err != nil {
			return fmt.Errorf("secrets.key: %w", err)
		}
		if l.resolver.Secrets, err = credential.NewSecretBox(store, key, nil); err != nil {
			return err
		}
	}
	if l.cfg.Vault.Addr != "" {
		tok, err := l.resolver.Resolve(l.cfg.Vault.Token)
		if err != nil {
			return fmt.Errorf("vault.token: %w", err)
		}
		if l.resolver.Vault, err = credential.NewVaultKV(l.cfg.Vault.Addr, tok, l.cfg.Vault.Mount, l.cfg.vaultTimeout()); err != nil {
			return err
		}
	}
	return nil
}

// keyring authenticates bearer keys against stored SHA-256 hashes, in
// constant time over every key. The keys are read again on reload
// (SIGHUP), so a key kept in a file or the secret store rotates without a
// restart.
type keyring struct {
	resolver *credential.Resolver
	entries  atomic.Pointer[[]keyEntry]
}

type keyEntry struct {
	hash [32]byte
	p    agentg8.Principal
}

func newKeyring(l *loaded) (*keyring, error) {
	k := &keyring{resolver: l.resolver}
	entries, err := k.read(l.cfg)
	if err != nil {
		return nil, err
	}
	k.entries.Store(&entries)
	return k, nil
}

// read resolves the key of every agent and user cfg configures.
func (k *keyring) read(cfg *Config) ([]keyEntry, error) {
	var entries []keyEntry
	for _, a := range cfg.Agents {
		v, err := k.resolver.Resolve(a.Key)
		if err != nil {
			return nil, fmt.Errorf("agent %s key: %w", a.ID, err)
		}
		entries = append(entries, keyEntry{hash: sha256.Sum256([]byte(v)),
			p: agentg8.Principal{Kind: agentg8.KindAgent, ID: a.ID, Groups: a.Groups, ActFor: a.ActFor}})
	}
	for _, u := range cfg.Users {
		if u.Key == "" {
			continue
		}
		v, err := k.resolver.Resolve(u.Key)
		if err != nil {
			return nil, fmt.Errorf("user %s key: %w", u.ID, err)
		}
		entries = append(entries, keyEntry{hash: sha256.Sum256([]byte(v)),
			p: agentg8.Principal{Kind: agentg8.KindUser, ID: u.ID, Groups: u.Groups}})
	}
	return entries, nil
}

// User returns the user with this ID, if they have a key.
func (k *keyring) User(id string) (agentg8.Principal, bool) {
	for _, e := range *k.entries.Load() {
		if e.p.Kind == agentg8.KindUser && e.p.ID == id {
			return e.p, true
		}
	}
	return agentg8.Principal{}, false
}

// changedUsers lists the users whose key is gone or differs in next.
func changedUsers(prev, next []keyEntry) []string {
	now := map[string][32]byte{}
	for _, e := range next {
		if e.p.Kind == agentg8.KindUser {
			now[e.p.ID] = e.hash
		}
	}
	var out []string
	for _, e := range prev {
		if h, ok := now[e.p.ID]; e.p.Kind == agentg8.KindUser && (!ok || h != e.hash) {
			out = append(out, e.p.ID)
		}
	}
	return out
}

func (k *keyring) Authenticate(token string) (agentg8.Principal, bool) {
	h := sha256.Sum256([]byte(token))
	var found agentg8.Principal
	ok := 0
	for _, e := range *k.entries.Load() {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found = e.p
			ok = 1
		}
	}
	return found, ok == 1
}

// observer exports pipeline metrics to Prometheus.
type observer struct {
	notify   *prometheus.CounterVec
	actions  *prometheus.CounterVec
	decision prometheus.Histogram
	upstream *prometheus.HistogramVec
	audit    prometheus.Histogram
	batch    prometheus.Histogram
	seals    *prometheus.CounterVec
	sealed   prometheus.Counter
	mcp      *prometheus.CounterVec
	catalog  *prometheus.GaugeVec
}

// Catalog shows digest as the catalog in force.
func (o *observer) Catalog(digest string) {
	o.catalog.Reset()
	o.catalog.WithLabelValues(digest).Set(1)
}

func newObserver(reg *prometheus.Registry) *observer {
	o := &observer{
		notify:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentg8_notifications_total", Help: "Approval notification deliveries by channel and result."}, []string{"channel", "result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentg8_actions_total", Help: "Actions by task and the status they reached."}, []string{"task", "status"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentg8_decision_seconds", Help: "Policy decision latency.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10)}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentg8_upstream_seconds", Help: "Upstream call latency by task.",
			Buckets: prometheus.DefBuckets}, []string{"task"}),
		audit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentg8_audit_append_seconds", Help: "Audit batch commit latency.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 14)}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentg8_audit_batch_events", Help: "Audit events per committed batch (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
	o.mcp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentg8_mcp_requests_total",
		Help: "Authenticated MCP requests by path: fast (plain tools/call served directly) or sdk."}, []string{"path"})
	o.seals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentg8_audit_seals_total",
		Help: "Audit seal attempts on PostgreSQL by result: sealed, idle, busy (another replica sealing, or sealed under 10 ms ago) or error."}, []string{"result"})
	o.sealed = prometheus.NewCounter(prometheus.CounterOpts{Name: "agentg8_audit_sealed_records_total", Help: "Audit records this replica sealed (PostgreSQL)."})
	o.catalog = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentg8_catalog_info",
		Help: "1, labelled with the digest of the tasks, policies and config this replica decides with: replicas with different digests decide differently."}, []string{"digest"})
	reg.MustRegister(o.notify, o.actions, o.decision, o.upstream, o.audit, o.batch, o.seals, o.sealed, o.mcp, o.catalog)
	return o
}

func (o *observer) Decision(d time.Duration) { o.decision.Observe(d.Seconds()) }
func (o *observer) Upstream(task string, d time.Duration) {
	o.upstream.WithLabelValues(task).Observe(d.Seconds())
}
func (o *observer) Action(task string, s agentg8.State) {
	o.actions.WithLabelValues(task, string(s)).Inc()
}

// pgSessions keeps console sign-ins in PostgreSQL, shared by replicas.
type pgSessions struct{ s *postgres.Store }

func (p pgSessions) PutSession(ctx context.Context, token string, s console.Session, now time.Time) error {
	return p.s.PutSession(ctx, token, postgres.Session(s), now)
}

func (p pgSessions) GetSession(ctx context.Context, token string) (*console.Session, error) {
	s, err := p.s.GetSession(ctx, token)
	if s == nil || err != nil {
		return nil, err
	}
	cs := console.Session(*s)
	return &cs, nil
}

func (p pgSessions) DeleteSession(ctx context.Context, token string) error {
	return p.s.DeleteSession(ctx, token)
}

func (p pgSessions) DeleteUserSessions(ctx context.Context, userID string) error {
	return p.s.DeleteUserSessions(ctx, userID)
}

// server is a running gateway.
type server struct {
	// What a reload needs to build credentials as start-up did, and the
	// request headers the API reads users' tokens from (fixed at start).
	resolver       *credential.Resolver
	credOpts       credential.Options
	subjectHeaders []string
	keys           *keyring
	sessions       console.Sessions
	notifier       *notify.Notifier
	agentList      *atomic.Pointer[[]agentg8.Principal] // the console's
	lookupEnv      func(string) (string, bool)
	pg             *postgres.Store // nil on SQLite
	store          storage
	log            *audit.Log
	service        *action.Service
	mcp            *mcpserver.Endpoint
	cfg            *Config
	tokenKeysTouch time.Duration // how often to mark the token keys (PostgreSQL)
	obs            *observer
	logger         *slog.Logger
	http           *http.Server
	ln             net.Listener
}

// storage is everything the gateway needs from a store; both adapters pass
// the same conformance suite.
type storage interface {
	action.Store
	audit.Store
	audit.Reader
	credential.SecretStore
	AuditSize(ctx context.Context) (int64, error)
	AuditRecordsForAction(ctx context.Context, actionID string, after int64, limit int) ([]audit.Record, error)
	Ping(ctx context.Context) error
	Close() error
}

// checkConnection refuses a PostgreSQL role that lacks a privilege serve
// needs, and warns of a connection that does not verify the server and of
// a role no grant binds (it could rewrite the audit log).
func checkConnection(ctx context.Context, pg *postgres.Store, url string, logger *slog.Logger) error {
	if w, _ := postgres.CheckTransport(url, os.Getenv); w != "" {
		logger.Warn("the store's connection is not verified", "detail", w)
	}
	missing, err := pg.MissingPrivileges(ctx)
	if err != nil {
		return fmt.Errorf("postgres: checking the role's privileges: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("postgres: this database user lacks %s, which serve needs: run `agentg8 migrate --store <the owner's URL> --grant <this user>` (again after an upgrade)", strings.Join(missing, ", "))
	}
	why, err := pg.Unbounded(ctx)
	if err != nil {
		return fmt.Errorf("postgres: checking the role's privileges: %w", err)
	}
	if why != "" {
		logger.Warn(why+": it could change or delete audit records, which audit verify would then only detect; run replicas as a role given `agentg8 migrate --grant ROLE`", "see", "docs/deployment.md")
	}
	return nil
}

// sameAuditKey refuses a signing key that did not sign the log's latest
// checkpoint: a replica that created its own key (its key file was not
// copied), or a restart with a lost key, would add checkpoints no single
// verifier key checks, which audit verify reports as tampering.
func sameAuditKey(ctx context.Context, st audit.Store, key *audit.Key, path string) error {
	cp, err := st.LatestAuditCheckpoint(ctx)
	if err != nil {
		return fmt.Errorf("read the audit log's latest checkpoint: %w", err)
	}
	if cp == nil {
		return nil
	}
	if _, err := audit.ParseCheckpoint(cp, key.VerifierKey); err != nil {
		return fmt.Errorf("the audit log was signed with another key than %s (audit.signing_key): every replica and every restart must use the key the log began with; restore that key file (%v)", path, err)
	}
	return nil
}

// sameTokenKeys refuses a replica whose token-signing keys share none with
// those of the replicas running now (each marks its keys every
// minute; keys unmarked for three do not count): it
// created its own key file (the file was not copied), and the tokens it
// mints would fail against the JWKS the others serve. A rotation (agentg8
// keys rotate) keeps the previous key, so a rotated key file still shares
// one; a cluster stopped whole can start again on new keys.
func sameTokenKeys(ctx context.Context, pg *postgres.Store, ks *credential.KeySet, path string, fresh time.Duration) error {
	kids := ks.KeyIDs()
	others, ok, err := pg.RegisterTokenKeys(ctx, kids, fresh)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the token keys in %s (tokens.keys; kid %s) share none with those the running replicas use (kid %s): every replica must use the same key file; copy it from a running replica (a rotation keeps only the previous key: after two rotations, stop every replica before starting them again)",
			path, strings.Join(kids, ", "), strings.Join(others, ", "))
	}
	return nil
}

// defaultTokenKeysTouch is how often a replica marks its token keys as in
// use; unmarked for three times that, keys no longer count as some
// running replica's.
const defaultTokenKeysTouch = time.Minute

// readyTimeout bounds /readyz's check of the store.
const readyTimeout = 2 * time.Second

// tokenKeysTimes returns how often this replica marks its token keys, and
// how long marks last.
func (c *Config) tokenKeysTimes() (touch, fresh time.Duration) {
	touch = cmp.Or(c.tokenKeysTouch, defaultTokenKeysTouch)
	return touch, 3 * touch
}

// touchTokenKeys marks this replica's token keys as in use, every
// s.tokenKeysTouch, until ctx ends.
func (s *server) touchTokenKeys(ctx context.Context) {
	every(ctx, s.tokenKeysTouch, func() {
		if err := s.pg.TouchTokenKeys(ctx, s.credOpts.Keys.KeyIDs()); err != nil && ctx.Err() == nil {
			s.logger.Warn("mark token keys in use", "err", err)
		}
	})
}

// every runs fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// openStore opens the configured store.
func openStore(ctx context.Context, cfg *Config) (storage, error) {
	kind, rest, err := store.Kind(cfg.storeURL())
	if err != nil {
		return nil, err
	}
	if kind == "postgres" {
		return postgres.Open(ctx, rest)
	}
	return sqlite.Open(ctx, rest)
}

func startServer(ctx context.Context, cfg *Config, lookupEnv func(string) (string, bool), logger *slog.Logger, clock agentg8.Clock) (*server, error) {
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*server, error) { st.Close(); return nil, err }
	if lite, ok := st.(*sqlite.Store); ok {
		if err := lite.Own(); err != nil {
			return fail(err)
		}
	}
	pg, multi := st.(*postgres.Store)
	if multi {
		// Replicas decide expiry and leases by the database's clock.
		clock = pg.Clock(clock)
		if err := checkConnection(ctx, pg, cfg.Store, logger); err != nil {
			return fail(err)
		}
	}
	l, err := load(cfg, lookupEnv, true, st)
	if err != nil {
		return fail(err)
	}
	keys, err := newKeyring(l)
	if err != nil {
		return fail(err)
	}
	key, err := audit.LoadOrCreateKey(cfg.signingKeyPath())
	if err != nil {
		return fail(err)
	}
	if err := sameAuditKey(ctx, st, key, cfg.signingKeyPath()); err != nil {
		return fail(err)
	}
	tokenKeys, err := credential.LoadOrCreateKeySet(cfg.tokenKeysPath(), cfg.Tokens.Algorithm)
	if err != nil {
		return fail(err)
	}
	touchEvery, fresh := cfg.tokenKeysTimes()
	if multi {
		if err := sameTokenKeys(ctx, pg, tokenKeys, cfg.tokenKeysPath(), fresh); err != nil {
			return fail(err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(err)
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	issuer := cfg.Tokens.Issuer
	if issuer == "" {
		issuer = publicURL
	}
	credOpts := credential.Options{HMACKey: key.HMACKey(), Keys: tokenKeys, Issuer: issuer, Now: clock.Now}
	creds, err := credential.NewSet(cfg.Credentials, l.resolver, credOpts)
	if err != nil {
		ln.Close()
		return fail(err)
	}
	preg := prometheus.NewRegistry()
	preg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	obs := newObserver(preg)
	if multi {
		preg.MustRegister(newPoolCollector(pg.PoolStat))
	}
	alog := audit.Open(st, key, audit.Options{Clock: clock, Logger: logger, Observe: func(d time.Duration, n int) {
		obs.audit.Observe(d.Seconds())
		obs.batch.Observe(float64(n))
	}, ObserveSeal: func(result string, n int) {
		obs.seals.WithLabelValues(result).Inc()
		obs.sealed.Add(float64(n))
	}})
	for _, w := range cfg.notifyWarnings() {
		logger.Warn("a notification channel is not encrypted", "detail", w)
	}
	for _, w := range cfg.credentialWarnings(l.registry.Tasks()) {
		logger.Warn("a credential would be sent unencrypted", "detail", w)
	}
	notifier := notify.New(channelsOf(cfg), emailsOf(cfg), key.HMACKey(), l.resolver.Resolve)
	var limiter action.Limiter // per process on SQLite, shared on PostgreSQL
	if multi {
		limiter = pg
	}
	upstream := httpconn.New(cfg.Egress.AllowPrivate)
	svc := action.New(action.Config{
		Registry: l.registry, Policy: l.policy, Credentials: creds, Connector: upstream, Tools: mcpconn.New(upstream.Client(), version),
		Audit: alog, Store: st, Users: l.users, Agents: l.agents, Rules: rulesOf(cfg),
		SingleNode: !multi, LeaseTTL: cfg.leaseTTL(), Limiter: limiter, Notifier: notifier, PublicURL: publicURL,
		Clock: clock, Logger: logger, Observer: obs,
	})
	preg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentg8_unsettled_executions",
		Help: "Executions whose outcome (or that they were never sent) this replica knows but the store has not recorded yet; stopping the replica now leaves them outcome_unknown."},
		func() float64 { return float64(svc.Unsettled()) }))
	if n, err := svc.Recover(ctx); err != nil {
		alog.Close()
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("recover interrupted actions: %w", err)
	} else if n > 0 {
		logger.Warn("actions interrupted by a previous stop are now outcome_unknown", "count", n)
	}
	api := httpapi.New(httpapi.Config{
		Actions: svc, Auth: keys, Audit: st, Logger: logger, MaxBody: cfg.Limits.MaxBodyBytes,
		Metrics: promhttp.HandlerFor(preg, promhttp.HandlerOpts{}),
		Ready: func(ctx context.Context) error {
			// A database that does not answer (a partition) is not ready:
			// the check must not hang until the load balancer gives up.
			ctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			if err := st.Ping(ctx); err != nil {
				return err
			}
			return alog.Health()
		},
		SubjectHeaders: creds.SubjectHeaders(),
		JWKS:           func() any { return tokenKeys.JWKS() },
	})
	agentList := &atomic.Pointer[[]agentg8.Principal]{}
	agents := agentsOf(cfg)
	agentList.Store(&agents)
	sessions := console.NewMemorySessions() // SQLite: this process's memory
	if multi {
		sessions = pgSessions{pg}
	}
	con, err := console.New(console.Config{Actions: svc, Audit: st, Auth: keys, Catalog: catalog{svc},
		Agents: func() []agentg8.Principal { return *agentList.Load() }, VerifierKey: key.VerifierKey, Logger: logger, Now: clock.Now, Sessions: sessions,
		SecureCookies: strings.HasPrefix(cfg.PublicURL, "https://")})
	if err != nil {
		alog.Close()
		ln.Close()
		st.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", con)
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	mcpEP := mcpserver.New(mcpserver.Config{Actions: svc, Auth: keys, Version: version, Logger: logger,
		Observe: func(fast bool) {
			path := "sdk"
			if fast {
				path = "fast"
			}
			obs.mcp.WithLabelValues(path).Inc()
		}})
	mux.Handle("/mcp", mcpEP)
	preg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentg8_mcp_streams",
		Help: "Open MCP streams (subscriptions/listen and GET /mcp) on which agents are told of tool list changes."},
		func() float64 { return float64(mcpEP.Streams()) }))
	mux.Handle("/", api)
	s := &server{resolver: l.resolver, credOpts: credOpts, subjectHeaders: creds.SubjectHeaders(), keys: keys, sessions: sessions, notifier: notifier, agentList: agentList, lookupEnv: lookupEnv, store: st, log: alog, service: svc, mcp: mcpEP, cfg: cfg, logger: logger, tokenKeysTouch: touchEvery, obs: obs, ln: ln, pg: pg, http: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}}
	// Agents' GET /mcp streams last until they hang up: end them when
	// shutting down, or Shutdown would wait its whole grace for them.
	s.http.RegisterOnShutdown(mcpEP.Close)
	digest := catalogDigest(cfg, l.registry, l.policy)
	obs.Catalog(digest)
	logger.Info("agentg8 listening", "addr", ln.Addr().String(), "tasks", len(l.registry.Tasks()), "policies", l.policy.Count(), "catalog", digest)
	return s, nil
}

// serve blocks until ctx ends, then shuts down gracefully.
func (s *server) serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	workerDone := make(chan struct{})
	go func() { s.service.Run(workerCtx); close(workerDone) }()
	if s.pg != nil {
		// Changes made by other replicas wake this one's pollers and worker.
		go s.pg.Listen(workerCtx, s.service.Changed)
		go s.touchTokenKeys(workerCtx)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var err error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err = <-errc:
			break wait
		case <-hup:
			s.reload(ctx)
		}
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if serr := s.http.Shutdown(shCtx); serr != nil && err == nil {
		err = serr
	}
	stopWorker()
	<-workerDone
	s.log.Close()
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (o *observer) Notification(channel string, ok bool) {
	res := "ok"
	if !ok {
		res = "error"
	}
	o.notify.WithLabelValues(channel, res).Inc()
}

// catalog answers the console's questions about tasks.
type catalog struct{ svc *action.Service }

func (c catalog) Tasks() []*registry.Task { return c.svc.Catalog().Registry.Tasks() }

func (c catalog) CouldPermit(a agentg8.Principal, task string) bool {
	return c.svc.Catalog().Policy.CouldPermit(a, task)
}

// reload re-reads the config file, tasks and policies, and the agents'
// and users' keys (SIGHUP). It puts in force new tasks and policies,
// credentials, agents and users (who exists, groups, keys, e-mail
// addresses). A config that does not load, a change elsewhere in it (which
// needs a restart), a catalog that does not check against it, a key or a
// credential's secret that cannot be read, or a change that cannot be
// audited changes nothing.
func (s *server) reload(ctx context.Context) {
	cfg, err := LoadConfig(s.cfg.path, s.lookupEnv)
	if err != nil {
		s.logger.Error("reload refused; nothing changed", "err", err)
		return
	}
	if fields := restartOnly(s.cfg, cfg); len(fields) > 0 {
		s.logger.Error("reload refused; nothing changed: these settings change with a restart", "fields", strings.Join(fields, ", "))
		return
	}
	reg, eng, errs := loadCatalog(cfg)
	keys, err := s.keys.read(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	creds, err := s.credentials(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, notifySecrets(cfg, s.resolver)...)
	if len(errs) > 0 {
		s.logger.Error("reload refused; nothing changed", "err", errors.Join(errs...))
		return
	}
	changed := map[bool]string{true: " (changed)"}
	rules := rulesOf(cfg)
	rulesChanged := !reflect.DeepEqual(rules, rulesOf(s.cfg))
	notifyChanged := !reflect.DeepEqual(cfg.Notify, s.cfg.Notify)
	digest := catalogDigest(cfg, reg, eng)
	ev := &agentg8.AuditEvent{Type: agentg8.EventCatalogReloaded, Detail: fmt.Sprintf("%d tasks, %d policies, %d credentials%s, %d agents, %d users, %d keys, %d notification channels%s, auditors, resolvers and limits%s; catalog %s",
		len(reg.Tasks()), eng.Count(), len(cfg.Credentials), changed[creds != nil], len(cfg.Agents), len(cfg.Users), len(keys),
		len(cfg.Notify), changed[notifyChanged], changed[rulesChanged], digest)}
	if err := s.log.Append(ctx, ev); err != nil {
		s.logger.Error("reload refused: the audit log cannot be written; nothing changed", "err", err)
		return
	}
	s.service.SetPeople(peopleOf(cfg))
	s.service.SetRules(rules)
	cat := &action.Catalog{Registry: reg, Policy: eng}
	if creds != nil {
		cat.Credentials = creds
	}
	s.service.Reload(cat)
	prev := *s.keys.entries.Load()
	s.keys.entries.Store(&keys)
	// A user whose key changed (rotated after a leak, say) is signed out of
	// the console everywhere: a session opened with the old key must not
	// outlive it.
	for _, id := range changedUsers(prev, keys) {
		if err := s.sessions.DeleteUserSessions(ctx, id); err != nil {
			s.logger.Error("console sign-ins of a user whose key changed could not be ended", "user", id, "err", err)
		}
	}
	s.notifier.SetEmails(emailsOf(cfg))
	s.notifier.SetChannels(channelsOf(cfg))
	agents := agentsOf(cfg)
	s.agentList.Store(&agents)
	s.cfg = cfg
	s.mcp.Reset()
	s.obs.Catalog(digest)
	s.logger.Info("reloaded", "catalog", digest, "tasks", len(reg.Tasks()), "policies", eng.Count(), "credentials_changed", creds != nil,
		"agents", len(cfg.Agents), "users", len(cfg.Users), "notify_changed", notifyChanged, "rules_changed", rulesChanged)
}

// credentials builds the reloaded config's credentials as start-up did,
// or returns nil if they are unchanged. Every secret they name must
// resolve now, so a typo refuses the reload instead of failing actions
// later. Users' tokens are read from request headers fixed at start, so a
// change to which headers token exchange reads needs a restart.
func (s *server) credentials(cfg *Config) (*credential.Set, error) {
	if reflect.DeepEqual(s.cfg.Credentials, cfg.Credentials) {
		return nil, nil
	}
	set, err := credential.NewSet(cfg.Credentials, s.resolver, s.credOpts)
	if err == nil {
		err = set.CheckAvailable()
	}
	if err != nil {
		return nil, err
	}
	now, was := slices.Sorted(slices.Values(set.SubjectHeaders())), slices.Sorted(slices.Values(s.subjectHeaders))
	if !slices.Equal(now, was) {
		return nil, fmt.Errorf("credentials: token exchange would read users' tokens from headers %v instead of %v; that changes with a restart", now, was)
	}
	return set, nil
}

// restartOnly names the config settings that differ between old and new
// other than agents, users, credentials, notification channels and
// rulesOf's, which a reload puts in force.
func restartOnly(old, new *Config) []string {
	a, b := *old, *new
	for _, c := range []*Config{&a, &b} {
		c.Agents, c.Users, c.Credentials, c.Notify = nil, nil, nil, nil
		c.Audit.Auditors, c.Execution.Resolvers, c.Approvals, c.Limits.ActionsPerMinute, c.Limits.IdempotencyTTL = nil, nil, ApprovalsConfig{}, 0, ""
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, strings.Split(f.Tag.Get("yaml"), ",")[0])
		}
	}
	return out
}
