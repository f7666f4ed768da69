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

	"github.com/go-json-experiment/json/jsontext"
)

// MaxInputDepth bounds the nesting of action inputs.
const MaxInputDepth = 32

// ParseInput decodes an action input strictly: one JSON value, valid UTF-8
// (lone surrogate escapes included), no duplicate object keys, no nesting
// deeper than MaxInputDepth, and only numbers that fit (integers in int64,
// others in a finite float64). Numbers are returned as json.Number so no
// precision is lost on the way to the schema validator and policy.
//
// jsontext (already a dependency of cedar-go) rejects duplicate names and
// invalid UTF-8 by default, and reads tokens without encoding/json's
// per-token overhead.
func ParseInput(data []byte) (any, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errors.New("unexpected data after the input value")
	}
	return v, nil
}

func syntaxErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("malformed JSON: unexpected end of input")
	}
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		return fmt.Errorf("malformed JSON: %v", se.Err)
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

func parseValue(dec *jsontext.Decoder) (any, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, syntaxErr(err)
	}
	if dec.StackDepth() > MaxInputDepth {
		return nil, fmt.Errorf("input nests deeper than %d levels", MaxInputDepth)
	}
	switch tok.Kind() {
	case '{':
		obj := map[string]any{}
		for dec.PeekKind() != '}' {
			kt, err := dec.ReadToken()
			if err != nil {
				return nil, syntaxErr(err)
			}
			k := kt.String()
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			obj[k] = v
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, syntaxErr(err)
		}
		return obj, nil
	case '[':
		arr := []any{}
		for dec.PeekKind() != ']' {
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, syntaxErr(err)
		}
		return arr, nil
	case '"':
		return tok.String(), nil
	case '0':
		n := json.Number(tok.String())
		if err := checkNumber(n); err != nil {
			return nil, err
		}
		return n, nil
	case 't', 'f':
		return tok.Bool(), nil
	case 'n':
		return nil, nil
	}
	return nil, fmt.Errorf("malformed JSON: unexpected %v", tok.Kind())
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
