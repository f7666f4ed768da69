package action

import (
	"testing"

	"github.com/agentg8/agentg8"
)

// Which changes other replicas hear of: everything in an approval's
// course, and every update but the end of an unapproved execution.
func TestChangeAnnounced(t *testing.T) {
	apr := &agentg8.Approval{ID: "apr_1"}
	for _, c := range []struct {
		name     string
		approval *agentg8.Approval
		from     agentg8.State
		to       agentg8.State
		want     bool
	}{
		{"allowed action created", nil, "", agentg8.StateExecuting, false},
		{"denied action created", nil, "", agentg8.StateDenied, false},
		{"allowed action ended", nil, agentg8.StateExecuting, agentg8.StateSucceeded, false},
		{"lease lost", nil, agentg8.StateExecuting, agentg8.StateOutcomeUnknown, false},
		{"outcome resolved", nil, agentg8.StateOutcomeUnknown, agentg8.StateSucceeded, true},
		{"approval requested", apr, "", agentg8.StatePendingApproval, true},
		{"approved", apr, agentg8.StatePendingApproval, agentg8.StateApproved, true},
		{"approved action ended", apr, agentg8.StateExecuting, agentg8.StateSucceeded, true},
	} {
		ch := &Change{Action: &agentg8.Action{Status: c.to, Approval: c.approval}, From: c.from}
		if got := ch.Announced(); got != c.want {
			t.Errorf("%s: announced %v, want %v", c.name, got, c.want)
		}
	}
}

// Only a new pending action with a bound is checked against it.
func TestChangeBounded(t *testing.T) {
	pending := &agentg8.Action{Status: agentg8.StatePendingApproval, Approval: &agentg8.Approval{ID: "apr_1"}}
	for _, c := range []struct {
		name string
		ch   Change
		want bool
	}{
		{"new pending, bound", Change{Action: pending, MaxPending: 2}, true},
		{"new pending, no bound", Change{Action: pending}, false},
		{"pending updated", Change{Action: pending, From: agentg8.StatePendingApproval, MaxPending: 2}, false},
		{"new executing", Change{Action: &agentg8.Action{Status: agentg8.StateExecuting}, MaxPending: 2}, false},
	} {
		if got := c.ch.Bounded(); got != c.want {
			t.Errorf("%s: bounded %v, want %v", c.name, got, c.want)
		}
	}
}
