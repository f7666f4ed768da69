package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
	"unicode"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/agentg8/agentg8/preview"
)

// reveal escapes agent-supplied text and makes invisible characters visible:
// bidi controls, zero-width characters and other format or control runes are
// shown as ⟦U+XXXX⟧, so a reviewer sees exactly what the agent sent.
func reveal(s string) template.HTML {
	var b strings.Builder
	for _, r := range s {
		if r != '\n' && r != '\t' && (unicode.Is(unicode.Cf, r) || unicode.IsControl(r) || r == '\u2028' || r == '\u2029') {
			fmt.Fprintf(&b, `<span class="invisible" title="invisible character">⟦U+%04X⟧</span>`, r)
			continue
		}
		b.WriteString(template.HTMLEscapeString(string(r)))
	}
	return template.HTML(b.String())
}

func prettyJSON(v any) string {
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		raw, _ = json.Marshal(v)
	}
	if len(raw) == 0 {
		return ""
	}
	var out bytes.Buffer
	if json.Indent(&out, raw, "", "  ") != nil {
		return string(raw)
	}
	return out.String()
}

type diffLine struct {
	Class, Text string
}

// diffLines is a unified diff of current against proposed state, by line.
func diffLines(current, proposed json.RawMessage) []diffLine {
	if len(current) == 0 || len(proposed) == 0 {
		return nil
	}
	ud := difflib.UnifiedDiff{A: difflib.SplitLines(preview.Pretty(current)), B: difflib.SplitLines(preview.Pretty(proposed)),
		FromFile: "current", ToFile: "proposed", Context: 3}
	text, err := difflib.GetUnifiedDiffString(ud)
	if err != nil {
		return nil
	}
	var out []diffLine
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		c := "ctx"
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
			c = "file"
		case strings.HasPrefix(l, "+"):
			c = "add"
		case strings.HasPrefix(l, "-"):
			c = "del"
		case strings.HasPrefix(l, "@@"):
			c = "hunk"
		}
		out = append(out, diffLine{Class: c, Text: l})
	}
	return out
}

func since(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
