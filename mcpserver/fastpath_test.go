package mcpserver

import (
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		`1`: true, `0`: true, `-7`: true, `9223372036854775807`: true, `"abc"`: true, `"a\u0062"`: true, `""`: true,
		`01`: false, `-0`: false, `1.5`: false, `1e3`: false, `null`: false, `true`: false, `{}`: false, `[]`: false,
		`9223372036854775808`: false, `"unterminated`: false, ``: false,
	} {
		if got := validID(jsontext.Value(id)); got != want {
			t.Errorf("validID(%s) = %v, want %v", id, got, want)
		}
	}
}

func TestAcceptsBoth(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/json, text/event-stream":             true,
		"text/event-stream;q=0.9, application/json;q=1.0": true,
		"*/*":                                  true,
		"application/*, text/*":                true,
		"application/json":                     false,
		"text/event-stream":                    false,
		"":                                     false,
		"application/jsonx, text/event-stream": false,
	} {
		if got := acceptsBoth([]string{accept}); got != want {
			t.Errorf("acceptsBoth(%q) = %v, want %v", accept, got, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:1": true, "LOCALHOST": true, "[::1]:80": true, "::1": true, "127.9.9.9": true,
		"example.com": false, "localhost.evil.example": false, "10.0.0.1:80": false, "": false, "[::2]:80": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
