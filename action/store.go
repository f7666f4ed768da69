package action

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/agentg8/agentg8"
)

// Store errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrStateConflict = errors.New("action state changed concurrently")
	// ErrDuplicatePending means an identical request is already pending.
	ErrDuplicatePending = errors.New("an identical request is already pending approval")
	// ErrTooManyPending refuses a new pending action whose principal has
	// Change.MaxPending pending already.
	ErrTooManyPending = errors.New("too many actions pending approval")
	// ErrActionExists refuses creating an action whose ID is taken: two
	// requests under one idempotency claim, and only one may create it.
	ErrActionExists = errors.New("an action with this ID exists")
)

// Filter selects actions to list.
type Filter struct {
	Principal string // empty: any
	Task      string
	Status    agentg8.State
	Before    time.Time // zero: now
	Limit     int
}

// IdempotencyRecord is an agent's Idempotency-Key claim.
type IdempotencyRecord struct {
	Agent       string
	Key         string
	PayloadHash string
	// ActionID is the ID the claiming request gives the action it creates
	// (if it gets that far); "" for claims stored by earlier versions.
	ActionID string
	// Result is the stored answer; nil while the first request is in flight.
	Result    []byte
	CreatedAt time.Time
}

// Store is what the pipeline needs from persistence. Implementations must
// pass storetest.
type Store interface {
	CreateAction(ctx context.Context, a *agentg8.Action) error
	GetAction(ctx context.Context, id string) (*agentg8.Action, error)
	ListActions(ctx context.Context, f Filter) ([]*agentg8.Action, error)
	ActionsInState(ctx context.Context, s agentg8.State) ([]*agentg8.Action, error)
	// UpdateAction stores a if the stored action's status is from and its
	// version is a.Version, else returns ErrStateConflict. This
	// compare-and-set is what makes execution at-most-once. The stored
	// version becomes a.Version+1.
	UpdateAction(ctx context.Context, a *agentg8.Action, from agentg8.State) error
	// GetActionByApproval finds the action an approval belongs to.
	GetActionByApproval(ctx context.Context, approvalID string) (*agentg8.Action, error)
	// PendingByHash returns the pending action with this request hash.
	PendingByHash(ctx context.Context, requestHash string) (*agentg8.Action, error)
	// CountPending counts an agent's pending approvals.
	CountPending(ctx context.Context, principal string) (int, error)

	// RenewLease extends an executing action's lease; false when the lease
	// is no longer the owner's (the action was taken over).
	RenewLease(ctx context.Context, id string, l Lease) (bool, error)
	// ExpiredLeases lists executing actions whose lease has run out.
	ExpiredLeases(ctx context.Context) ([]*agentg8.Action, error)

	// ClaimNotifications takes up to limit undelivered notifications due
	// at now, oldest first, for one deliverer: each is due again only at
	// until (when its deliverer stopped before recording the attempt), so
	// deliverers on other replicas skip it meanwhile.
	ClaimNotifications(ctx context.Context, now, until time.Time, limit int) ([]Notification, error)
	// UpdateNotification records a failed delivery attempt and when to
	// try again.
	UpdateNotification(ctx context.Context, n Notification) error
	// DeleteNotification removes a notification once delivered or given
	// up: its payload carries the request's input and preview, which the
	// audit log keeps; the outbox need not keep them too.
	DeleteNotification(ctx context.Context, id string) error

	// ClaimIdempotency inserts rec if (agent, key) is new and returns nil;
	// otherwise it returns the existing record and stores nothing.
	ClaimIdempotency(ctx context.Context, rec IdempotencyRecord) (*IdempotencyRecord, error)
	// CompleteIdempotency records a claim's answer, dated at (from which
	// the record is kept).
	CompleteIdempotency(ctx context.Context, agent, key string, result []byte, at time.Time) error
	// ReleaseIdempotency gives up an unanswered claim whose request ended
	// without a final answer: it is dated at (a time making it read as
	// abandoned) and keeps its action ID, so every later attempt under the
	// key uses that ID and at most one action can ever exist for it. A
	// claim without an action ID (made by an earlier version) is deleted.
	ReleaseIdempotency(ctx context.Context, agent, key string, at time.Time) error
	// PruneIdempotency deletes up to limit records (answered or not) dated
	// before before, and says how many it deleted.
	PruneIdempotency(ctx context.Context, before time.Time, limit int) (int, error)
}

// Change is an action write committed in the same transaction as its audit
// events, so the action's state and the audit log never disagree.
type Change struct {
	Action *agentg8.Action
	// From is the state the stored action must be in; empty creates it.
	// Updates also require the stored version to equal Action.Version.
	From agentg8.State
	// Notify are notifications to queue in the same transaction.
	Notify []Notification
	// Lease, when set, makes the writer the action's executor until the
	// lease expires (measured on the store's clock); without it any lease
	// is cleared.
	Lease *Lease
	// Owner, when set, also requires an update to find the stored
	// action's execution lease held by Owner: a replica settling an
	// execution whose record it could not confirm must not end someone
	// else's execution of the same action at the same version.
	Owner string
	// MaxPending, when creating a pending action, bounds its principal's
	// pending actions: the store refuses the change (ErrTooManyPending)
	// if that many are pending already, counting in the same transaction
	// so that concurrent proposals — on other replicas too — cannot pass
	// the bound together. Zero: no bound.
	MaxPending int
	// Data is the action's JSON when the proposer encoded it already (off
	// the audit writer, which every action waits on); nil: encode Action.
	Data []byte
}

// Bounded reports whether the change creates a pending action under a
// bound (MaxPending) the store must check as it writes.
func (c *Change) Bounded() bool {
	return c.From == "" && c.MaxPending > 0 && c.Action.Status == agentg8.StatePendingApproval
}

// Announced reports whether other replicas must hear of this change (a
// store's LISTEN/NOTIFY) because someone there may be waiting on it: every
// change in an approval's course (agents long-poll pending actions; the
// worker runs approved ones and sends notices), and every update but the
// end of an unapproved action's execution. Such an action is created and
// ended within its proposer's request: no one elsewhere can wait on its
// creation, and a long-poll that finds it executing re-reads it every
// second (Service.Get). So the two writes of every allowed action are not
// announced to every replica, which cost PostgreSQL about a sixth of its
// CPU per action (docs/benchmarks.md).
func (c *Change) Announced() bool {
	if c.Action.Approval != nil {
		return true
	}
	return c.From != "" && c.From != agentg8.StateExecuting
}

// Encode returns the action's JSON: Data, or Action encoded now.
func (c *Change) Encode() ([]byte, error) {
	if c.Data != nil {
		return c.Data, nil
	}
	return json.Marshal(c.Action)
}

// Lease is an execution lease: who executes, and for how long without renewal.
type Lease struct {
	Owner string
	TTL   time.Duration
}

// Notification is one queued message to one channel, retried from the store
// until delivered or out of attempts, then deleted.
type Notification struct {
	ID       string
	ActionID string
	// Channel is the key of the channel it is for (Notifier.Channels).
	Channel string
	// Position is, for a notification queued before channels had keys
	// (schema 7), the channel's position in the config then; -1 otherwise.
	Position  int
	Event     string
	Payload   []byte
	Attempts  int
	NextAt    time.Time
	LastError string
}
