// Package action is the pipeline: it takes an agent's proposal through task
// lookup, input validation, policy, approval, credentials and the connector,
// appending to the audit log at every step, and owns the action state
// machine. Execution is at-most-once: an action moves to executing by a
// compare-and-set in the store, and its intent is durable in the audit log
// before any byte goes upstream.
package action

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowebpki/jcs"
	"golang.org/x/time/rate"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/connector/httpconn"
	"github.com/agentg8/agentg8/connector/mcpconn"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/policy"
	"github.com/agentg8/agentg8/registry"
)

// Auditor appends events durably. Commit also applies a *Change in the same
// transaction.
type Auditor interface {
	Append(ctx context.Context, events ...*agentg8.AuditEvent) error
	Commit(ctx context.Context, change any, events ...*agentg8.AuditEvent) error
}

// Credentials apply upstream credentials.
type Credentials interface {
	Apply(ctx context.Context, name string, use *credential.Use) (*credential.Issued, error)
	Mask(name string) (header, query, marker string)
}

// Doer sends upstream calls.
type Doer interface {
	Do(ctx context.Context, c httpconn.Call) (*httpconn.Response, error)
}

// ToolCaller runs MCP tasks' tool calls.
type ToolCaller interface {
	Call(ctx context.Context, c mcpconn.Call) (*mcpconn.Result, error)
}

// noTools refuses every tool call, sending nothing.
type noTools struct{}

func (noTools) Call(context.Context, mcpconn.Call) (*mcpconn.Result, error) {
	return nil, &httpconn.Error{Code: agentg8.CodeUpstreamError, Msg: "this gateway does not run MCP tasks"}
}

// Observer receives metrics.
type Observer interface {
	Decision(d time.Duration)
	Upstream(task string, d time.Duration)
	Action(task string, s agentg8.State)
	Notification(channel string, ok bool)
}

type nopObserver struct{}

func (nopObserver) Decision(time.Duration)         {}
func (nopObserver) Upstream(string, time.Duration) {}
func (nopObserver) Action(string, agentg8.State)   {}
func (nopObserver) Notification(string, bool)      {}

// Notifier delivers approval notices to configured channels.
type Notifier interface {
	// Channels keys the configured channels, in config order; a key
	// changes with its channel's definition.
	Channels() []string
	Name(channel string) string
	// Send delivers a notice; delivery identifies it, the same on every
	// attempt (receivers drop repeats).
	Send(ctx context.Context, channel, delivery string, n *agentg8.ApprovalNotice) error
}

// Config wires a Service.
type Config struct {
	Registry    *registry.Registry
	Policy      *policy.Engine
	Credentials Credentials
	Connector   Doer
	// Tools runs tasks that execute as an upstream MCP server's tool;
	// nil refuses them (nothing is sent).
	Tools ToolCaller
	Audit Auditor
	Store Store
	Users map[string]agentg8.User
	// Agents are the configured agents, for re-evaluating policy at execution.
	Agents map[string]agentg8.Principal
	// Rules are who may read the audit log and settle actions, and the
	// limits on agents; SetRules changes them.
	Rules Rules
	// Notifier tells approvers; nil sends nothing.
	Notifier Notifier
	// PublicURL is where people reach this gateway (links in notices).
	PublicURL string
	// WorkerInterval is how often the worker looks for expiries, approved
	// actions, expired execution leases and due notifications (default 1s).
	WorkerInterval time.Duration
	// Replica names this process as an execution lease owner.
	Replica string
	// LeaseTTL is how long an execution lease lasts without renewal
	// (default 30s); it is renewed every third of that while the upstream
	// call runs.
	LeaseTTL time.Duration
	// SingleNode says no other process shares the store (SQLite): at start,
	// every action left executing is outcome_unknown at once.
	SingleNode bool
	// Limiter, if set, keeps the limit's buckets where every replica
	// shares them (the database); otherwise they are this process's.
	Limiter  Limiter
	Clock    agentg8.Clock
	NewID    func(prefix string) string
	Logger   *slog.Logger
	Observer Observer
}

// Rules are the settings besides the catalog and the people that a reload
// may change: who may read everything and settle outcome_unknown actions,
// and the limits on agents. Zero values take the defaults.
type Rules struct {
	// AuditorGroups may read every action and the audit log (default
	// "auditors").
	AuditorGroups []string
	// ResolverGroups may settle outcome_unknown actions (none: nobody).
	ResolverGroups []string
	// ApprovalTTL is how long a new approval request waits (default 24h).
	ApprovalTTL time.Duration
	// MaxPending bounds each agent's pending approvals (default 20).
	MaxPending int
	// RatePerMinute bounds each agent's proposals (dry runs included) per
	// minute, with bursts up to the same number; 0 is no limit.
	RatePerMinute int
	// IdempotencyTTL is how long an idempotency key's answer is kept
	// (default 24h); a retry after that proposes again.
	IdempotencyTTL time.Duration
}

func (r Rules) withDefaults() *Rules {
	if r.ApprovalTTL == 0 {
		r.ApprovalTTL = 24 * time.Hour
	}
	if len(r.AuditorGroups) == 0 {
		r.AuditorGroups = []string{"auditors"}
	}
	if r.MaxPending == 0 {
		r.MaxPending = 20
	}
	if r.IdempotencyTTL == 0 {
		r.IdempotencyTTL = 24 * time.Hour
	}
	return &r
}

// Limiter is a rate limit shared by replicas.
type Limiter interface {
	// TakeToken takes one token from key's bucket (perMinute tokens, refilled
	// at perMinute a minute); false when it is empty.
	TakeToken(ctx context.Context, key string, perMinute int) (bool, error)
}

// Catalog is the tasks, policies and credentials in force; Reload swaps
// it as one, so a task and the credential it names come from one config.
type Catalog struct {
	Registry    *registry.Registry
	Policy      *policy.Engine
	Credentials Credentials
}

// Service runs proposals. Safe for concurrent use.
type Service struct {
	c       Config
	cat     atomic.Pointer[Catalog]
	people  atomic.Pointer[People]
	rules   atomic.Pointer[Rules]
	mu      sync.Mutex
	waiters map[string][]chan struct{}
	kick    chan struct{}
	running map[string]bool // approved actions this process is executing
	// unsettled are executions the store did not confirm, by action ID,
	// which the worker records once it can (settle.go).
	unsettled map[string]*unsettled
	attempts  atomic.Uint64 // execution attempts, naming their leases
	// unreachable is when the worker's sweep last failed to read the
	// store (the sweep's own: no lock).
	unreachable time.Time
	// pruned is when the sweep last pruned idempotency records (the
	// sweep's own, on the service's clock).
	pruned time.Time
	limits map[string]*rate.Limiter
	wg     sync.WaitGroup
	// delivering is set while notifications are being sent, apart from
	// the sweep (a channel that hangs must not hold up expiry, approved
	// executions or lease take-over).
	delivering atomic.Bool
}

// New returns a service.
func New(c Config) *Service {
	if c.Clock == nil {
		c.Clock = agentg8.SystemClock{}
	}
	if c.NewID == nil {
		c.NewID = NewID
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Tools == nil {
		c.Tools = noTools{}
	}
	if c.WorkerInterval == 0 {
		c.WorkerInterval = time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.Replica == "" {
		c.Replica = NewID("replica")
	}
	s := &Service{c: c, waiters: map[string][]chan struct{}{}, kick: make(chan struct{}, 1), running: map[string]bool{},
		unsettled: map[string]*unsettled{}, limits: map[string]*rate.Limiter{}}
	s.cat.Store(&Catalog{Registry: c.Registry, Policy: c.Policy, Credentials: c.Credentials})
	s.people.Store(&People{Users: c.Users, Agents: c.Agents})
	s.SetRules(c.Rules)
	return s
}

// SetRules puts new rules in force (a reload) for every later request: a
// group removed from the auditors or resolvers loses its access at once,
// and a new rate limit applies to each agent's next proposal (keeping the
// tokens its bucket holds, up to the new size). Approval requests already
// made keep their expiry.
func (s *Service) SetRules(r Rules) { s.rules.Store(r.withDefaults()) }

// People are the configured users and agents.
type People struct {
	Users  map[string]agentg8.User
	Agents map[string]agentg8.Principal
}

// SetPeople puts new users and agents in force (a reload): later
// proposals, approval checks and executions use them; an approved action
// whose agent is gone, or may no longer act for its user, is denied when it
// would run.
func (s *Service) SetPeople(p *People) { s.people.Store(p) }

func (s *Service) users() map[string]agentg8.User       { return s.people.Load().Users }
func (s *Service) agents() map[string]agentg8.Principal { return s.people.Load().Agents }

// Catalog returns the tasks, policies and credentials in force.
func (s *Service) Catalog() *Catalog { return s.cat.Load() }

// Reload puts new tasks and policies, and new credentials unless
// c.Credentials is nil, in force for every later proposal, approval
// decision and execution (one already sending keeps what it was given).
// Actions already approved run only if their task definition is unchanged
// (else approval_void) and the new policy still allows them.
func (s *Service) Reload(c *Catalog) {
	if c.Credentials == nil { // unchanged
		cc := *c
		cc.Credentials = s.Catalog().Credentials
		c = &cc
	}
	s.cat.Store(c)
	s.wake()
}

// NewID returns prefix_ followed by 128 bits in lower-case base32hex (whose
// alphabet keeps byte order, unlike standard base32): a 48-bit
// millisecond timestamp, then 80 random bits. IDs made later sort later,
// so the stores' indexes on them grow at one end instead of touching a
// random page per new action; 80 random bits keep them unguessable and
// unique (reading an action still needs the right principal).
func NewID(prefix string) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic(err)
	}
	return prefix + "_" + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Proposal is an agent's request to run a task.
type Proposal struct {
	Task           string
	Input          json.RawMessage
	DryRun         bool
	OnBehalfOf     string
	Reason         string
	IdempotencyKey string
	// ToolHash identifies the tool definition the model saw (MCP calls).
	ToolHash string
	// SubjectTokens are user tokens the calling app passed for token
	// exchange (header → token). They are used for this execution only:
	// never stored, logged or audited.
	SubjectTokens map[string]string

	// actionID is the ID an idempotency claim gave the action; "" for a
	// new one.
	actionID string
}

// claimAbandoned is how long an unanswered idempotency claim is taken to
// be in progress. After it, a retry answers with the action the claim
// created, or — none having been created, so nothing ran — proposes again
// under the claim's action ID, which a late first attempt cannot also
// create. (The first attempt died between its claim and its answer: a
// crash, or the store lost before it could record either.)
const claimAbandoned = time.Minute

// releasedAge is how far back a claim given up for a retry is dated: far
// enough past claimAbandoned that every replica, whatever its clock, takes
// it for abandoned at once.
const releasedAge = time.Hour

// stored is an idempotent answer.
type stored struct {
	Action *agentg8.Action `json:"action,omitempty"`
	Error  *agentg8.Error  `json:"error,omitempty"`
}

// errAudit is returned whenever the audit log cannot be written. It is never
// modified.
var errAudit = &agentg8.Error{Code: agentg8.CodeAuditUnavailable, Message: "the audit log cannot be written; nothing was executed"}

// unavailable passes nil, the store's own answers (ErrNotFound and the
// other sentinels) and *agentg8.Error through; any other failure of op (a
// read of a store that cannot be reached, say) is logged and answered with
// agentg8.ErrStoreUnavailable, a 503 rather than an internal error.
func (s *Service) unavailable(op string, err error) error {
	var ae *agentg8.Error
	if err == nil || errors.As(err, &ae) || errors.Is(err, ErrNotFound) || refusal(err) {
		return err
	}
	return agentg8.StoreFailed(s.c.Logger, op, err)
}

// Propose runs a proposal through the pipeline. It returns the action
// (succeeded, failed, denied, dry_run or pending_approval) and, for every
// outcome but success, dry run and pending approval, an *agentg8.Error. The
// action may be non-nil alongside an error (denied, failed).
func (s *Service) Propose(ctx context.Context, p agentg8.Principal, prop Proposal) (*agentg8.Action, error) {
	if p.Kind != agentg8.KindAgent {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "only agents propose actions")
	}
	if ok, err := s.allow(ctx, p.ID); err != nil {
		// Fail closed: an unchecked limit is no limit.
		s.c.Logger.Error("rate limit unavailable", "agent", p.ID, "err", err)
		return nil, errLimiter
	} else if !ok {
		return nil, agentg8.Errorf(agentg8.CodeRateLimited, "agent %s proposes more than %d actions per minute; slow down", p.ID, s.rules.Load().RatePerMinute)
	}
	if prop.IdempotencyKey == "" {
		return s.propose(ctx, p, prop)
	}
	if len(prop.IdempotencyKey) > 255 {
		return nil, agentg8.Errorf(agentg8.CodeInvalidInput, "the idempotency key is longer than 255 characters")
	}
	hash, err := payloadHash(prop)
	if err != nil {
		return nil, &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "input is not acceptable JSON"}
	}
	prop.actionID = s.c.NewID("act")
	prev, err := s.c.Store.ClaimIdempotency(ctx, IdempotencyRecord{Agent: p.ID, Key: prop.IdempotencyKey, PayloadHash: hash, ActionID: prop.actionID, CreatedAt: s.c.Clock.Now()})
	if err != nil {
		return nil, s.unavailable("claim idempotency key", err)
	}
	if prev != nil && prev.PayloadHash == hash && prev.Result == nil && prev.ActionID != "" && s.c.Clock.Now().Sub(prev.CreatedAt) >= claimAbandoned {
		a, err := s.c.Store.GetAction(ctx, prev.ActionID)
		if err == nil {
			return s.answerAbandoned(ctx, p, prop.IdempotencyKey, a)
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, s.unavailable("read an action", err)
		}
		s.c.Logger.Warn("idempotency claim abandoned before it created its action; proposing again under it", "agent", p.ID, "action_id", prev.ActionID)
		prop.actionID, prev = prev.ActionID, nil
	}
	if prev != nil {
		switch {
		case prev.PayloadHash != hash:
			return nil, agentg8.Errorf(agentg8.CodeIdempotencyKeyReused, "this idempotency key was used with a different request")
		case prev.Result == nil:
			return nil, agentg8.Errorf(agentg8.CodeIdempotencyInProgress, "a request with this idempotency key is still in progress")
		}
		var st stored
		if err := json.Unmarshal(prev.Result, &st); err != nil {
			return nil, fmt.Errorf("decode idempotent result: %w", err)
		}
		if st.Error != nil {
			return st.Action, st.Error
		}
		return st.Action, nil
	}
	a, perr := s.propose(ctx, p, prop)
	if errors.Is(perr, ErrActionExists) {
		// Another request under this key took the claim over (this one
		// was slow enough to be taken for dead) and created the action
		// first: answer with that action, as the other request does.
		a, err := s.c.Store.GetAction(ctx, prop.actionID)
		if err != nil {
			return nil, s.unavailable("read an action", err)
		}
		return s.answerAbandoned(ctx, p, prop.IdempotencyKey, a)
	}
	var ae *agentg8.Error
	isErr := errors.As(perr, &ae)
	// A request that ends without a final answer (the store failed, or
	// "try again later") leaves the key to a retry, which keeps the
	// claim's action ID: it answers with the action if one was created —
	// one whose outcome could not be recorded must not run again — and
	// proposes again under that ID otherwise.
	transient := perr != nil && (!isErr || ae.Code == agentg8.CodeAuditUnavailable ||
		ae.Code == agentg8.CodeInternal || ae.Code == agentg8.CodeRateLimited || ae.Code == agentg8.CodeTooManyPending)
	bg := context.WithoutCancel(ctx)
	if transient {
		s.release(bg, p.ID, prop.IdempotencyKey)
		return a, perr
	}
	st := stored{Action: a}
	if perr != nil {
		st.Error = ae
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = s.c.Store.CompleteIdempotency(bg, p.ID, prop.IdempotencyKey, b, s.c.Clock.Now())
	}
	if err != nil {
		s.c.Logger.Error("store idempotent result", "err", err)
	}
	return a, perr
}

// release gives up a claim for a retry. A failure here would hold every
// retry under the key at 409 for claimAbandoned, and the failure that got
// us here (a lost connection) often leaves other pooled connections dead
// too, each failing once: so a few tries, within a few seconds.
func (s *Service) release(ctx context.Context, agent, key string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	for try := 0; try < 5 && ctx.Err() == nil; try++ {
		if err = s.c.Store.ReleaseIdempotency(ctx, agent, key, s.c.Clock.Now().Add(-releasedAge)); err == nil {
			return
		}
	}
	s.c.Logger.Error("release idempotency key; retries wait until the claim counts as abandoned", "agent", agent, "err", err)
}

// pruneBatch bounds one delete of expired idempotency records, and
// pruneBatches how many a sweep runs: a backlog (the first start after an
// upgrade) is worked off a minute at a time, in short transactions.
const (
	pruneBatch   = 1000
	pruneBatches = 10
)

// prune deletes idempotency records older than the rules' TTL, once a
// minute from a minute after start (a start has enough to do).
func (s *Service) prune(ctx context.Context) {
	now := s.c.Clock.Now()
	if s.pruned.IsZero() {
		s.pruned = now
	}
	if now.Sub(s.pruned) < time.Minute {
		return
	}
	s.pruned = now
	before := now.Add(-s.rules.Load().IdempotencyTTL)
	total := 0
	for range pruneBatches {
		n, err := s.c.Store.PruneIdempotency(ctx, before, pruneBatch)
		total += n
		if err != nil {
			s.c.Logger.Error("worker: prune idempotency keys", "err", err)
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		s.c.Logger.Info("worker: idempotency keys expired", "deleted", total, "before", before)
	}
}

// answerAbandoned answers a retry whose first attempt created action a and
// then died before answering: with a as it is now, and the error the
// first answer would have carried. It is recorded as the key's answer
// unless a is still executing (later retries then see its outcome).
func (s *Service) answerAbandoned(ctx context.Context, p agentg8.Principal, key string, a *agentg8.Action) (*agentg8.Action, error) {
	var aerr *agentg8.Error
	switch a.Status {
	case agentg8.StateDenied:
		reason := ""
		if a.Decision != nil {
			reason = a.Decision.Reason
		}
		aerr = &agentg8.Error{Code: agentg8.CodePolicyDenied, Message: "policy denied this action: " + reason, ActionID: a.ID}
	case agentg8.StateFailed:
		aerr = a.Error
	}
	if a.Status.Terminal() || a.Status == agentg8.StatePendingApproval {
		st := stored{Action: a, Error: aerr}
		if b, err := json.Marshal(st); err == nil {
			if err := s.c.Store.CompleteIdempotency(context.WithoutCancel(ctx), p.ID, key, b, s.c.Clock.Now()); err != nil {
				s.c.Logger.Error("store idempotent result", "err", err)
			}
		}
	}
	if aerr != nil {
		return a, aerr
	}
	return a, nil
}

func payloadHash(prop Proposal) (string, error) {
	var in bytes.Buffer
	if err := json.Compact(&in, prop.Input); err != nil && len(prop.Input) > 0 {
		return "", err
	}
	b, err := json.Marshal(map[string]any{"task": prop.Task, "input": in.String(), "dry_run": prop.DryRun,
		"on_behalf_of": prop.OnBehalfOf, "reason": prop.Reason})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Service) invalid(ctx context.Context, p agentg8.Principal, prop Proposal, e *agentg8.Error) error {
	ev := &agentg8.AuditEvent{Type: agentg8.EventInvalid, Task: clip(prop.Task, 200), Principal: p.ID,
		OnBehalfOf: clip(prop.OnBehalfOf, 200), Error: e, ToolHash: prop.ToolHash}
	if err := s.c.Audit.Append(ctx, ev); err != nil {
		return errAudit
	}
	return e
}

func (s *Service) propose(ctx context.Context, p agentg8.Principal, prop Proposal) (*agentg8.Action, error) {
	cat := s.Catalog()
	task, ok := cat.Registry.Lookup(prop.Task)
	if !ok {
		return nil, s.invalid(ctx, p, prop, agentg8.Errorf(agentg8.CodeUnknownTask, "no task named %q", clip(prop.Task, 200)))
	}
	if len(prop.Input) == 0 {
		prop.Input = json.RawMessage("{}")
	}
	input, err := task.ValidateInput(prop.Input)
	if err != nil {
		return nil, s.invalid(ctx, p, prop, agentg8.AsError(err))
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, prop.Input) // valid: ParseInput accepted it
	if prop.actionID == "" {
		prop.actionID = s.c.NewID("act")
	}

	now := s.c.Clock.Now()
	a := &agentg8.Action{
		ID: prop.actionID, Task: task.Name, Input: compact.Bytes(), Principal: p.ID,
		OnBehalfOf: prop.OnBehalfOf, Reason: clip(prop.Reason, 2000), TaskHash: task.Hash,
		CreatedAt: now, UpdatedAt: now,
	}
	vars := registry.Vars{Input: input, Principal: p.ID, ActionID: a.ID, Task: task.Name}

	var user *agentg8.User
	var dec agentg8.Decision
	if prop.OnBehalfOf != "" {
		u, ok := s.users()[prop.OnBehalfOf]
		if !ok || !sharesGroup(u.Groups, p.ActFor) {
			dec = agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "agent may not act for this user"}
		} else {
			user = &u
			vars.User = u.ID
		}
	}
	resID, err := task.ResourceID(vars)
	if err != nil {
		return nil, s.invalid(ctx, p, prop, renderError(err))
	}
	req := policy.Request{Agent: p, User: user, Task: task.Name, ResourceType: task.ResourceType, ResourceID: resID,
		Input: input, Risk: agentg8.Risk(task.Risk), DryRun: prop.DryRun, Now: now}
	var required []agentg8.ApprovalRequirement
	if dec.Effect == "" {
		start := time.Now()
		dec = cat.Policy.Authorize(req)
		if dec.Effect == agentg8.Allow {
			required, err = s.requiredApprovals(cat, task, req)
			if err != nil {
				dec = agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "approval rule evaluation error"}
			}
		}
		s.c.Observer.Decision(time.Since(start))
	}
	a.Decision = &dec

	proposed := &agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: a.ID, Task: a.Task, Principal: p.ID,
		OnBehalfOf: a.OnBehalfOf, Input: a.Input, Decision: &dec, Detail: clip(prop.Reason, 500), ToolHash: prop.ToolHash}

	// Render before anything is stored, so an input that cannot build the
	// request is invalid_input rather than a failed action. A denial needs
	// no request, so it is reported first.
	rendered, err := task.RenderRequest(vars)
	if err != nil && dec.Effect == agentg8.Allow {
		return nil, s.invalid(ctx, p, prop, renderError(err))
	}
	if prop.DryRun {
		a.Status = agentg8.StateDryRun
		a.Preview = s.preview(ctx, task, vars, rendered, dec, required)
		ev := &agentg8.AuditEvent{Type: agentg8.EventDryRun, ActionID: a.ID, Task: a.Task, Principal: p.ID, Status: a.Status, Detail: a.Preview.Outcome}
		if err := s.record(ctx, a, proposed, ev); err != nil {
			return nil, err
		}
		return a, nil
	}
	if dec.Effect != agentg8.Allow {
		a.Status = agentg8.StateDenied
		ev := &agentg8.AuditEvent{Type: agentg8.EventDenied, ActionID: a.ID, Task: a.Task, Principal: p.ID, Status: a.Status, Decision: &dec}
		if err := s.record(ctx, a, proposed, ev); err != nil {
			return nil, err
		}
		return a, &agentg8.Error{Code: agentg8.CodePolicyDenied, Message: "policy denied this action: " + dec.Reason, ActionID: a.ID}
	}
	if len(required) > 0 {
		return s.requestApproval(ctx, task, a, vars, rendered, required, proposed)
	}
	return s.execute(context.WithoutCancel(ctx), task, a, vars, rendered, proposed, prop.SubjectTokens)
}

func (s *Service) requiredApprovals(cat *Catalog, task *registry.Task, req policy.Request) ([]agentg8.ApprovalRequirement, error) {
	switch task.Approval {
	case registry.ApprovalNever:
		return nil, nil
	case registry.ApprovalAlways:
		var out []agentg8.ApprovalRequirement
		for _, g := range task.Approvers {
			out = append(out, agentg8.ApprovalRequirement{Group: g, Quorum: 1, Rule: "task:" + task.Name})
		}
		return out, nil
	}
	return cat.Policy.RequiredApprovals(req)
}

// record stores a new action together with its audit events.
func (s *Service) record(ctx context.Context, a *agentg8.Action, events ...*agentg8.AuditEvent) error {
	if err := s.commit(ctx, &Change{Action: a}, events...); err != nil {
		return err
	}
	s.logAction(a)
	return nil
}

// commit writes a change and its events atomically. A refused change keeps
// its cause (ErrStateConflict); any other failure is audit_unavailable.
func (s *Service) commit(ctx context.Context, ch *Change, events ...*agentg8.AuditEvent) error {
	return s.failed(ch, s.write(ctx, ch, events...))
}

// failed is commit's answer for write's error err: refusals as they are,
// any other failure logged and audit_unavailable.
func (s *Service) failed(ch *Change, err error) error {
	if err != nil && !refusal(err) {
		s.c.Logger.Error("audit unavailable", "action", ch.Action.ID, "err", err)
		return errAudit
	}
	return err
}

// write is commit without the error's translation (or its log line).
func (s *Service) write(ctx context.Context, ch *Change, events ...*agentg8.AuditEvent) error {
	if data, err := json.Marshal(ch.Action); err == nil {
		ch.Data = data
	}
	if err := s.c.Audit.Commit(ctx, ch, events...); err != nil {
		return err
	}
	if ch.From == "" {
		ch.Action.Version = 1
	} else {
		ch.Action.Version++
	}
	s.notify(ch.Action.ID)
	return nil
}

// refusal reports whether err is the store refusing a change, as opposed
// to failing to write it.
func refusal(err error) bool {
	return errors.Is(err, ErrStateConflict) || errors.Is(err, ErrDuplicatePending) || errors.Is(err, ErrTooManyPending) || errors.Is(err, ErrActionExists)
}

// errLimiter is returned when the shared rate limit cannot be checked.
var errLimiter = &agentg8.Error{Code: agentg8.CodeAuditUnavailable, Message: "the store cannot be reached to check the rate limit; nothing was executed"}

// allow applies the agent's rate limit.
func (s *Service) allow(ctx context.Context, agent string) (bool, error) {
	perMinute := s.rules.Load().RatePerMinute
	if perMinute <= 0 {
		return true, nil
	}
	if s.c.Limiter != nil {
		return s.c.Limiter.TakeToken(ctx, agent, perMinute)
	}
	limit := rate.Limit(float64(perMinute) / 60)
	s.mu.Lock()
	l, ok := s.limits[agent]
	if !ok {
		l = rate.NewLimiter(limit, perMinute)
		s.limits[agent] = l
	} else if l.Burst() != perMinute {
		// The limit was reloaded: the bucket keeps its tokens, up to the
		// new size.
		l.SetLimit(limit)
		l.SetBurst(perMinute)
	}
	s.mu.Unlock()
	return l.Allow(), nil
}

// logAction reports an action reaching a state, without inputs or outputs
// (they may be personal data; the audit log keeps them).
func (s *Service) logAction(a *agentg8.Action) {
	s.c.Observer.Action(a.Task, a.Status)
	attrs := []any{"action_id", a.ID, "task", a.Task, "principal", a.Principal, "status", a.Status}
	if a.OnBehalfOf != "" {
		attrs = append(attrs, "on_behalf_of", a.OnBehalfOf)
	}
	if a.UpstreamStatus != 0 {
		attrs = append(attrs, "upstream_status", a.UpstreamStatus)
	}
	if a.Error != nil {
		attrs = append(attrs, "error_code", a.Error.Code)
	}
	s.c.Logger.Info("action", attrs...)
}

func sharesGroup(a, b []string) bool {
	for _, g := range a {
		if slices.Contains(b, g) {
			return true
		}
	}
	return false
}

func renderError(err error) *agentg8.Error {
	var re *registry.RenderError
	if errors.As(err, &re) {
		return &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "input cannot be used to build the request",
			Errors: []agentg8.FieldError{{Message: re.Msg}}}
	}
	return agentg8.AsError(err)
}

// RequestHash is SHA-256 over the RFC 8785 canonical JSON of what an approval
// binds: task name, task definition hash, input, principal, on_behalf_of and
// credential name.
func RequestHash(task *registry.Task, a *agentg8.Action) (string, error) {
	b, err := json.Marshal(map[string]any{
		"task": a.Task, "task_hash": task.Hash, "input": a.Input, "principal": a.Principal,
		"on_behalf_of": a.OnBehalfOf, "credential": task.Credential,
	})
	if err != nil {
		return "", err
	}
	c, err := jcs.Transform(b)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
