package action

import (
	"regexp"
	"testing"
	"time"
)

func TestNewIDSortsByTimeAndStaysUnguessable(t *testing.T) {
	re := regexp.MustCompile(`^act_[0-9a-v]{26}$`)
	seen := map[string]bool{}
	prev := NewID("act")
	for i := 0; i < 1000; i++ {
		id := NewID("act")
		if !re.MatchString(id) {
			t.Fatalf("id %q has the wrong shape", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	time.Sleep(2 * time.Millisecond)
	if later := NewID("act"); later <= prev {
		t.Fatalf("an id made later sorts first: %q <= %q", later, prev)
	}
	// Two ids made in the same millisecond share the time prefix (10
	// characters) but not the random part.
	a, b := NewID("act"), NewID("act")
	if a[4:] == b[4:] || a[len(a)-16:] == b[len(b)-16:] {
		t.Fatalf("random parts repeat: %q %q", a, b)
	}
}
