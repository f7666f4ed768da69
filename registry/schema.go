package registry

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/agentg8/agentg8"
)

type compiledSchema struct{ s *jsonschema.Schema }

// noRemote refuses every $ref that leaves the task file.
type noRemote struct{}

func (noRemote) Load(url string) (any, error) {
	return nil, fmt.Errorf("remote $ref %q is not allowed", url)
}

func compileSchema(name string, raw []byte) (*compiledSchema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if m, ok := doc.(map[string]any); !ok || m["type"] != "object" {
		return nil, errors.New(`must be a schema with type: object`)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noRemote{})
	loc := "urn:agentg8:task:" + name
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON Schema: %s", firstLine(err.Error()))
	}
	return &compiledSchema{s: s}, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

var printer = message.NewPrinter(language.English)

// ValidateInput parses raw strictly and checks it against the task's schema.
// The error is an *agentg8.Error with code invalid_input and one entry per
// problem.
func (t *Task) ValidateInput(raw []byte) (any, error) {
	v, err := ParseInput(raw)
	if err != nil {
		return nil, &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "input is not acceptable JSON",
			Errors: []agentg8.FieldError{{Path: "", Message: err.Error()}}}
	}
	if err := t.schema.s.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return nil, &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "input does not match the task's schema"}
		}
		var fes []agentg8.FieldError
		collectLeaves(ve, &fes)
		sort.SliceStable(fes, func(i, j int) bool { return fes[i].Path < fes[j].Path })
		return nil, &agentg8.Error{Code: agentg8.CodeInvalidInput, Message: "input does not match the task's schema", Errors: fes}
	}
	return v, nil
}

func collectLeaves(e *jsonschema.ValidationError, out *[]agentg8.FieldError) {
	if len(e.Causes) == 0 {
		*out = append(*out, agentg8.FieldError{Path: jsonPointer(e.InstanceLocation), Message: e.ErrorKind.LocalizedString(printer)})
		return
	}
	for _, c := range e.Causes {
		collectLeaves(c, out)
	}
}

func jsonPointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}
