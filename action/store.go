package action

import (
	"context"
	"errors"
	"time"

	"github.com/agentg8/agentg8"
)

// Store errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrStateConflict = errors.New("action state changed concurrently")
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
	// UpdateAction stores a if the stored action's status is from, else
	// returns ErrStateConflict. This compare-and-set is what makes execution
	// at-most-once.
	UpdateAction(ctx context.Context, a *agentg8.Action, from agentg8.State) error

	// ClaimIdempotency inserts rec if (agent, key) is new and returns nil;
	// otherwise it returns the existing record and stores nothing.
	ClaimIdempotency(ctx context.Context, rec IdempotencyRecord) (*IdempotencyRecord, error)
	CompleteIdempotency(ctx context.Context, agent, key string, result []byte) error
	ReleaseIdempotency(ctx context.Context, agent, key string) error
}

// Change is an action write committed in the same transaction as its audit
// events, so the action's state and the audit log never disagree.
type Change struct {
	Action *agentg8.Action
	// From is the state the stored action must be in; empty creates it.
	From agentg8.State
}
