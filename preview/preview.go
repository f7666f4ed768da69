// Package preview computes what a mutating action would change: it applies
// a task's declared patch (RFC 6902 JSON Patch or RFC 7386 merge patch) to
// the live current state, and describes the difference as RFC 6902
// operations (with old values) plus a short human summary.
package preview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/wI2L/jsondiff"
)

// Op is one change from current to proposed.
type Op struct {
	Op       string          `json:"op"`
	Path     string          `json:"path"`
	Value    json.RawMessage `json:"value,omitempty"`
	OldValue json.RawMessage `json:"old_value,omitempty"`
}

// Apply returns current with the patch applied. merge selects RFC 7386.
func Apply(current, patch []byte, merge bool) ([]byte, error) {
	if merge {
		out, err := jsonpatch.MergePatch(current, patch)
		if err != nil {
			return nil, fmt.Errorf("merge patch: %w", err)
		}
		return out, nil
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, fmt.Errorf("json patch: %w", err)
	}
	opts := jsonpatch.NewApplyOptions()
	opts.EnsurePathExistsOnAdd = true // "add /notes/-" on a record without notes
	out, err := p.ApplyWithOptions(current, opts)
	if err != nil {
		return nil, fmt.Errorf("json patch: %w", err)
	}
	return out, nil
}

// Diff describes the change from current to proposed.
func Diff(current, proposed []byte) ([]Op, []string, error) {
	patch, err := jsondiff.CompareJSON(current, proposed)
	if err != nil {
		return nil, nil, fmt.Errorf("diff: %w", err)
	}
	ops := make([]Op, 0, len(patch))
	var summary []string
	var cur any
	_ = json.Unmarshal(current, &cur)
	appended := map[string]int{}
	for _, o := range patch {
		op := Op{Op: o.Type, Path: o.Path}
		// Name appended elements by index ("/notes/1", not "/notes/-"), as
		// people read them.
		if parent, ok := strings.CutSuffix(o.Path, "/-"); ok && o.Type == jsondiff.OperationAdd {
			if arr, ok := lookup(cur, parent).([]any); ok {
				op.Path = fmt.Sprintf("%s/%d", parent, len(arr)+appended[parent])
				appended[parent]++
			}
		}
		if o.Type == jsondiff.OperationAdd || o.Type == jsondiff.OperationReplace {
			op.Value, _ = json.Marshal(o.Value)
		}
		if o.Type == jsondiff.OperationReplace || o.Type == jsondiff.OperationRemove {
			op.OldValue, _ = json.Marshal(o.OldValue)
		}
		ops = append(ops, op)
		summary = append(summary, describe(op))
	}
	return ops, summary, nil
}

func short(b json.RawMessage) string {
	s := string(b)
	if len(s) > 80 {
		s = s[:77] + "…"
	}
	return s
}

func describe(o Op) string {
	path := o.Path
	if path == "" {
		path = "/"
	}
	switch o.Op {
	case "add":
		return fmt.Sprintf("add %s = %s", path, short(o.Value))
	case "remove":
		return fmt.Sprintf("remove %s (was %s)", path, short(o.OldValue))
	case "replace":
		return fmt.Sprintf("change %s from %s to %s", path, short(o.OldValue), short(o.Value))
	}
	return o.Op + " " + path
}

// Pretty indents JSON for display; invalid JSON is returned as is.
func Pretty(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return strings.TrimRight(out.String(), "\n") + "\n"
}

// lookup resolves a JSON Pointer in a decoded document; nil if absent.
func lookup(v any, pointer string) any {
	if pointer == "" {
		return v
	}
	for _, seg := range strings.Split(pointer[1:], "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		switch c := v.(type) {
		case map[string]any:
			v = c[seg]
		case []any:
			var i int
			if _, err := fmt.Sscan(seg, &i); err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}
