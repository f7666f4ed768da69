package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/preview"
)

// isTerminal reports whether w is a terminal (for colour).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const (
	red   = "\x1b[31m"
	green = "\x1b[32m"
	cyan  = "\x1b[36m"
	bold  = "\x1b[1m"
	reset = "\x1b[0m"
)

// printPreview writes a preview for people: what would happen, the request,
// the side effects and a unified diff of current against proposed state.
func printPreview(w io.Writer, a *agentg8.Action, color bool) {
	paint := func(c, s string) string {
		if !color {
			return s
		}
		return c + s + reset
	}
	pv := a.Preview
	if pv == nil {
		fmt.Fprintf(w, "%s is %s (no preview)\n", a.ID, a.Status)
		return
	}
	outcome := strings.ReplaceAll(pv.Outcome, "_", " ")
	fmt.Fprintf(w, "%s %s — %s\n", paint(bold, "Dry run of "+a.Task), a.ID, outcome)
	for _, r := range pv.Required {
		fmt.Fprintf(w, "  needs %d approver(s) from %s (rule %s)\n", r.Quorum, r.Group, r.Rule)
	}
	if len(pv.Policies) > 0 {
		fmt.Fprintf(w, "  decided by: %s\n", strings.Join(pv.Policies, ", "))
	}
	if r := pv.Request; r != nil {
		fmt.Fprintf(w, "\n%s\n  %s %s\n", paint(bold, "Request"), r.Method, r.URL)
		for k, v := range r.Headers {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
		if len(r.Body) > 0 {
			fmt.Fprintf(w, "  %s\n", r.Body)
		}
	}
	if len(pv.SideEffects) > 0 {
		fmt.Fprintf(w, "\n%s\n", paint(bold, "Side effects"))
		for _, s := range pv.SideEffects {
			fmt.Fprintf(w, "  - %s\n", s)
		}
	}
	if pv.Error != "" {
		fmt.Fprintf(w, "\n%s %s\n", paint(red, "Preview incomplete:"), pv.Error)
	}
	if len(pv.Summary) > 0 {
		fmt.Fprintf(w, "\n%s\n", paint(bold, "Changes"))
		for _, s := range pv.Summary {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if pv.Current != nil && pv.Proposed != nil {
		ud := difflib.UnifiedDiff{A: difflib.SplitLines(preview.Pretty(pv.Current)), B: difflib.SplitLines(preview.Pretty(pv.Proposed)),
			FromFile: "current", ToFile: "proposed", Context: 3}
		text, err := difflib.GetUnifiedDiffString(ud)
		if err == nil && text != "" {
			fmt.Fprintln(w)
			for _, line := range strings.SplitAfter(text, "\n") {
				switch {
				case strings.HasPrefix(line, "+++"), strings.HasPrefix(line, "---"):
					fmt.Fprint(w, paint(bold, line))
				case strings.HasPrefix(line, "+"):
					fmt.Fprint(w, paint(green, line))
				case strings.HasPrefix(line, "-"):
					fmt.Fprint(w, paint(red, line))
				case strings.HasPrefix(line, "@@"):
					fmt.Fprint(w, paint(cyan, line))
				default:
					fmt.Fprint(w, line)
				}
			}
		}
	}
}
