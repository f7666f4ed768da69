package notify

import (
	"strings"
	"testing"
	"time"
)

// The signature scheme as documented (docs/approvals.md): a vector
// computed outside Go (Python's hmac) signs and verifies.
func TestSignatureVector(t *testing.T) {
	const (
		secret = "whsec_test_secret_0123"
		body   = `{"a":1}`
		want   = "t=1700000000,v1=b1e06771f9a20c020fc4b9be257996790d615bbe4d030159b6a5669fdada024c"
	)
	at := time.Unix(1700000000, 0)
	if got := sign(secret, at, []byte(body)); got != want {
		t.Fatalf("sign: %s, want %s", got, want)
	}
	if err := VerifySignature(want, []byte(body), secret, 5*time.Minute, at.Add(time.Minute)); err != nil {
		t.Errorf("verify: %v", err)
	}
	// Several v1 values (a receiver mid-rotation) pass if one matches.
	if err := VerifySignature("t=1700000000,v1=00,v1="+want[strings.Index(want, "v1=")+3:], []byte(body), secret, 5*time.Minute, at); err != nil {
		t.Errorf("verify with two v1: %v", err)
	}
	for name, c := range map[string]struct {
		header, body, secret string
		now                  time.Time
	}{
		"body changed":         {want, `{"a":2}`, secret, at},
		"other secret":         {want, body, "whsec_other_secret_0123", at},
		"too old (replayed)":   {want, body, secret, at.Add(6 * time.Minute)},
		"from the future":      {want, body, secret, at.Add(-6 * time.Minute)},
		"timestamp changed":    {strings.Replace(want, "t=1700000000", "t=1700000001", 1), body, secret, at},
		"no signature":         {"t=1700000000", body, secret, at},
		"not a signature":      {"garbage", body, secret, at},
		"signature not in hex": {"t=1700000000,v1=zz", body, secret, at},
	} {
		if err := VerifySignature(c.header, []byte(c.body), c.secret, 5*time.Minute, c.now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}
