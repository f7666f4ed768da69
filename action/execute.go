package action

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/audit"
	"github.com/agentg8/agentg8/connector/httpconn"
	"github.com/agentg8/agentg8/connector/mcpconn"
	"github.com/agentg8/agentg8/credential"
	"github.com/agentg8/agentg8/registry"
)

// execute runs an action at most once. With proposed set, the action is new
// and is created directly in executing; otherwise it must be approved. Either
// way the move to executing is a compare-and-set committed together with the
// intent record, before any byte goes upstream.
func (s *Service) execute(ctx context.Context, task *registry.Task, a *agentg8.Action, vars registry.Vars, r *registry.Request, proposed *agentg8.AuditEvent, subject map[string]string) (*agentg8.Action, error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, fmt.Errorf("rendered URL: %w", err)
	}
	header := r.Header.Clone()
	if task.Request.IdempotencyHeader != "" {
		header.Set(task.Request.IdempotencyHeader, registry.IdempotencyValue(a.ID))
	}
	var events []*agentg8.AuditEvent
	// Each execution attempt holds its lease under a name of its own, so
	// that settling one attempt (settle.go) can never end another.
	lease := &Lease{Owner: s.c.Replica + "/" + strconv.FormatUint(s.attempts.Add(1), 10), TTL: s.c.LeaseTTL}
	ch := &Change{Action: a, From: agentg8.StateApproved, Lease: lease}
	if proposed != nil {
		events = append(events, proposed)
		ch.From = ""
	}
	redactor := credential.NewRedactor()
	if task.Credential != "" {
		use := &credential.Use{Header: header, URL: u, Scopes: task.Scopes, Audience: task.Origin(), Task: a.Task,
			ActionID: a.ID, Agent: a.Principal, User: a.OnBehalfOf, SubjectTokens: subject, UserSubject: s.users()[a.OnBehalfOf].Subject}
		if a.Approval != nil {
			use.RequestHash, use.ApprovalID = a.Approval.RequestHash, a.Approval.ID
		}
		issued, err := s.Catalog().Credentials.Apply(ctx, task.Credential, use)
		if err != nil {
			// Nothing was sent: record the action as failed.
			e := agentg8.AsError(err)
			e.ActionID = a.ID
			from := ch.From
			a.Status, a.Error, a.UpdatedAt = agentg8.StateFailed, e, s.c.Clock.Now()
			events = append(events, &agentg8.AuditEvent{Type: agentg8.EventFailed, ActionID: a.ID, Task: a.Task,
				Principal: a.Principal, Status: a.Status, Error: e, Credential: task.Credential})
			if err := s.commit(ctx, &Change{Action: a, From: from}, events...); err != nil {
				return nil, err
			}
			s.logAction(a)
			return a, e
		}
		redactor = issued.Redactor
		if redactor == nil {
			redactor = credential.NewRedactor(issued.Secrets...)
		}
		events = append(events, &agentg8.AuditEvent{Type: agentg8.EventCredentialIssued, ActionID: a.ID, Task: a.Task,
			Principal: a.Principal, Credential: issued.Name, SecretHMAC: issued.Fingerprint,
			Issued: &agentg8.IssuedInfo{Type: issued.Type, Scopes: issued.Scopes, Audience: issued.Audience, JTI: issued.JTI, ExpiresAt: issued.ExpiresAt}})
	}
	info := &agentg8.UpstreamInfo{Method: r.Method, URL: redactor.RedactString(r.URL)}
	if task.MCP != nil {
		info.Tool = task.MCP.Tool
	}
	a.Status = agentg8.StateExecuting
	a.UpdatedAt = s.c.Clock.Now()
	events = append(events, &agentg8.AuditEvent{Type: agentg8.EventExecuting, ActionID: a.ID, Task: a.Task,
		Principal: a.Principal, OnBehalfOf: a.OnBehalfOf, Status: a.Status, Upstream: info})
	// The intent record: no durable "executing", no request.
	if err := s.write(ctx, ch, events...); err != nil {
		if errors.Is(err, ErrStateConflict) {
			// Someone else executes (or executed) it: report, never repeat.
			return s.lookup(ctx, a.ID)
		}
		if errors.Is(err, ErrActionExists) {
			return nil, err // Propose answers with that action
		}
		if !errors.Is(err, audit.ErrNotWritten) {
			// The store may have committed the intent all the same (its
			// answer was lost); this replica knows nothing was sent and
			// records so when it can.
			s.notSent(a, ch)
		}
		return nil, s.failed(ch, err)
	}
	stopRenew := s.renewLease(ctx, a.ID, *lease)
	defer stopRenew()

	resp, err := s.send(ctx, task, u, header, r)
	if resp != nil {
		info.Status = resp.status
		info.DurationMS = resp.took.Milliseconds()
		s.c.Observer.Upstream(a.Task, resp.took)
	}
	if err != nil {
		var ce *httpconn.Error
		e := agentg8.Errorf(agentg8.CodeUpstreamError, "upstream request failed")
		if errors.As(err, &ce) {
			e = agentg8.Errorf(ce.Code, "%s", ce.Msg)
		}
		s.c.Logger.Warn("upstream call failed", "action", a.ID, "task", a.Task, "err", redactor.RedactString(err.Error()))
		return s.finish(ctx, a, lease.Owner, nil, e, info, redactor)
	}
	body := redactor.Redact(resp.body)
	output := shapeOutput(task, body)
	a.UpstreamStatus = resp.status
	switch {
	case resp.toolError:
		// MCP reports a tool's failure in its result for the model to read:
		// the agent gets its text (redacted) whatever output.select picks.
		msg := "the upstream tool reported an error"
		if t := toolText(body); t != "" {
			msg += ": " + t
		}
		return s.finish(ctx, a, lease.Owner, output, agentg8.Errorf(agentg8.CodeUpstreamError, "%s", msg), info, redactor)
	case resp.status < 200 || resp.status > 299:
		return s.finish(ctx, a, lease.Owner, output, agentg8.Errorf(agentg8.CodeUpstreamError, "upstream answered %d %s", resp.status, http.StatusText(resp.status)), info, redactor)
	}
	return s.finish(ctx, a, lease.Owner, output, nil, info, redactor)
}

// answer is what the upstream said to an action.
type answer struct {
	status    int
	body      []byte
	took      time.Duration
	toolError bool // an MCP tool's result said isError
}

// send makes the action's one upstream call: an HTTP request, or an MCP
// task's tool call (answered 200 when the session worked).
func (s *Service) send(ctx context.Context, task *registry.Task, u *url.URL, header http.Header, r *registry.Request) (*answer, error) {
	if task.MCP != nil {
		res, err := s.c.Tools.Call(ctx, mcpconn.Call{URL: u.String(), Header: header, Body: r.Body,
			Timeout: task.Timeout, MaxResponseBytes: task.Request.MaxResponseBytes})
		if res == nil {
			return nil, err
		}
		if err != nil {
			return &answer{took: res.Duration}, err
		}
		return &answer{status: http.StatusOK, body: res.Body, took: res.Duration, toolError: res.IsError}, nil
	}
	resp, err := s.c.Connector.Do(ctx, httpconn.Call{
		Method: r.Method, URL: u.String(), Header: header, Body: r.Body, Timeout: task.Timeout,
		MaxResponseBytes: task.Request.MaxResponseBytes, FollowRedirects: task.Request.FollowRedirects,
	})
	if resp == nil {
		return nil, err
	}
	return &answer{status: resp.Status, body: resp.Body, took: resp.Duration}, err
}

// toolText is the text content of an MCP tool result, at most 500 bytes.
func toolText(result []byte) string {
	var r struct {
		Content []struct{ Type, Text string }
	}
	if json.Unmarshal(result, &r) != nil {
		return ""
	}
	var parts []string
	for _, c := range r.Content {
		if c.Type == "text" && c.Text != "" {
			parts = append(parts, c.Text)
		}
	}
	t := strings.Join(parts, " ")
	if len(t) > 500 {
		t = strings.ToValidUTF8(t[:500], "") + "…"
	}
	return t
}

// shapeOutput applies output.select and output.redact; a body that is not
// JSON is returned as a JSON string.
func shapeOutput(task *registry.Task, body []byte) json.RawMessage {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		b, _ := json.Marshal(string(body))
		return b
	}
	out, err := json.Marshal(task.SelectOutput(v))
	if err != nil {
		return nil
	}
	return out
}

// finish records the outcome of an execution under owner's lease.
func (s *Service) finish(ctx context.Context, a *agentg8.Action, owner string, output json.RawMessage, e *agentg8.Error, info *agentg8.UpstreamInfo, red *credential.Redactor) (*agentg8.Action, error) {
	a.Output = output
	a.UpdatedAt = s.c.Clock.Now()
	ev := &agentg8.AuditEvent{ActionID: a.ID, Task: a.Task, Principal: a.Principal, OnBehalfOf: a.OnBehalfOf, Output: output, Upstream: info}
	if e == nil {
		a.Status = agentg8.StateSucceeded
		ev.Type = agentg8.EventSucceeded
	} else {
		if red != nil {
			e.Message = red.RedactString(e.Message)
		}
		e.ActionID = a.ID
		a.Status = agentg8.StateFailed
		a.Error = e
		ev.Type = agentg8.EventFailed
		ev.Error = e
	}
	ev.Status = a.Status
	ch := &Change{Action: a, From: agentg8.StateExecuting}
	err := s.commit(ctx, ch, ev)
	if errors.Is(err, ErrStateConflict) {
		// Our lease ran out and another replica declared the outcome
		// unknown. Say what we saw, then report the stored state.
		s.leaseLost(ctx, a, info)
		return s.lookup(ctx, a.ID)
	}
	if err != nil {
		// The upstream call already happened. The worker records the
		// outcome once the store answers again (the action reads executing
		// meanwhile); only if this process stops first does it become
		// outcome_unknown when its lease expires.
		s.c.Logger.Error("outcome not recorded yet", "action", a.ID, "status", a.Status, "err", err)
		held := *a
		ch.Action, ch.Owner = &held, owner
		s.hold(&unsettled{ch: ch, ev: ev, sent: true})
		return a, &agentg8.Error{Code: agentg8.CodeAuditUnavailable, ActionID: a.ID,
			Message: "the action ran but its outcome could not be recorded yet; it is recorded once the store can be reached (until then the action reads executing)"}
	}
	s.logAction(a)
	if e != nil {
		return a, e
	}
	return a, nil
}

// Recover runs at start. On a single node (SQLite) nothing else executes,
// so every action left executing by a crash is outcome_unknown at once; with
// several replicas only actions whose execution lease expired are, which the
// worker also checks continuously.
func (s *Service) Recover(ctx context.Context) (int, error) {
	list := s.c.Store.ExpiredLeases
	if s.c.SingleNode {
		list = func(ctx context.Context) ([]*agentg8.Action, error) {
			return s.c.Store.ActionsInState(ctx, agentg8.StateExecuting)
		}
	}
	stuck, err := list(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range stuck {
		if err := s.outcomeUnknown(ctx, a, "gateway stopped while the upstream call was in flight"); err != nil {
			if errors.Is(err, ErrStateConflict) {
				continue
			}
			return n, err
		}
		n++
	}
	return n, nil
}

// outcomeUnknown ends an execution whose result the gateway cannot know.
func (s *Service) outcomeUnknown(ctx context.Context, a *agentg8.Action, why string) error {
	ev := &agentg8.AuditEvent{Type: agentg8.EventOutcomeUnknown, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		Status: agentg8.StateOutcomeUnknown, Detail: why}
	a.Status = agentg8.StateOutcomeUnknown
	a.Error = agentg8.Errorf(agentg8.CodeUpstreamError, "the upstream may or may not have applied this action: %s", why)
	a.Error.ActionID = a.ID
	a.UpdatedAt = s.c.Clock.Now()
	if err := s.commit(ctx, &Change{Action: a, From: agentg8.StateExecuting}, ev); err != nil {
		return err
	}
	s.logAction(a)
	return nil
}

// Resolve settles an outcome_unknown action after a person checked the
// upstream: outcome is succeeded or failed, comment says how they know. The
// action keeps its history; the resolution and who made it are stored with
// it and audited. Only users in a resolver group may; nothing is executed.
func (s *Service) Resolve(ctx context.Context, p agentg8.Principal, id string, outcome agentg8.State, comment string) (*agentg8.Action, error) {
	if !s.MayResolve(p) {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "settling an outcome needs membership of a resolver group (execution.resolvers)")
	}
	if outcome != agentg8.StateSucceeded && outcome != agentg8.StateFailed {
		return nil, agentg8.Errorf(agentg8.CodeInvalidInput, "outcome must be succeeded or failed")
	}
	comment = strings.TrimSpace(comment)
	if comment == "" {
		return nil, agentg8.Errorf(agentg8.CodeInvalidInput, "a comment saying how the outcome was established is required")
	}
	a, err := s.lookup(ctx, id) // resolvers may settle any action
	if err != nil {
		return nil, err
	}
	if r := a.Resolution; r != nil && r.User == p.ID && r.Outcome == outcome {
		return a, nil // settling again (the first answer lost, say): the first stands
	}
	if a.Status != agentg8.StateOutcomeUnknown {
		return nil, agentg8.Errorf(agentg8.CodeConflict, "action is %s; only outcome_unknown actions can be settled", a.Status)
	}
	now := s.c.Clock.Now()
	a.Status, a.UpdatedAt = outcome, now
	a.Resolution = &agentg8.Resolution{Outcome: outcome, User: p.ID, Comment: clip(comment, 2000), At: now}
	if outcome == agentg8.StateSucceeded {
		a.Error = nil
	}
	ev := &agentg8.AuditEvent{Type: agentg8.EventOutcomeResolved, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		Status: outcome, User: p.ID, Comment: a.Resolution.Comment}
	if err := s.commit(ctx, &Change{Action: a, From: agentg8.StateOutcomeUnknown}, ev); err != nil {
		if errors.Is(err, ErrStateConflict) {
			return nil, agentg8.Errorf(agentg8.CodeConflict, "action changed state; it was settled by someone else")
		}
		return nil, err
	}
	s.logAction(a)
	return a, nil
}

// renewLease keeps this replica's execution lease alive until stopped. A
// timer, not a goroutine: most executions end long before the first
// renewal is due.
func (s *Service) renewLease(ctx context.Context, id string, l Lease) func() {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // t is set before the first renewal reads it
	defer mu.Unlock()
	t = time.AfterFunc(s.c.LeaseTTL/3, func() {
		ok, err := s.c.Store.RenewLease(context.WithoutCancel(ctx), id, l)
		if err != nil {
			s.c.Logger.Warn("lease renewal failed", "action_id", id, "err", err)
		} else if !ok {
			s.c.Logger.Warn("execution lease taken over", "action_id", id)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(s.c.LeaseTTL / 3)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// mayRead reports whether p may see action a.
func (s *Service) mayRead(p agentg8.Principal, a *agentg8.Action) bool {
	if p.Kind == agentg8.KindAgent {
		return a.Principal == p.ID
	}
	if s.MayAudit(p) {
		return true
	}
	if a.Approval != nil {
		for _, r := range a.Approval.Required {
			if p.InGroup(r.Group) {
				return true
			}
		}
	}
	// Resolvers see what they may settle, and what was settled.
	if (a.Status == agentg8.StateOutcomeUnknown || a.Resolution != nil) && s.MayResolve(p) {
		return true
	}
	return false
}

// MayResolve reports whether p may settle outcome_unknown actions
// (execution.resolvers).
func (s *Service) MayResolve(p agentg8.Principal) bool {
	return p.Kind == agentg8.KindUser && slices.ContainsFunc(s.rules.Load().ResolverGroups, p.InGroup)
}

// MayAudit reports whether p may read the audit log.
func (s *Service) MayAudit(p agentg8.Principal) bool {
	return p.Kind == agentg8.KindUser && slices.ContainsFunc(s.rules.Load().AuditorGroups, p.InGroup)
}

// Get returns an action p may read. With wait > 0 it long-polls until the
// action's state differs from what it was at the call, or wait passes.
func (s *Service) Get(ctx context.Context, p agentg8.Principal, id string, wait time.Duration) (*agentg8.Action, error) {
	a, err := s.get(ctx, p, id)
	if err != nil || wait <= 0 || a.Status.Terminal() {
		return a, err
	}
	ch := s.subscribe(id)
	defer s.unsubscribe(id, ch)
	// Re-read after subscribing so no change slips between the two.
	if b, err := s.get(ctx, p, id); err != nil || b.Status != a.Status {
		return b, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	// The end of an unapproved action's execution on another replica is
	// not announced (Change.Announced): while it executes, look again
	// every second.
	var recheck <-chan time.Time
	if a.Status == agentg8.StateExecuting && a.Approval == nil {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		recheck = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return a, nil
		case <-t.C:
			return s.get(ctx, p, id)
		case <-ch:
		case <-recheck:
		}
		b, err := s.get(ctx, p, id)
		if err != nil || b.Status != a.Status {
			return b, err
		}
	}
}

func (s *Service) get(ctx context.Context, p agentg8.Principal, id string) (*agentg8.Action, error) {
	a, err := s.lookup(ctx, id)
	if err == nil && !s.mayRead(p, a) {
		return nil, notFound(id)
	}
	return a, err
}

// lookup reads an action, answering not_found for an unknown ID.
func (s *Service) lookup(ctx context.Context, id string) (*agentg8.Action, error) {
	a, err := s.c.Store.GetAction(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, notFound(id)
	}
	return a, s.unavailable("read an action", err)
}

func notFound(id string) error {
	return agentg8.Errorf(agentg8.CodeNotFound, "no action %q", clip(id, 100))
}

// List returns actions p may read, newest first.
func (s *Service) List(ctx context.Context, p agentg8.Principal, f Filter) ([]*agentg8.Action, error) {
	if p.Kind == agentg8.KindAgent {
		f.Principal = p.ID
	} else if !s.MayAudit(p) {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "listing all actions needs membership of an auditors group")
	}
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 100
	}
	acts, err := s.c.Store.ListActions(ctx, f)
	return acts, s.unavailable("list actions", err)
}

// Cancel ends a pending action at its proposer's request.
func (s *Service) Cancel(ctx context.Context, p agentg8.Principal, id string) (*agentg8.Action, error) {
	a, err := s.get(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if p.Kind != agentg8.KindAgent || a.Principal != p.ID {
		return nil, agentg8.Errorf(agentg8.CodeForbidden, "only the proposer may cancel an action")
	}
	if a.Status == agentg8.StateCancelled && a.Approval != nil && a.Approval.Status == approvalCancelled {
		return a, nil // cancelling again (the first answer lost, say) answers as the first did
	}
	if a.Status != agentg8.StatePendingApproval {
		return nil, agentg8.Errorf(agentg8.CodeConflict, "action is %s; only pending actions can be cancelled", a.Status)
	}
	ev := &agentg8.AuditEvent{Type: agentg8.EventCancelled, ActionID: a.ID, Task: a.Task, Principal: p.ID, Status: agentg8.StateCancelled}
	a.Status = agentg8.StateCancelled
	a.Approval.Status = approvalCancelled
	a.UpdatedAt = s.c.Clock.Now()
	if err := s.commit(ctx, &Change{Action: a, From: agentg8.StatePendingApproval}, ev); err != nil {
		if errors.Is(err, ErrStateConflict) {
			return nil, agentg8.Errorf(agentg8.CodeConflict, "action changed state; it can no longer be cancelled")
		}
		return nil, err
	}
	s.logAction(a)
	return a, nil
}

// Tasks lists the tasks an agent may propose.
func (s *Service) Tasks(p agentg8.Principal) []*registry.Task {
	var out []*registry.Task
	cat := s.Catalog()
	for _, t := range cat.Registry.Tasks() {
		if p.Kind == agentg8.KindAgent && cat.Policy.CouldPermit(p, t.Name) {
			out = append(out, t)
		}
	}
	return out
}

func (s *Service) subscribe(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	return ch
}

func (s *Service) unsubscribe(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := slices.DeleteFunc(s.waiters[id], func(c chan struct{}) bool { return c == ch })
	if len(w) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = w
	}
}

// Changed is told of a change made elsewhere (another replica), and the
// state the action reached ("" when unknown): it wakes long-polls on the
// action, and the worker when there may be work for it — an approved action
// to run, or an approval whose notices are due. Other states leave the
// worker to its tick: under load every action changes state twice, and a
// sweep per change cost each replica more than the actions themselves. An
// empty id means changes may have been missed (the announcements' channel
// was down): every long-poll re-reads, and the worker looks for work.
func (s *Service) Changed(id string, st agentg8.State) {
	if id == "" {
		s.notifyAll()
	} else {
		s.notify(id)
	}
	switch st {
	case agentg8.StateApproved, agentg8.StatePendingApproval, "":
		s.wake()
	}
}

// notifyAll wakes every long-poll.
func (s *Service) notifyAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, chs := range s.waiters {
		for _, ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// notify wakes long-polls on an action.
func (s *Service) notify(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.waiters[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
