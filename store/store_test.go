package store

import (
	"strings"
	"testing"
)

func TestKind(t *testing.T) {
	for url, want := range map[string]string{"sqlite:a.db": "sqlite", "postgres://h/db": "postgres", "postgresql://h/db": "postgres"} {
		if k, _, err := Kind(url); err != nil || k != want {
			t.Errorf("%s: %s %v", url, k, err)
		}
	}
	// A mistyped scheme is named; the password after it is not repeated.
	_, _, err := Kind("postgress://agentg8:hunter2-pw@db/agentg8")
	if err == nil || !strings.Contains(err.Error(), `"postgress"`) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}
