// Package store holds what every persistence adapter shares. The contracts
// themselves are declared by their users (action.Store, audit.Store,
// audit.Reader); adapters live in sub-packages (sqlite, later postgres) and
// all pass the storetest conformance suite.
package store

import (
	"fmt"
	"strings"
)

// Kind returns the adapter a store URL names: "sqlite" or "postgres".
func Kind(url string) (kind, rest string, err error) {
	switch {
	case strings.HasPrefix(url, "sqlite:"):
		return "sqlite", strings.TrimPrefix(url, "sqlite:"), nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return "postgres", url, nil
	}
	// Only the scheme is repeated: the rest may hold a password.
	scheme, _, _ := strings.Cut(url, ":")
	return "", "", fmt.Errorf("store %q…: must be sqlite:PATH or postgres://…", scheme)
}
