package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxInputDepth bounds the nesting of action inputs.
const MaxInputDepth = 32

// ParseInput decodes an action input strictly: it must be valid UTF-8, one JSON
// value, with no duplicate object keys, no nesting deeper than MaxInputDepth
// and only numbers that fit (integers in int64, others in a finite float64).
// Numbers are returned as json.Number so no precision is lost on the way to
// the schema validator and policy.
func ParseInput(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("input is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the input value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder, depth int) (any, error) {
	if depth > MaxInputDepth {
		return nil, fmt.Errorf("input nests deeper than %d levels", MaxInputDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("malformed JSON: %w", err)
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("malformed JSON: object key is not a string")
				}
				if _, dup := obj[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := parseValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				obj[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %w", err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := parseValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %w", err)
			}
			return arr, nil
		}
		return nil, fmt.Errorf("malformed JSON: unexpected %q", t)
	case json.Number:
		if err := checkNumber(t); err != nil {
			return nil, err
		}
		return t, nil
	default: // string, bool, nil
		return t, nil
	}
}

func checkNumber(n json.Number) error {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("number %s does not fit in a 64-bit integer", truncate(s, 40))
		}
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return fmt.Errorf("number %s does not fit in a 64-bit float", truncate(s, 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
