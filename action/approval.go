package action

import (
	"context"
	"encoding/json"
	"errors"

	"slices"
	"strings"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/policy"
	"github.com/agentg8/agentg8/registry"
)

// Approval states (agentg8.Approval.Status).
const (
	approvalPending   = "pending"
	approvalApproved  = "approved"
	approvalRejected  = "rejected"
	approvalExpired   = "expired"
	approvalVoid      = "void"
	approvalCancelled = "cancelled"
)

// requestApproval stores a new pending action, or joins an identical one.
func (s *Service) requestApproval(ctx context.Context, task *registry.Task, a *agentg8.Action, vars registry.Vars,
	rendered *registry.Request, required []agentg8.ApprovalRequirement, proposed *agentg8.AuditEvent) (*agentg8.Action, error) {
	hash, err := RequestHash(task, a)
	if err != nil {
		return nil, err
	}
	if prev, err := s.c.Store.PendingByHash(ctx, hash); err == nil {
		return prev, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, s.unavailable("find a pending request", err)
	}
	rules := s.rules.Load()
	// Counted here to refuse early, and again by the store as it writes
	// (Change.MaxPending), where concurrent proposals cannot both pass.
	n, err := s.c.Store.CountPending(ctx, a.Principal)
	if err != nil {
		return nil, s.unavailable("count pending approvals", err)
	}
	if n >= rules.MaxPending {
		return nil, s.tooManyPending(ctx, a, n)
	}
	now := a.CreatedAt
	a.Status = agentg8.StatePendingApproval
	a.Approval = &agentg8.Approval{ID: s.c.NewID("apr"), Status: approvalPending, RequestHash: hash, Required: required,
		Decisions: []agentg8.ApprovalDecision{}, ExpiresAt: now.Add(rules.ApprovalTTL)}
	a.Preview = s.preview(ctx, task, vars, rendered, *a.Decision, required)
	ev := &agentg8.AuditEvent{Type: agentg8.EventApprovalRequested, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		OnBehalfOf: a.OnBehalfOf, Status: a.Status, RequestHash: hash, ApprovalID: a.Approval.ID}
	ch := &Change{Action: a, Notify: s.queue(a, "approval_requested"), MaxPending: rules.MaxPending}
	if err := s.commit(ctx, ch, proposed, ev); err != nil {
		if errors.Is(err, ErrDuplicatePending) {
			prev, err := s.c.Store.PendingByHash(ctx, hash)
			return prev, s.unavailable("find a pending request", err)
		}
		if errors.Is(err, ErrTooManyPending) {
			return nil, s.tooManyPending(ctx, a, rules.MaxPending)
		}
		return nil, err
	}
	s.logAction(a)
	s.wake()
	return a, nil
}

// tooManyPending records and returns the refusal of a proposal whose agent
// has n actions pending approval.
func (s *Service) tooManyPending(ctx context.Context, a *agentg8.Action, n int) error {
	e := agentg8.Errorf(agentg8.CodeTooManyPending, "agent %s already has %d actions waiting for approval", a.Principal, n)
	ev := &agentg8.AuditEvent{Type: agentg8.EventInvalid, Task: a.Task, Principal: a.Principal, Error: e}
	if err := s.c.Audit.Append(ctx, ev); err != nil {
		return errAudit
	}
	return e
}

// notice describes an approval for people.
func (s *Service) notice(a *agentg8.Action, event string) *agentg8.ApprovalNotice {
	n := &agentg8.ApprovalNotice{Event: event, ApprovalID: a.Approval.ID, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		OnBehalfOf: a.OnBehalfOf, Reason: a.Reason, Input: a.Input, Required: a.Approval.Required,
		RequestHash: a.Approval.RequestHash, ExpiresAt: a.Approval.ExpiresAt, Status: a.Status}
	if a.Preview != nil {
		n.SideEffects = a.Preview.SideEffects
		if r := a.Preview.Request; r != nil {
			n.Target = r.Method + " " + r.URL
		}
	}
	if s.c.PublicURL != "" {
		n.Link = strings.TrimRight(s.c.PublicURL, "/") + "/v1/approvals/" + a.Approval.ID
	}
	return n
}

// queue prepares one notification per channel, to be stored with the change.
func (s *Service) queue(a *agentg8.Action, event string) []Notification {
	if s.c.Notifier == nil {
		return nil
	}
	channels := s.c.Notifier.Channels()
	if len(channels) == 0 {
		return nil
	}
	payload, err := json.Marshal(s.notice(a, event))
	if err != nil {
		return nil
	}
	var out []Notification
	for _, ch := range channels {
		out = append(out, Notification{ID: s.c.NewID("ntf"), ActionID: a.ID, Channel: ch, Position: -1, Event: event, Payload: payload, NextAt: s.c.Clock.Now()})
	}
	return out
}

// wake asks the worker to look now.
func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// isApprover reports whether p belongs to a group an approval requires.
func isApprover(p agentg8.Principal, a *agentg8.Action) bool {
	if p.Kind != agentg8.KindUser || a.Approval == nil {
		return false
	}
	for _, r := range a.Approval.Required {
		if p.InGroup(r.Group) {
			return true
		}
	}
	return false
}

// Approvals lists the pending approvals p may decide or watch, newest first.
func (s *Service) Approvals(ctx context.Context, p agentg8.Principal) ([]*agentg8.Action, error) {
	if p.Kind != agentg8.KindUser {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "approvals are for people; agents cannot reach them")
	}
	all, err := s.c.Store.ActionsInState(ctx, agentg8.StatePendingApproval)
	if err != nil {
		return nil, s.unavailable("list approvals", err)
	}
	out := []*agentg8.Action{}
	for i := len(all) - 1; i >= 0; i-- {
		if isApprover(p, all[i]) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// Approval returns the action behind an approval, for its approvers and auditors.
func (s *Service) Approval(ctx context.Context, p agentg8.Principal, approvalID string) (*agentg8.Action, error) {
	if p.Kind != agentg8.KindUser {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "approvals are for people; agents cannot reach them")
	}
	a, err := s.c.Store.GetActionByApproval(ctx, approvalID)
	if errors.Is(err, ErrNotFound) || (err == nil && !isApprover(p, a) && !s.MayAudit(p)) {
		return nil, agentg8.Errorf(agentg8.CodeNotFound, "no approval %q", clip(approvalID, 100))
	}
	return a, s.unavailable("read an approval", err)
}

// CanDecide reports whether p may cast a vote on a now.
func CanDecide(p agentg8.Principal, a *agentg8.Action) bool {
	if !isApprover(p, a) || a.Status != agentg8.StatePendingApproval || p.ID == a.OnBehalfOf || p.ID == a.Principal {
		return false
	}
	for _, d := range a.Approval.Decisions {
		if d.User == p.ID {
			return false
		}
	}
	return true
}

// Decide records an approver's decision on the exact request they saw.
func (s *Service) Decide(ctx context.Context, p agentg8.Principal, approvalID string, approve bool, hash, comment string) (*agentg8.Action, error) {
	if p.Kind != agentg8.KindUser {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "approvals are for people; agents cannot reach them")
	}
	if len(comment) > 2000 {
		return nil, agentg8.Errorf(agentg8.CodeInvalidInput, "comment is longer than 2000 characters")
	}
	verb := "reject"
	if approve {
		verb = "approve"
	}
	for attempt := 0; attempt < 20; attempt++ {
		a, err := s.c.Store.GetActionByApproval(ctx, approvalID)
		if errors.Is(err, ErrNotFound) || (err == nil && !isApprover(p, a)) {
			return nil, agentg8.Errorf(agentg8.CodeNotFound, "no approval %q for you", clip(approvalID, 100))
		}
		if err != nil {
			return nil, s.unavailable("read an approval", err)
		}
		if p.ID == a.OnBehalfOf || p.ID == a.Principal {
			return nil, agentg8.Errorf(agentg8.CodeSelfApproval, "the requester and the user it acts for cannot approve their own action")
		}
		for _, d := range a.Approval.Decisions {
			if d.User == p.ID && d.Decision == verb {
				// A repeated click counts once — also after the approval
				// ended, when the first click's answer may have been lost.
				return a, nil
			}
		}
		if a.Status != agentg8.StatePendingApproval {
			return a, agentg8.Errorf(agentg8.CodeNotPending, "this approval is %s", a.Approval.Status)
		}
		now := s.c.Clock.Now()
		if !now.Before(a.Approval.ExpiresAt) {
			s.expire(ctx, a)
			return nil, agentg8.Errorf(agentg8.CodeNotPending, "this approval expired at %s", a.Approval.ExpiresAt.Format(time.RFC3339))
		}
		if hash != a.Approval.RequestHash {
			return nil, agentg8.Errorf(agentg8.CodeApprovalMismatch, "request_hash does not match the request awaiting approval; review it again")
		}
		if reason := s.stale(s.Catalog(), a); reason != "" {
			s.void(ctx, a, agentg8.StatePendingApproval, reason)
			return nil, agentg8.Errorf(agentg8.CodeApprovalVoid, "approval is void: %s", reason)
		}
		for _, d := range a.Approval.Decisions {
			if d.User == p.ID {
				return a, nil // one decision per approver: the first stands
			}
		}
		a.Approval.Decisions = append(a.Approval.Decisions, agentg8.ApprovalDecision{User: p.ID, Decision: verb, Comment: comment, At: now})
		a.UpdatedAt = now
		events := []*agentg8.AuditEvent{{Type: agentg8.EventApprovalDecided, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
			User: p.ID, Comment: comment, Detail: verb, RequestHash: hash, ApprovalID: a.Approval.ID, Status: a.Status}}
		var notify []Notification
		if !approve {
			a.Status = agentg8.StateRejected
			a.Approval.Status = approvalRejected
			events = append(events, &agentg8.AuditEvent{Type: agentg8.EventRejected, ActionID: a.ID, Task: a.Task,
				Principal: a.Principal, User: p.ID, Status: a.Status, ApprovalID: a.Approval.ID, RequestHash: hash})
			notify = s.queue(a, "rejected")
		} else {
			a.Approval.Satisfied = s.satisfied(a.Approval.Required, a.Approval.Decisions)
			if len(a.Approval.Satisfied) == len(a.Approval.Required) {
				a.Status = agentg8.StateApproved
				a.Approval.Status = approvalApproved
				events = append(events, &agentg8.AuditEvent{Type: agentg8.EventApprovalGranted, ActionID: a.ID, Task: a.Task,
					Principal: a.Principal, Status: a.Status, ApprovalID: a.Approval.ID, RequestHash: hash,
					Detail: "quorum met: " + strings.Join(a.Approval.Satisfied, ", ")})
				notify = s.queue(a, "approval_granted")
			}
		}
		err = s.commit(ctx, &Change{Action: a, From: agentg8.StatePendingApproval, Notify: notify}, events...)
		if errors.Is(err, ErrStateConflict) {
			continue // someone else decided meanwhile: look again
		}
		if err != nil {
			return nil, err
		}
		if a.Status != agentg8.StatePendingApproval {
			s.logAction(a)
		}
		s.wake()
		return a, nil
	}
	return nil, agentg8.Errorf(agentg8.CodeConflict, "the approval is changing too fast; try again")
}

// satisfied returns the rules whose quorum the approving decisions meet.
// Each approver counts once per rule.
func (s *Service) satisfied(required []agentg8.ApprovalRequirement, decisions []agentg8.ApprovalDecision) []string {
	var out []string
	for _, r := range required {
		n := 0
		for _, d := range decisions {
			if d.Decision == "approve" && slices.Contains(s.users()[d.User].Groups, r.Group) {
				n++
			}
		}
		if n >= r.Quorum {
			out = append(out, r.Rule)
		}
	}
	return out
}

// stale explains why an approval no longer matches what would run, or "".
func (s *Service) stale(cat *Catalog, a *agentg8.Action) string {
	task, ok := cat.Registry.Lookup(a.Task)
	if !ok {
		return "the task no longer exists"
	}
	h, err := RequestHash(task, a)
	if err != nil || h != a.Approval.RequestHash {
		return "the task definition or its credential changed since the request"
	}
	return ""
}

// void ends an approval whose request no longer matches.
func (s *Service) void(ctx context.Context, a *agentg8.Action, from agentg8.State, reason string) {
	a.Status = agentg8.StateCancelled
	a.Approval.Status = approvalVoid
	a.Error = &agentg8.Error{Code: agentg8.CodeApprovalVoid, Message: "approval is void: " + reason, ActionID: a.ID}
	a.UpdatedAt = s.c.Clock.Now()
	ev := &agentg8.AuditEvent{Type: agentg8.EventApprovalVoid, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		Status: a.Status, ApprovalID: a.Approval.ID, RequestHash: a.Approval.RequestHash, Detail: reason}
	if err := s.commit(ctx, &Change{Action: a, From: from, Notify: s.queue(a, "approval_void")}, ev); err == nil {
		s.logAction(a)
	}
}

// expire ends a pending approval past its expiry.
func (s *Service) expire(ctx context.Context, a *agentg8.Action) {
	a.Status = agentg8.StateExpired
	a.Approval.Status = approvalExpired
	a.UpdatedAt = s.c.Clock.Now()
	ev := &agentg8.AuditEvent{Type: agentg8.EventExpired, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		Status: a.Status, ApprovalID: a.Approval.ID, RequestHash: a.Approval.RequestHash}
	if err := s.commit(ctx, &Change{Action: a, From: agentg8.StatePendingApproval, Notify: s.queue(a, "expired")}, ev); err == nil {
		s.logAction(a)
	}
}

// Run is the background worker: it expires approvals, executes approved
// actions (including those left approved by a restart) and delivers queued
// notifications. It returns when ctx ends and running executions finish.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.c.WorkerInterval)
	defer t.Stop()
	for {
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			s.wg.Wait()
			s.settleAtStop()
			s.unsettledAtStop()
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

func (s *Service) sweep(ctx context.Context) {
	s.settle(ctx)
	now := s.c.Clock.Now()
	if pending, err := s.c.Store.ActionsInState(ctx, agentg8.StatePendingApproval); err != nil {
		s.c.Logger.Error("worker: list pending", "err", err)
		s.unreachable = time.Now()
	} else {
		for _, a := range pending {
			if !now.Before(a.Approval.ExpiresAt) {
				s.expire(ctx, a)
			}
		}
	}
	if approved, err := s.c.Store.ActionsInState(ctx, agentg8.StateApproved); err != nil {
		s.c.Logger.Error("worker: list approved", "err", err)
		s.unreachable = time.Now()
	} else {
		for _, a := range approved {
			s.mu.Lock()
			// An approved action this replica tried to run but whose
			// intent the store did not confirm waits to be settled: if the
			// intent did commit, the action is not approved any more.
			busy := s.running[a.ID] || s.unsettled[a.ID] != nil
			if !busy {
				s.running[a.ID] = true
			}
			s.mu.Unlock()
			if busy {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { s.mu.Lock(); delete(s.running, a.ID); s.mu.Unlock() }()
				s.runApproved(context.WithoutCancel(ctx), a)
			}()
		}
	}
	// While the store could not be reached, every replica's leases may
	// have run out, though their holders know what their executions did
	// and record it at their next sweep (settle): they get a few sweeps
	// from the store's return before anyone takes their actions over.
	if time.Since(s.unreachable) >= 5*s.c.WorkerInterval {
		s.takeOver(ctx)
	}
	s.prune(ctx)
	// Sends take up to 15 s each: they run beside the sweep, one round at
	// a time, so the next sweep is not held up by a channel that hangs.
	if s.delivering.CompareAndSwap(false, true) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.delivering.Store(false)
			s.deliver(ctx)
		}()
	}
}

// takeOver ends as outcome_unknown the executions whose lease expired
// (their replica stopped or was cut off), except this replica's own.
func (s *Service) takeOver(ctx context.Context) {
	expired, err := s.c.Store.ExpiredLeases(ctx)
	if err != nil {
		s.c.Logger.Error("worker: expired leases", "err", err)
		s.unreachable = time.Now()
		return
	}
	for _, a := range expired {
		s.mu.Lock()
		mine := s.running[a.ID] || s.unsettled[a.ID] != nil // this replica knows what happened
		s.mu.Unlock()
		if mine {
			continue
		}
		if err := s.outcomeUnknown(ctx, a, "the execution lease expired before the outcome was recorded (replica stopped or partitioned)"); err != nil && !errors.Is(err, ErrStateConflict) {
			s.c.Logger.Error("worker: outcome unknown", "action_id", a.ID, "err", err)
		}
	}
}

// runApproved executes an approved action after checking, again, that it is
// the approved request and that policy still allows it.
func (s *Service) runApproved(ctx context.Context, a *agentg8.Action) {
	cat := s.Catalog() // one catalog for every check below
	if reason := s.stale(cat, a); reason != "" {
		s.void(ctx, a, agentg8.StateApproved, reason)
		return
	}
	task, _ := cat.Registry.Lookup(a.Task)
	deny := func(dec agentg8.Decision) {
		a.Status = agentg8.StateDenied
		a.Decision = &dec
		a.Error = &agentg8.Error{Code: agentg8.CodePolicyDenied, Message: "policy denied this action at execution: " + dec.Reason, ActionID: a.ID}
		a.UpdatedAt = s.c.Clock.Now()
		ev := &agentg8.AuditEvent{Type: agentg8.EventDenied, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
			Status: a.Status, Decision: &dec, ApprovalID: a.Approval.ID, Detail: "re-evaluated before execution"}
		if err := s.commit(ctx, &Change{Action: a, From: agentg8.StateApproved}, ev); err == nil {
			s.logAction(a)
		}
	}
	input, err := task.ValidateInput(a.Input)
	if err != nil {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "input no longer validates"})
		return
	}
	p := agentg8.Principal{Kind: agentg8.KindAgent, ID: a.Principal}
	if ag, ok := s.agents()[a.Principal]; ok {
		p = ag
	} else {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "the proposing agent no longer exists"})
		return
	}
	vars := registry.Vars{Input: input, Principal: a.Principal, ActionID: a.ID, Task: a.Task}
	var user *agentg8.User
	if a.OnBehalfOf != "" {
		u, ok := s.users()[a.OnBehalfOf]
		if !ok || !sharesGroup(u.Groups, p.ActFor) {
			deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "agent may no longer act for this user"})
			return
		}
		user, vars.User = &u, u.ID
	}
	resID, err := task.ResourceID(vars)
	if err != nil {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "resource cannot be rendered"})
		return
	}
	req := policy.Request{Agent: p, User: user, Task: a.Task, ResourceType: task.ResourceType, ResourceID: resID,
		Input: input, Risk: agentg8.Risk(task.Risk), Now: s.c.Clock.Now()}
	dec := cat.Policy.Authorize(req)
	if dec.Effect != agentg8.Allow {
		deny(dec)
		return
	}
	required, err := s.requiredApprovals(cat, task, req)
	if err != nil {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "approval rule evaluation error"})
		return
	}
	if got := s.satisfied(required, a.Approval.Decisions); len(got) != len(required) {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: dec.Policies, Reason: "approval rules changed and are no longer satisfied"})
		return
	}
	a.Decision = &dec
	rendered, err := task.RenderRequest(vars)
	if err != nil {
		deny(agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "request cannot be rendered"})
		return
	}
	if _, err := s.execute(ctx, task, a, vars, rendered, nil, nil); err != nil {
		s.c.Logger.Info("approved action finished with an error", "action_id", a.ID, "err", agentg8.AsError(err).Code)
	}
}

// deliver sends due notifications, rescheduling failures with backoff.
func (s *Service) deliver(ctx context.Context) {
	if s.c.Notifier == nil {
		return
	}
	// Every replica's worker wakes when an approval is requested, so each
	// takes its notifications by claim: a notice goes out once, not once
	// per replica. A claim outlasts its sends (each up to 15 s); a replica
	// that stops mid-way leaves its claims to be retried after it.
	now := s.c.Clock.Now()
	due, err := s.c.Store.ClaimNotifications(ctx, now, now.Add(notifyClaim*15*time.Second+time.Minute), notifyClaim)
	if err != nil {
		s.c.Logger.Error("worker: due notifications", "err", err)
		return
	}
	for _, n := range due {
		if n.Channel == "" {
			// Queued before channels had keys: its position then, as this
			// config has it.
			if chs := s.c.Notifier.Channels(); n.Position >= 0 && n.Position < len(chs) {
				n.Channel = chs[n.Position]
			}
		}
		var notice agentg8.ApprovalNotice
		err := json.Unmarshal(n.Payload, &notice)
		if err == nil {
			sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err = s.c.Notifier.Send(sctx, n.Channel, n.ID, &notice)
			cancel()
		}
		name := s.c.Notifier.Name(n.Channel)
		s.c.Observer.Notification(name, err == nil)
		n.Attempts++
		if err != nil {
			n.LastError = clip(err.Error(), 500)
		}
		if err == nil || n.Attempts >= maxNotifyAttempts {
			// Delivered or given up: the notice leaves the queue.
			if err != nil {
				s.c.Logger.Error("notification given up", "channel", name, "action_id", n.ActionID, "event", n.Event,
					"attempts", n.Attempts, "err", n.LastError)
			}
			if err := s.c.Store.DeleteNotification(ctx, n.ID); err != nil {
				s.c.Logger.Error("worker: delete notification", "err", err)
			}
			continue
		}
		backoff := time.Duration(1<<min(n.Attempts, 10)) * time.Second
		n.NextAt = s.c.Clock.Now().Add(min(backoff, 10*time.Minute))
		s.c.Logger.Warn("notification failed", "channel", name, "action_id", n.ActionID, "event", n.Event,
			"attempt", n.Attempts, "err", n.LastError)
		if err := s.c.Store.UpdateNotification(ctx, n); err != nil {
			s.c.Logger.Error("worker: update notification", "err", err)
		}
	}
}

const maxNotifyAttempts = 12

// notifyClaim is how many notifications a worker claims at a time.
const notifyClaim = 10
