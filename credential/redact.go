package credential

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
)

// Redacted replaces every secret occurrence.
const Redacted = "[REDACTED]"

// Redactor replaces secrets, raw and in common encodings, with [REDACTED].
type Redactor struct{ needles [][]byte }

// NewRedactor prepares a redactor for the given secrets.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	seen := map[string]bool{}
	add := func(s string) {
		if len(s) >= 4 && !seen[s] {
			seen[s] = true
			r.needles = append(r.needles, []byte(s))
		}
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		add(s)
		b := []byte(s)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString(b))
		}
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
		add(hex.EncodeToString(b))
		add(strings.ToUpper(hex.EncodeToString(b)))
		if j, err := json.Marshal(s); err == nil {
			add(string(j[1 : len(j)-1]))
		}
		// HTML-escaped JSON (Go's default encoder) escapes <, > and &.
		var jb bytes.Buffer
		enc := json.NewEncoder(&jb)
		enc.SetEscapeHTML(true)
		if enc.Encode(s) == nil {
			j := bytes.TrimSpace(jb.Bytes())
			add(string(j[1 : len(j)-1]))
		}
	}
	// Longest first, so an encoding that contains the raw secret is replaced whole.
	for i := 1; i < len(r.needles); i++ {
		for j := i; j > 0 && len(r.needles[j]) > len(r.needles[j-1]); j-- {
			r.needles[j], r.needles[j-1] = r.needles[j-1], r.needles[j]
		}
	}
	return r
}

// Redact returns b with every secret replaced. b is not modified.
func (r *Redactor) Redact(b []byte) []byte {
	if r == nil {
		return b
	}
	for _, n := range r.needles {
		if bytes.Contains(b, n) {
			b = bytes.ReplaceAll(b, n, []byte(Redacted))
		}
	}
	return b
}

// RedactString is Redact for strings.
func (r *Redactor) RedactString(s string) string { return string(r.Redact([]byte(s))) }
