package main

import (
	"runtime/debug"
	"testing"
)

// The server collects garbage at gcPercent, unless GOGC says otherwise.
func TestServeSetsGCUnlessGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	restore := setGC(func(string) (string, bool) { return "", false })
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	debug.SetGCPercent(gcPercent)
	restore()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after restore: GC percent %d, want 100", got)
	}

	debug.SetGCPercent(123) // as the runtime read GOGC=123
	setGC(func(k string) (string, bool) { return "123", k == "GOGC" })()
	if got := debug.SetGCPercent(100); got != 123 {
		t.Errorf("GOGC=123: GC percent %d, want 123", got)
	}
}
