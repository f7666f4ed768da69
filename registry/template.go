package registry

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Vars are the values placeholders may refer to.
type Vars struct {
	Input     any // parsed input (map[string]any with json.Number numbers)
	Principal string
	User      string
	ActionID  string
	Task      string
}

var (
	placeholderRE = regexp.MustCompile(`\$\{([^}]*)\}`)
	inputPathRE   = regexp.MustCompile(`^input(\.[A-Za-z0-9_\-]+)+$`)
)

// ref is one parsed placeholder.
type ref struct {
	root string   // input | principal.id | user.id | action.id | task.name
	path []string // for input
}

func (r ref) String() string {
	if r.root == "input" {
		return "input." + strings.Join(r.path, ".")
	}
	return r.root
}

func parseRef(s string) (ref, error) {
	switch s {
	case "principal.id", "user.id", "action.id", "task.name":
		return ref{root: s}, nil
	}
	if inputPathRE.MatchString(s) {
		return ref{root: "input", path: strings.Split(s, ".")[1:]}, nil
	}
	return ref{}, fmt.Errorf("unknown placeholder ${%s}", s)
}

// lookup returns the value a placeholder refers to; ok is false when absent.
func (r ref) lookup(v Vars) (any, bool) {
	switch r.root {
	case "principal.id":
		return v.Principal, true
	case "user.id":
		return v.User, v.User != ""
	case "action.id":
		return v.ActionID, v.ActionID != ""
	case "task.name":
		return v.Task, true
	}
	cur := v.Input
	for _, seg := range r.path {
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[seg]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, cur != nil
}

// part is a literal or a placeholder inside a template string.
type part struct {
	lit string
	ref *ref
}

// Template is a string with placeholders, parsed once at load.
type Template struct {
	raw   string
	parts []part
}

// ParseTemplate parses s; unknown placeholders are errors.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{raw: s}
	last := 0
	for _, m := range placeholderRE.FindAllStringSubmatchIndex(s, -1) {
		if m[0] > last {
			t.parts = append(t.parts, part{lit: s[last:m[0]]})
		}
		r, err := parseRef(s[m[2]:m[3]])
		if err != nil {
			return nil, err
		}
		t.parts = append(t.parts, part{ref: &r})
		last = m[1]
	}
	if last < len(s) {
		t.parts = append(t.parts, part{lit: s[last:]})
	}
	if strings.Contains(placeholderRE.ReplaceAllString(s, ""), "${") {
		return nil, fmt.Errorf("unterminated placeholder in %q", s)
	}
	return t, nil
}

// Refs lists the placeholders of t.
func (t *Template) Refs() []ref {
	var out []ref
	for _, p := range t.parts {
		if p.ref != nil {
			out = append(out, *p.ref)
		}
	}
	return out
}

// single reports whether the template is exactly one placeholder.
func (t *Template) single() *ref {
	if len(t.parts) == 1 && t.parts[0].ref != nil {
		return t.parts[0].ref
	}
	return nil
}

// RenderError is a rendering failure caused by the input (so: invalid_input).
type RenderError struct{ Msg string }

func (e *RenderError) Error() string { return e.Msg }

func renderErr(format string, a ...any) error { return &RenderError{Msg: fmt.Sprintf(format, a...)} }

// text renders a value for interpolation into a larger string.
func text(r ref, v any, ok bool) (string, error) {
	if !ok {
		return "", renderErr("%s is required to build the request", r)
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", renderErr("%s is not a scalar and cannot be placed in text", r)
}

// Render renders t as plain text, with escape applied to each value. An
// absent value is an error.
func (t *Template) Render(v Vars, escape func(ref, string) (string, error)) (string, error) {
	return t.render(v, escape, false)
}

func (t *Template) render(v Vars, escape func(ref, string) (string, error), allowMissing bool) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		val, ok := p.ref.lookup(v)
		if !ok && allowMissing {
			continue
		}
		s, err := text(*p.ref, val, ok)
		if err != nil {
			return "", err
		}
		if escape != nil {
			if s, err = escape(*p.ref, s); err != nil {
				return "", err
			}
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// RenderText renders t as human text (side effects).
func (t *Template) RenderText(v Vars) (string, error) { return t.Render(v, nil) }

// RenderHeader renders a header value; CR, LF and NUL are refused.
func (t *Template) RenderHeader(v Vars) (string, error) {
	return t.Render(v, func(r ref, s string) (string, error) {
		if strings.ContainsAny(s, "\r\n\x00") {
			return "", renderErr("%s contains a control character not allowed in a header", r)
		}
		return s, nil
	})
}

// URLTemplate is a request URL whose scheme, host and port are fixed by the
// task file; placeholders may appear only in the path and query, where each
// value is percent-encoded for its position.
type URLTemplate struct {
	origin string // scheme://host[:port]
	path   *Template
	query  *Template
}

// ParseURLTemplate parses and checks a task's URL.
func ParseURLTemplate(s string) (*URLTemplate, error) {
	i := strings.Index(s, "://")
	if i < 0 {
		return nil, fmt.Errorf("url %q is not absolute", s)
	}
	scheme := strings.ToLower(s[:i])
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("url %q: scheme must be http or https", s)
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if strings.Contains(authority, "${") {
		return nil, fmt.Errorf("url %q: placeholders are not allowed in the scheme, host or port", s)
	}
	if strings.Contains(authority, "@") {
		return nil, fmt.Errorf("url %q: userinfo is not allowed; use a credential", s)
	}
	if authority == "" {
		return nil, fmt.Errorf("url %q has no host", s)
	}
	rest = rest[end:]
	if strings.Contains(rest, "#") {
		return nil, fmt.Errorf("url %q: fragments are not allowed", s)
	}
	pathStr, queryStr, _ := strings.Cut(rest, "?")
	u := &URLTemplate{origin: scheme + "://" + authority}
	var err error
	if u.path, err = ParseTemplate(pathStr); err != nil {
		return nil, fmt.Errorf("url %q: %w", s, err)
	}
	if u.query, err = ParseTemplate(queryStr); err != nil {
		return nil, fmt.Errorf("url %q: %w", s, err)
	}
	// The literal parts must form a valid URL on their own.
	probe := u.origin + placeholderRE.ReplaceAllString(pathStr, "x")
	if queryStr != "" {
		probe += "?" + placeholderRE.ReplaceAllString(queryStr, "x")
	}
	pu, err := url.Parse(probe)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", s, err)
	}
	if pu.Host != authority {
		return nil, fmt.Errorf("url %q: malformed host", s)
	}
	return u, nil
}

// Origin returns scheme://host[:port].
func (u *URLTemplate) Origin() string { return u.origin }

// Refs lists the placeholders in the URL.
func (u *URLTemplate) Refs() []ref { return append(u.path.Refs(), u.query.Refs()...) }

// Render builds the URL. A value can never add a path segment, query
// parameter, host or scheme.
func (u *URLTemplate) Render(v Vars) (string, error) {
	p, err := u.path.Render(v, func(r ref, s string) (string, error) {
		if s == "." || s == ".." || s == "" {
			return "", renderErr("%s may not be empty, \".\" or \"..\" in a URL path", r)
		}
		return url.PathEscape(s), nil
	})
	if err != nil {
		return "", err
	}
	out := u.origin + p
	if len(u.query.parts) > 0 {
		// An absent optional value leaves its query parameter empty.
		q, err := u.query.render(v, func(_ ref, s string) (string, error) { return url.QueryEscape(s), nil }, true)
		if err != nil {
			return "", err
		}
		out += "?" + q
	}
	// Belt and braces: what we built must still point where the task says.
	pu, err := url.Parse(out)
	if err != nil || pu.Scheme+"://"+pu.Host != u.origin {
		return "", renderErr("rendered URL is malformed")
	}
	return out, nil
}

// JSONTemplate is a request body: a JSON tree whose strings may hold
// placeholders. A string that is exactly one placeholder takes the value's
// JSON type; inside a larger string the value is interpolated as text.
type JSONTemplate struct{ node any }

// ParseJSONTemplate compiles a body tree decoded from YAML.
func ParseJSONTemplate(v any) (*JSONTemplate, error) {
	n, err := compileNode(v)
	if err != nil {
		return nil, err
	}
	return &JSONTemplate{node: n}, nil
}

type objNode struct {
	keys []string
	vals []any
}

func compileNode(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return ParseTemplate(x)
	case map[string]any:
		o := &objNode{}
		for k, val := range x {
			if strings.Contains(k, "${") {
				return nil, fmt.Errorf("placeholders are not allowed in object keys (%q)", k)
			}
			n, err := compileNode(val)
			if err != nil {
				return nil, err
			}
			o.keys = append(o.keys, k)
			o.vals = append(o.vals, n)
		}
		return o, nil
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			n, err := compileNode(val)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case nil, bool, json.Number:
		return x, nil
	case int, int64, uint64, float64:
		return json.Number(fmt.Sprint(x)), nil
	}
	return nil, fmt.Errorf("unsupported value %T in body", v)
}

// Refs lists the placeholders in the body.
func (j *JSONTemplate) Refs() []ref {
	var out []ref
	var walk func(any)
	walk = func(n any) {
		switch x := n.(type) {
		case *Template:
			out = append(out, x.Refs()...)
		case *objNode:
			for _, v := range x.vals {
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(j.node)
	return out
}

// Render builds the body as a JSON tree; a whole-value placeholder whose
// value is absent omits its key.
func (j *JSONTemplate) Render(v Vars) (any, error) {
	out, _, err := renderNode(j.node, v)
	return out, err
}

func renderNode(n any, v Vars) (any, bool, error) {
	switch x := n.(type) {
	case *Template:
		if r := x.single(); r != nil {
			val, ok := r.lookup(v)
			return val, ok, nil
		}
		s, err := x.Render(v, nil)
		return s, true, err
	case *objNode:
		m := make(map[string]any, len(x.keys))
		for i, k := range x.keys {
			val, ok, err := renderNode(x.vals[i], v)
			if err != nil {
				return nil, false, err
			}
			if ok {
				m[k] = val
			}
		}
		return m, true, nil
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			val, _, err := renderNode(e, v)
			if err != nil {
				return nil, false, err
			}
			out = append(out, val)
		}
		return out, true, nil
	}
	return n, true, nil
}
