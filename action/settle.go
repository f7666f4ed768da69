package action

import (
	"context"
	"time"

	"github.com/agentg8/agentg8"
)

// unsettled is what this replica knows of an execution that the store did
// not confirm: the outcome the upstream gave, or that nothing was sent
// because the intent's commit was not confirmed (it may still have
// committed). Left alone, such an action would read executing until its
// lease ran out and then outcome_unknown — though this replica knows.
type unsettled struct {
	ch      *Change
	ev      *agentg8.AuditEvent
	sent    bool      // the request went upstream; ch records what it answered
	warned  bool      // the first failed try was logged
	refused time.Time // not sent: when the store first refused the settling
}

// notSent remembers that a's execution, whose intent record (ch, moving
// it to executing under the attempt's lease) the store did not confirm,
// never reached the upstream. If the intent did commit, the sweep ends the
// action failed; if it did not, the settling change is refused and
// forgotten (an approved action then runs again as usual).
func (s *Service) notSent(a *agentg8.Action, ch *Change) {
	failed := *a
	failed.Version++ // the version the intent would have written
	if ch.From == "" {
		failed.Version = 1
	}
	failed.Status = agentg8.StateFailed
	failed.Error = &agentg8.Error{Code: agentg8.CodeAuditUnavailable, ActionID: a.ID,
		Message: "not sent: the store did not confirm the execution record, so the request never went upstream"}
	failed.UpdatedAt = s.c.Clock.Now()
	s.hold(&unsettled{
		ch: &Change{Action: &failed, From: agentg8.StateExecuting, Owner: ch.Lease.Owner},
		ev: &agentg8.AuditEvent{Type: agentg8.EventFailed, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
			Status: failed.Status, Error: failed.Error, Detail: "not sent: the execution record was not confirmed by the store"},
	})
}

// notSentWatch is how long a remembered "not sent" is kept once the store
// answers that the intent has not committed.
const notSentWatch = 5 * time.Second

func (s *Service) hold(u *unsettled) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsettled[u.ch.Action.ID] = u
}

// Unsettled is how many executions this replica knows the store has not
// recorded (a gauge for operators: stopping now leaves them
// outcome_unknown).
func (s *Service) Unsettled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unsettled)
}

// settle tries to record every unsettled execution; what still cannot be
// recorded waits for the next sweep.
func (s *Service) settle(ctx context.Context) {
	s.mu.Lock()
	list := make([]*unsettled, 0, len(s.unsettled))
	for _, u := range s.unsettled {
		list = append(list, u)
	}
	s.mu.Unlock()
	for _, u := range list {
		if !s.settleOne(ctx, u) {
			continue
		}
		s.mu.Lock()
		delete(s.unsettled, u.ch.Action.ID)
		s.mu.Unlock()
	}
}

// settleOne records u; true when there is nothing more to do.
func (s *Service) settleOne(ctx context.Context, u *unsettled) bool {
	a := u.ch.Action
	err := s.write(ctx, u.ch, u.ev) // failures are logged once, below, not every sweep
	switch {
	case err == nil:
		s.c.Logger.Info("execution settled after the store recovered", "action_id", a.ID, "status", a.Status, "sent", u.sent)
		s.logAction(a)
		return true
	case !refusal(err):
		if !u.warned {
			u.warned = true
			s.c.Logger.Warn("execution not settled yet; trying again", "action_id", a.ID, "status", a.Status, "sent", u.sent, "err", err)
		}
		return false
	case !u.sent:
		// The intent has not committed (or the action is past
		// executing) — yet: one still in the network when its
		// connection was lost can reach the database just after the
		// store answers again (a partition healing) and commit, leaving
		// the action executing though nothing was sent. Keep watching a
		// few seconds more.
		if u.refused.IsZero() {
			u.refused = time.Now()
		}
		return time.Since(u.refused) >= notSentWatch
	}
	// The outcome may have been recorded after all (its commit's answer was
	// lost), or the lease ran out and another replica ended the action
	// outcome_unknown: then say what this replica saw.
	stored, err := s.lookup(ctx, a.ID)
	if err != nil {
		return false
	}
	if stored.Status == a.Status && stored.Version == a.Version+1 {
		return true
	}
	return s.leaseLost(ctx, a, u.ev.Upstream) == nil
}

// leaseLost records what this replica saw of an execution whose lease it
// lost before the outcome was recorded (another replica ended the action
// outcome_unknown): the person settling it learns the upstream's answer.
func (s *Service) leaseLost(ctx context.Context, a *agentg8.Action, info *agentg8.UpstreamInfo) error {
	lost := &agentg8.AuditEvent{Type: agentg8.EventLeaseLost, ActionID: a.ID, Task: a.Task, Principal: a.Principal,
		Status: a.Status, Upstream: info, Detail: "execution lease of " + s.c.Replica + " was lost before the outcome was recorded; upstream outcome seen: " + string(a.Status)}
	if err := s.c.Audit.Append(ctx, lost); err != nil {
		s.c.Logger.Error("audit unavailable", "action", a.ID, "err", err)
		return err
	}
	s.c.Logger.Warn("execution lease lost", "action_id", a.ID, "outcome_seen", a.Status)
	return nil
}

// stopGrace bounds the last try, at stop, to record what the store has not
// confirmed: a replica restarted soon after an outage (a rolling deploy)
// records what it knows instead of leaving it to read outcome_unknown, and
// one cut off from its store still stops promptly.
const stopGrace = 5 * time.Second

// settleAtStop is the worker's last settle, after its executions ended.
func (s *Service) settleAtStop() {
	if s.Unsettled() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	s.settle(ctx)
}

// unsettledAtStop logs what this replica knew and could not record, for
// the person who settles those actions once they read outcome_unknown.
func (s *Service) unsettledAtStop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, u := range s.unsettled {
		if u.sent {
			s.c.Logger.Error("stopping with an execution not recorded; it will read outcome_unknown, but the upstream answered",
				"action_id", id, "status_seen", u.ch.Action.Status)
		} else {
			s.c.Logger.Error("stopping with an execution not recorded; if it reads outcome_unknown, nothing was sent",
				"action_id", id)
		}
	}
}
