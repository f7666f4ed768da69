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
