// Package agentg8 is the vocabulary of the AgentG8 action gateway: tasks,
// actions and their states, principals, decisions, audit events and the one
// error type whose codes callers may see. It imports only the standard library;
// every other package depends on it, never the reverse.
package agentg8

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Risk classifies what a task does to the world.
type Risk string

// Risk levels, from harmless to irreversible.
const (
	RiskRead        Risk = "read"
	RiskWrite       Risk = "write"
	RiskDestructive Risk = "destructive"
)

// State is where an action is in its life.
type State string

// Action states (SPEC §1).
const (
	StateDryRun          State = "dry_run"
	StateDenied          State = "denied"
	StatePendingApproval State = "pending_approval"
	StateApproved        State = "approved"
	StateExecuting       State = "executing"
	StateSucceeded       State = "succeeded"
	StateFailed          State = "failed"
	StateOutcomeUnknown  State = "outcome_unknown"
	StateRejected        State = "rejected"
	StateExpired         State = "expired"
	StateCancelled       State = "cancelled"
)

// Terminal reports whether no further transition can leave s.
func (s State) Terminal() bool {
	switch s {
	case StateDryRun, StateDenied, StateSucceeded, StateFailed, StateOutcomeUnknown,
		StateRejected, StateExpired, StateCancelled:
		return true
	}
	return false
}

// PrincipalKind tells agents (which propose) from users (which approve and audit).
type PrincipalKind string

// Principal kinds.
const (
	KindAgent PrincipalKind = "agent"
	KindUser  PrincipalKind = "user"
)

// Principal is an authenticated caller.
type Principal struct {
	Kind   PrincipalKind
	ID     string
	Groups []string
	// ActFor lists the groups of users an agent may act for.
	ActFor []string
}

// InGroup reports whether p is a member of group g.
func (p Principal) InGroup(g string) bool {
	for _, x := range p.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// User is a human an agent acts for, or who approves.
type User struct {
	ID     string
	Groups []string
	// Subject is the user's subject at the identity provider (token
	// exchange); empty means the same as ID.
	Subject string
}

// Effect is a policy decision's outcome.
type Effect string

// Decision effects.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// Decision is the result of policy evaluation.
type Decision struct {
	Effect Effect `json:"effect"`
	// Policies are the ids of the determining policies.
	Policies []string `json:"policies"`
	// Errors lists policies whose evaluation failed; any error is a deny.
	Errors []string `json:"errors,omitempty"`
	// Reason is a short human explanation for a deny.
	Reason string `json:"reason,omitempty"`
}

// ApprovalRequirement is one approval rule that matched an action.
type ApprovalRequirement struct {
	Group  string `json:"group"`
	Quorum int    `json:"quorum"`
	Rule   string `json:"rule"`
}

// ApprovalDecision is one approver's vote.
type ApprovalDecision struct {
	User     string    `json:"user"`
	Decision string    `json:"decision"` // approve | reject
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
}

// Approval is the pending human decision over one exact action.
type Approval struct {
	ID          string                `json:"id"`
	Status      string                `json:"status"`
	RequestHash string                `json:"request_hash"`
	Required    []ApprovalRequirement `json:"required"`
	Decisions   []ApprovalDecision    `json:"decisions"`
	ExpiresAt   time.Time             `json:"expires_at"`
	// Satisfied lists the rules whose quorum is met.
	Satisfied []string `json:"satisfied,omitempty"`
}

// RenderedRequest is an upstream request as it would be sent, credentials masked.
type RenderedRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// Preview describes what an action would do (dry runs and approvals).
type Preview struct {
	Outcome     string                `json:"outcome,omitempty"`
	Required    []ApprovalRequirement `json:"required,omitempty"`
	Policies    []string              `json:"policies,omitempty"`
	Request     *RenderedRequest      `json:"request,omitempty"`
	SideEffects []string              `json:"side_effects,omitempty"`
	Current     json.RawMessage       `json:"current,omitempty"`
	Proposed    json.RawMessage       `json:"proposed,omitempty"`
	Diff        json.RawMessage       `json:"diff,omitempty"`
	// Summary says the diff in words, one line per change.
	Summary []string `json:"summary,omitempty"`
	Error   string   `json:"preview_error,omitempty"`
}

// Action is one proposal of a task by an agent.
type Action struct {
	ID         string          `json:"id"`
	Task       string          `json:"task"`
	Status     State           `json:"status"`
	Input      json.RawMessage `json:"input"`
	Principal  string          `json:"principal"`
	OnBehalfOf string          `json:"on_behalf_of,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Decision   *Decision       `json:"decision,omitempty"`
	Approval   *Approval       `json:"approval,omitempty"`
	Preview    *Preview        `json:"preview,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
	Error      *Error          `json:"error"`
	// TaskHash identifies the task definition the action was proposed against.
	TaskHash string `json:"task_hash,omitempty"`
	// UpstreamStatus is the HTTP status the upstream answered, if any.
	UpstreamStatus int       `json:"upstream_status,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// Resolution records who settled an outcome_unknown action, and why.
	Resolution *Resolution `json:"resolution,omitempty"`
	// Version counts stored writes; updates compare-and-set on it.
	Version int64 `json:"-"`
}

// Resolution is an operator's account of what the upstream really did with
// an action whose outcome the gateway could not know.
type Resolution struct {
	Outcome State     `json:"outcome"` // succeeded or failed
	User    string    `json:"user"`
	Comment string    `json:"comment"`
	At      time.Time `json:"at"`
}

// AuditEvent types (SPEC §5.5).
const (
	EventProposed          = "proposed"
	EventInvalid           = "invalid"
	EventDenied            = "denied"
	EventDryRun            = "dry_run"
	EventApprovalRequested = "approval_requested"
	EventApprovalDecided   = "approval_decided"
	EventApprovalGranted   = "approval_granted"
	EventApprovalVoid      = "approval_void"
	EventRejected          = "rejected"
	EventCredentialIssued  = "credential_issued"
	EventExecuting         = "executing"
	EventSucceeded         = "succeeded"
	EventFailed            = "failed"
	EventOutcomeUnknown    = "outcome_unknown"
	EventLeaseLost         = "lease_lost"
	// EventCatalogReloaded: tasks and policies were re-read (SIGHUP).
	EventCatalogReloaded = "catalog_reloaded"
	// EventOutcomeResolved: an operator recorded what an outcome_unknown
	// action really did upstream.
	EventOutcomeResolved = "outcome_resolved"
	EventExpired         = "expired"
	EventCancelled       = "cancelled"
)

// AuditEvent is one record of the tamper-evident log. Seq and Time are set by
// the log when the event is appended.
type AuditEvent struct {
	Seq         int64           `json:"seq"`
	Time        time.Time       `json:"time"`
	Type        string          `json:"type"`
	ActionID    string          `json:"action_id,omitempty"`
	Task        string          `json:"task,omitempty"`
	Principal   string          `json:"principal,omitempty"`
	OnBehalfOf  string          `json:"on_behalf_of,omitempty"`
	Status      State           `json:"status,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	Output      json.RawMessage `json:"output,omitempty"`
	Decision    *Decision       `json:"decision,omitempty"`
	Error       *Error          `json:"error,omitempty"`
	Credential  string          `json:"credential,omitempty"`
	SecretHMAC  string          `json:"secret_hmac,omitempty"`
	Issued      *IssuedInfo     `json:"issued,omitempty"`
	RequestHash string          `json:"request_hash,omitempty"`
	ApprovalID  string          `json:"approval_id,omitempty"`
	User        string          `json:"user,omitempty"`
	Comment     string          `json:"comment,omitempty"`
	Detail      string          `json:"detail,omitempty"`
	// ToolHash is the hash of the tool definition an MCP client called.
	ToolHash string        `json:"tool_hash,omitempty"`
	Upstream *UpstreamInfo `json:"upstream,omitempty"`
}

// ApprovalNotice tells approvers (and whoever listens) about an approval:
// what will run, who must decide, and where.
type ApprovalNotice struct {
	Event       string                `json:"event"` // approval_requested | approval_granted | rejected | expired | approval_void | cancelled
	ApprovalID  string                `json:"approval_id"`
	ActionID    string                `json:"action_id"`
	Task        string                `json:"task"`
	Principal   string                `json:"principal"`
	OnBehalfOf  string                `json:"on_behalf_of,omitempty"`
	Reason      string                `json:"reason,omitempty"`
	Input       json.RawMessage       `json:"input"`
	Target      string                `json:"target,omitempty"`
	SideEffects []string              `json:"side_effects,omitempty"`
	Required    []ApprovalRequirement `json:"required"`
	RequestHash string                `json:"request_hash"`
	ExpiresAt   time.Time             `json:"expires_at"`
	Status      State                 `json:"status"`
	Link        string                `json:"link,omitempty"`
}

// IssuedInfo describes an issued credential for the audit log: never the
// token or secret itself.
type IssuedInfo struct {
	Type      string    `json:"type"`
	Scopes    []string  `json:"scopes,omitempty"`
	Audience  string    `json:"audience,omitempty"`
	JTI       string    `json:"jti,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// UpstreamInfo records what the upstream answered.
type UpstreamInfo struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// Tool is the upstream MCP server's tool an MCP task called.
	Tool       string `json:"tool,omitempty"`
	Status     int    `json:"status,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Error codes callers may see. They are stable: clients branch on them.
const (
	CodeInvalidInput          = "invalid_input"
	CodeUnknownTask           = "unknown_task"
	CodePolicyDenied          = "policy_denied"
	CodeUnauthenticated       = "unauthenticated"
	CodeForbidden             = "forbidden"
	CodeNotFound              = "not_found"
	CodeIdempotencyInProgress = "idempotency_in_progress"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeUpstreamError         = "upstream_error"
	CodeUpstreamTimeout       = "upstream_timeout"
	CodeAuditUnavailable      = "audit_unavailable"
	CodeCredentialUnavailable = "credential_unavailable"
	CodeEgressDenied          = "egress_denied"
	CodeConflict              = "conflict"
	CodeBodyTooLarge          = "body_too_large"
	CodeInternal              = "internal"
	CodeApprovalMismatch      = "approval_mismatch"
	CodeSelfApproval          = "self_approval_forbidden"
	CodeTooManyPending        = "too_many_pending"
	CodeApprovalVoid          = "approval_void"
	CodeNotPending            = "not_pending"
	CodeRateLimited           = "rate_limited"
)

// FieldError locates one problem in an input.
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Error is the only error type whose text reaches callers. Anything else is
// internal and shown as a generic message.
type Error struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Errors  []FieldError `json:"errors,omitempty"`
	// ActionID names the action this error belongs to, when one was created.
	ActionID string `json:"action_id,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrStoreUnavailable answers a request whose read or write of the store
// failed (the database is down, say): 503, nothing was done, try again —
// the same code as an audit write that failed. The cause is logged, never
// shown.
var ErrStoreUnavailable = &Error{Code: CodeAuditUnavailable, Message: "the store cannot be reached; nothing was done, try again"}

// StoreFailed logs a failed read or write of the store (op says which)
// and returns ErrStoreUnavailable, the caller's answer.
func StoreFailed(log *slog.Logger, op string, err error) error {
	log.Error("store unavailable", "op", op, "err", err)
	return ErrStoreUnavailable
}

// AsError returns the *Error in err's chain, or a generic internal error that
// reveals nothing about err.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// Clock tells the time; injected so expiry and TTL tests are exact.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns the current UTC time.
func (SystemClock) Now() time.Time { return time.Now().UTC() }
