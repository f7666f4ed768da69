// Package registry loads operators' task files, compiles their input schemas
// (JSON Schema 2020-12) and renders their requests safely from placeholders.
// It is the gate that turns an agent's proposal (a task name and raw JSON)
// into a known task and a validated input.
package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/agentg8/agentg8"
)

// NameRE is the shape of a task name.
var NameRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

// Approval modes.
const (
	ApprovalNever  = "never"
	ApprovalPolicy = "policy"
	ApprovalAlways = "always"
)

// Default and maximum bounds for upstream calls.
const (
	DefaultTimeout          = 10 * time.Second
	MaxTimeout              = 5 * time.Minute
	DefaultMaxResponseBytes = 1 << 20
)

// File is a task as written in YAML (SPEC §2.2). Unknown keys are errors.
type File struct {
	Name        string         `yaml:"name" json:"name"`
	Description string         `yaml:"description" json:"description"`
	Risk        string         `yaml:"risk" json:"risk"`
	Input       map[string]any `yaml:"input" json:"input"`
	Resource    string         `yaml:"resource" json:"resource,omitempty"`
	Approval    string         `yaml:"approval" json:"approval,omitempty"`
	Approvers   []string       `yaml:"approvers" json:"approvers,omitempty"`
	Credential  string         `yaml:"credential" json:"credential,omitempty"`
	Scopes      []string       `yaml:"scopes" json:"scopes,omitempty"`
	Request     RequestFile    `yaml:"request" json:"request"`
	// MCP executes the task as a tool of an upstream MCP server, instead
	// of request. omitempty keeps the hash of HTTP tasks as it was.
	MCP     *MCPFile     `yaml:"mcp" json:"mcp,omitempty"`
	Preview *PreviewFile `yaml:"preview" json:"preview,omitempty"`
	Output  OutputFile   `yaml:"output" json:"output"`
}

// RequestFile is how a task executes over HTTP.
type RequestFile struct {
	Method            string            `yaml:"method" json:"method"`
	URL               string            `yaml:"url" json:"url"`
	Headers           map[string]string `yaml:"headers" json:"headers,omitempty"`
	Body              any               `yaml:"body" json:"body,omitempty"`
	Timeout           string            `yaml:"timeout" json:"timeout,omitempty"`
	IdempotencyHeader string            `yaml:"idempotency_header" json:"idempotency_header,omitempty"`
	FollowRedirects   bool              `yaml:"follow_redirects" json:"follow_redirects,omitempty"`
	MaxResponseBytes  int64             `yaml:"max_response_bytes" json:"max_response_bytes,omitempty"`
}

// MCPFile is how a task executes as one tool of an upstream MCP server
// (Streamable HTTP). The tool is fixed by the task file: an agent can never
// reach another tool of that server.
type MCPFile struct {
	URL     string            `yaml:"url" json:"url"`
	Tool    string            `yaml:"tool" json:"tool"`
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Arguments is a JSON template; omitted, the validated input is sent.
	Arguments        any    `yaml:"arguments" json:"arguments,omitempty"`
	Timeout          string `yaml:"timeout" json:"timeout,omitempty"`
	IdempotencyMeta  string `yaml:"idempotency_meta" json:"idempotency_meta,omitempty"`
	MaxResponseBytes int64  `yaml:"max_response_bytes" json:"max_response_bytes,omitempty"`
}

// PreviewFile declares how to preview a mutating task.
type PreviewFile struct {
	SideEffects []string         `yaml:"side_effects" json:"side_effects,omitempty"`
	Current     *CurrentFile     `yaml:"current" json:"current,omitempty"`
	Patch       []map[string]any `yaml:"patch" json:"patch,omitempty"`
	MergePatch  map[string]any   `yaml:"merge_patch" json:"merge_patch,omitempty"`
}

// CurrentFile is the read that fetches current state for a preview: an
// HTTP GET/HEAD, or for an mcp task a read tool of the same server.
type CurrentFile struct {
	Method  string            `yaml:"method" json:"method"`
	URL     string            `yaml:"url" json:"url"`
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Tool and Arguments: a tool call instead of method and url.
	Tool      string `yaml:"tool" json:"tool,omitempty"`
	Arguments any    `yaml:"arguments" json:"arguments,omitempty"`
}

// OutputFile shapes what the agent sees of the upstream response.
type OutputFile struct {
	Select string   `yaml:"select" json:"select,omitempty"`
	Redact []string `yaml:"redact" json:"redact,omitempty"`
}

// Task is a loaded, checked task ready to validate inputs and render requests.
type Task struct {
	File
	// Path is the file the task came from.
	Path string
	// Hash is "sha256:<hex>" over the task's normalized definition.
	Hash string
	// Namespace is the name up to its last dot.
	Namespace string

	Timeout      time.Duration
	ResourceType string
	resourceID   *Template
	url          *URLTemplate
	headers      map[string]*Template
	body         *JSONTemplate
	args         *JSONTemplate // MCP arguments; nil sends the input
	sideEffects  []*Template
	current      *URLTemplate
	currentHdrs  map[string]*Template
	currentArgs  *JSONTemplate // arguments of preview.current.tool
	patch        *JSONTemplate
	mergePatch   bool
	schema       *compiledSchema
	schemaJSON   json.RawMessage
}

// InputSchema returns the task's input schema as JSON.
func (t *Task) InputSchema() json.RawMessage { return t.schemaJSON }

// CredentialInfo is what the registry needs to know of a credential.
type CredentialInfo struct {
	// Scopes the credential may grant; nil when it has no scopes.
	Scopes []string
}

// Registry holds the loaded tasks. It is immutable once loaded.
type Registry struct {
	tasks map[string]*Task
	names []string
}

// Lookup returns the task with exactly this name. No normalization is done:
// case, Unicode look-alikes, trailing dots and invisible characters all miss.
func (r *Registry) Lookup(name string) (*Task, bool) {
	t, ok := r.tasks[name]
	return t, ok
}

// Tasks returns all tasks sorted by name.
func (r *Registry) Tasks() []*Task {
	out := make([]*Task, 0, len(r.names))
	for _, n := range r.names {
		out = append(out, r.tasks[n])
	}
	return out
}

// LoadError is a problem in a task file, located by file and line.
type LoadError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *LoadError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// Load reads every *.yaml and *.yml file in dir. It returns all problems
// found, joined, so an operator fixes them in one pass.
func Load(dir string, creds map[string]CredentialInfo) (*Registry, error) {
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("tasks folder: %w", err)
	}
	contents := map[string][]byte{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		contents[f] = data
	}
	r, err := New(contents, creds)
	return r, errors.Join(append(errs, err)...)
}

// New builds a registry from task files already in memory, keyed by path.
func New(files map[string][]byte, creds map[string]CredentialInfo) (*Registry, error) {
	r := &Registry{tasks: map[string]*Task{}}
	var errs []error
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tasks, err := parseFile(n, files[n], creds)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, t := range tasks {
			if prev, dup := r.tasks[t.Name]; dup {
				errs = append(errs, &LoadError{File: n, Key: "name", Msg: fmt.Sprintf("task %q is also defined in %s", t.Name, prev.Path)})
				continue
			}
			r.tasks[t.Name] = t
			r.names = append(r.names, t.Name)
		}
	}
	sort.Strings(r.names)
	return r, errors.Join(errs...)
}

func parseFile(path string, data []byte, creds map[string]CredentialInfo) ([]*Task, error) {
	af, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(path, err)
	}
	isList := len(af.Docs) > 0 && af.Docs[0].Body != nil && af.Docs[0].Body.Type() == ast.SequenceType
	var fs []File
	if isList {
		err = yaml.UnmarshalWithOptions(data, &fs, yaml.Strict())
	} else {
		var f File
		err = yaml.UnmarshalWithOptions(data, &f, yaml.Strict())
		fs = []File{f}
	}
	if err != nil {
		return nil, yamlError(path, err)
	}
	var out []*Task
	var errs []error
	for i, f := range fs {
		prefix := "$"
		if isList {
			prefix = fmt.Sprintf("$[%d]", i)
		}
		t, err := compileTask(f, creds)
		if err != nil {
			var le *LoadError
			if errors.As(err, &le) {
				le.File = path
				le.Line = lineOf(af, prefix, le.Key)
			}
			errs = append(errs, err)
			continue
		}
		t.Path = path
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

var yamlPosRE = regexp.MustCompile(`^\[(\d+):(\d+)\]\s*`)

func yamlError(path string, err error) error {
	msg := yaml.FormatError(err, false, false)
	line := 0
	if m := yamlPosRE.FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &line)
		msg = msg[len(m[0]):]
	}
	msg, _, _ = strings.Cut(msg, "\n")
	return &LoadError{File: path, Line: line, Msg: msg}
}

// lineOf finds the line of a dotted key under prefix; 0 when unknown.
func lineOf(f *ast.File, prefix, key string) int {
	for k := key; k != ""; {
		p, err := yaml.PathString(prefix + "." + k)
		if err == nil {
			if n, err := p.FilterFile(f); err == nil && n != nil {
				return n.GetToken().Position.Line
			}
		}
		i := strings.LastIndex(k, ".")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

func keyErr(key, format string, a ...any) error {
	return &LoadError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

var resourceRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)::"(.*)"$`)

var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

func compileTask(f File, creds map[string]CredentialInfo) (*Task, error) {
	if !NameRE.MatchString(f.Name) {
		return nil, keyErr("name", "%q must match %s", f.Name, NameRE)
	}
	if strings.TrimSpace(f.Description) == "" {
		return nil, keyErr("description", "is required (the model reads it)")
	}
	switch agentg8.Risk(f.Risk) {
	case agentg8.RiskRead, agentg8.RiskWrite, agentg8.RiskDestructive:
	default:
		return nil, keyErr("risk", "must be read, write or destructive, not %q", f.Risk)
	}
	t := &Task{File: f, Namespace: f.Name[:strings.LastIndex(f.Name, ".")]}
	if t.Approval == "" {
		t.Approval = ApprovalPolicy
	}
	switch t.Approval {
	case ApprovalNever, ApprovalPolicy:
		if len(t.Approvers) > 0 && t.Approval == ApprovalNever {
			return nil, keyErr("approvers", "set, but approval is never")
		}
	case ApprovalAlways:
		if len(t.Approvers) == 0 {
			return nil, keyErr("approvers", "approval: always needs at least one approver group")
		}
	default:
		return nil, keyErr("approval", "must be never, policy or always, not %q", t.Approval)
	}

	// Schema.
	if f.Input == nil {
		return nil, keyErr("input", "is required (a JSON Schema for the task's input)")
	}
	raw, err := json.Marshal(f.Input)
	if err != nil {
		return nil, keyErr("input", "%v", err)
	}
	if t.schema, err = compileSchema(f.Name, raw); err != nil {
		return nil, keyErr("input", "%v", err)
	}
	t.schemaJSON = raw
	var schemaDoc any
	if err := json.Unmarshal(raw, &schemaDoc); err != nil {
		return nil, keyErr("input", "%v", err)
	}
	checkRefs := func(key string, refs []ref) error {
		for _, r := range refs {
			if r.root == "input" && !schemaHasPath(schemaDoc, r.path) {
				return keyErr(key, "placeholder ${%s} names no property of the input schema", r)
			}
		}
		return nil
	}

	// Resource.
	if f.Resource == "" {
		t.ResourceType = "Task"
		t.resourceID, _ = ParseTemplate(f.Name)
	} else {
		m := resourceRE.FindStringSubmatch(f.Resource)
		if m == nil {
			return nil, keyErr("resource", "must look like Type::\"id\", not %q", f.Resource)
		}
		t.ResourceType = m[1]
		if t.resourceID, err = ParseTemplate(m[2]); err != nil {
			return nil, keyErr("resource", "%v", err)
		}
		if err := checkRefs("resource", t.resourceID.Refs()); err != nil {
			return nil, err
		}
	}

	// Credential.
	if f.Credential != "" {
		ci, ok := creds[f.Credential]
		if !ok {
			return nil, keyErr("credential", "names credential %q, which the server config does not define", f.Credential)
		}
		for _, s := range f.Scopes {
			if !slices.Contains(ci.Scopes, s) {
				return nil, keyErr("scopes", "scope %q is not granted by credential %q (a task may narrow scopes, never widen them)", s, f.Credential)
			}
		}
	} else if len(f.Scopes) > 0 {
		return nil, keyErr("scopes", "set without a credential")
	}

	// Request.
	if f.MCP != nil {
		if !reflect.DeepEqual(f.Request, RequestFile{}) {
			return nil, keyErr("mcp", "a task executes by request or by mcp, not both")
		}
		if err := t.compileMCP(checkRefs); err != nil {
			return nil, err
		}
	} else if err := t.compileRequest(checkRefs); err != nil {
		return nil, err
	}

	// Preview (rendered by the dry-run feature; checked now).
	if p := f.Preview; p != nil {
		for i, s := range p.SideEffects {
			tp, err := ParseTemplate(s)
			if err != nil {
				return nil, keyErr("preview.side_effects", "%d: %v", i, err)
			}
			if err := checkRefs("preview.side_effects", tp.Refs()); err != nil {
				return nil, err
			}
			t.sideEffects = append(t.sideEffects, tp)
		}
		if p.Current != nil && p.Current.Tool != "" {
			if err := t.compileCurrentTool(checkRefs); err != nil {
				return nil, err
			}
		} else if p.Current != nil {
			if p.Current.Arguments != nil {
				return nil, keyErr("preview.current.arguments", "set without preview.current.tool")
			}
			m := strings.ToUpper(p.Current.Method)
			if m == "" {
				m = http.MethodGet
			}
			if m != http.MethodGet && m != http.MethodHead {
				return nil, keyErr("preview.current.method", "must be GET or HEAD (a preview never mutates)")
			}
			t.Preview.Current.Method = m
			if t.current, err = ParseURLTemplate(p.Current.URL); err != nil {
				return nil, keyErr("preview.current.url", "%v", err)
			}
			if err := checkRefs("preview.current.url", t.current.Refs()); err != nil {
				return nil, err
			}
			t.currentHdrs = map[string]*Template{}
			for k, v := range p.Current.Headers {
				tp, err := ParseTemplate(v)
				if err != nil || !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
					return nil, keyErr("preview.current.headers", "invalid header %q", k)
				}
				if err := checkRefs("preview.current.headers", tp.Refs()); err != nil {
					return nil, err
				}
				t.currentHdrs[http.CanonicalHeaderKey(k)] = tp
			}
		}
		if p.Patch != nil && p.MergePatch != nil {
			return nil, keyErr("preview.patch", "use patch or merge_patch, not both")
		}
		if (p.Patch != nil || p.MergePatch != nil) && p.Current == nil {
			return nil, keyErr("preview.patch", "a patch needs preview.current to apply to")
		}
		var tree any = p.MergePatch
		key := "preview.merge_patch"
		if p.Patch != nil {
			tree, key = p.Patch, "preview.patch"
			for i, op := range p.Patch {
				switch op["op"] {
				case "add", "remove", "replace", "move", "copy", "test":
				default:
					return nil, keyErr(key, "operation %d: op must be add, remove, replace, move, copy or test", i)
				}
				if _, ok := op["path"].(string); !ok {
					return nil, keyErr(key, "operation %d: path is required", i)
				}
			}
		}
		if p.Patch != nil || p.MergePatch != nil {
			if t.patch, err = compileJSON(key, tree, checkRefs); err != nil {
				return nil, err
			}
			t.mergePatch = p.Patch == nil
		}
	}

	// Output.
	if s := f.Output.Select; s != "" && !strings.HasPrefix(s, "/") {
		return nil, keyErr("output.select", "must be a JSON Pointer starting with /")
	}
	for _, s := range f.Output.Redact {
		if !strings.HasPrefix(s, "/") {
			return nil, keyErr("output.redact", "%q must be a JSON Pointer starting with /", s)
		}
	}

	canon, err := json.Marshal(t.File)
	if err != nil {
		return nil, keyErr("", "%v", err)
	}
	sum := sha256.Sum256(canon)
	t.Hash = "sha256:" + hex.EncodeToString(sum[:])
	return t, nil
}

// compileRequest checks and compiles an HTTP task's request.
func (t *Task) compileRequest(checkRefs func(string, []ref) error) error {
	var err error
	rq := t.File.Request
	t.Request.Method = strings.ToUpper(rq.Method)
	if !slices.Contains(methods, t.Request.Method) {
		return keyErr("request.method", "must be one of %s, not %q", strings.Join(methods, ", "), rq.Method)
	}
	if t.url, err = ParseURLTemplate(rq.URL); err != nil {
		return keyErr("request.url", "%v", err)
	}
	if err := checkRefs("request.url", t.url.Refs()); err != nil {
		return err
	}
	if t.headers, err = compileHeaders("request.headers", rq.Headers, checkRefs); err != nil {
		return err
	}
	if rq.Body != nil {
		if t.Request.Method == http.MethodGet || t.Request.Method == http.MethodHead {
			return keyErr("request.body", "a %s request cannot have a body", t.Request.Method)
		}
		if t.body, err = compileJSON("request.body", rq.Body, checkRefs); err != nil {
			return err
		}
	}
	if t.Timeout, err = parseTimeout("request.timeout", rq.Timeout); err != nil {
		return err
	}
	if rq.IdempotencyHeader != "" && !validHeaderName(rq.IdempotencyHeader) {
		return keyErr("request.idempotency_header", "invalid header name %q", rq.IdempotencyHeader)
	}
	if rq.MaxResponseBytes < 0 {
		return keyErr("request.max_response_bytes", "must be positive")
	}
	if rq.MaxResponseBytes == 0 {
		t.Request.MaxResponseBytes = DefaultMaxResponseBytes
	}
	return nil
}

// compileHeaders compiles header templates; key names the block.
func compileHeaders(key string, headers map[string]string, checkRefs func(string, []ref) error) (map[string]*Template, error) {
	out := map[string]*Template{}
	for k, v := range headers {
		if !validHeaderName(k) {
			return nil, keyErr(key, "invalid header name %q", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, keyErr(key+"."+k, "contains a control character")
		}
		tp, err := ParseTemplate(v)
		if err != nil {
			return nil, keyErr(key+"."+k, "%v", err)
		}
		if err := checkRefs(key+"."+k, tp.Refs()); err != nil {
			return nil, err
		}
		out[http.CanonicalHeaderKey(k)] = tp
	}
	return out, nil
}

// compileJSON compiles a JSON template written in YAML; key names it.
func compileJSON(key string, v any, checkRefs func(string, []ref) error) (*JSONTemplate, error) {
	norm, err := normalizeJSON(v)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	tp, err := ParseJSONTemplate(norm)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	return tp, checkRefs(key, tp.Refs())
}

// compileArguments compiles a tool call's arguments template: an object,
// or nil when absent.
func compileArguments(key string, v any, checkRefs func(string, []ref) error) (*JSONTemplate, error) {
	if v == nil {
		return nil, nil
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, keyErr(key, "must be an object (a tool's arguments are named)")
	}
	return compileJSON(key, v, checkRefs)
}

// parseTimeout reads an upstream call's timeout; empty is the default.
func parseTimeout(key, s string) (time.Duration, error) {
	if s == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > MaxTimeout {
		return 0, keyErr(key, "must be a duration between 0 and %s, not %q", MaxTimeout, s)
	}
	return d, nil
}

// compileMCP checks and compiles an MCP task: its tool call is sent as a
// POST of JSON-RPC to the server's URL, and rendered (and previewed) as that
// message.
func (t *Task) compileMCP(checkRefs func(string, []ref) error) error {
	m := t.MCP
	var err error
	t.Request.Method = http.MethodPost
	if t.url, err = ParseURLTemplate(m.URL); err != nil {
		return keyErr("mcp.url", "%v", err)
	}
	if err := checkRefs("mcp.url", t.url.Refs()); err != nil {
		return err
	}
	if !toolNameRE.MatchString(m.Tool) {
		return keyErr("mcp.tool", "must be the upstream tool's name (%s), not %q", toolNameRE, m.Tool)
	}
	if t.headers, err = compileHeaders("mcp.headers", m.Headers, checkRefs); err != nil {
		return err
	}
	if t.args, err = compileArguments("mcp.arguments", m.Arguments, checkRefs); err != nil {
		return err
	}
	if t.Timeout, err = parseTimeout("mcp.timeout", m.Timeout); err != nil {
		return err
	}
	if m.IdempotencyMeta != "" && !metaKeyRE.MatchString(m.IdempotencyMeta) {
		return keyErr("mcp.idempotency_meta", "%q is not a _meta key (%s)", m.IdempotencyMeta, metaKeyRE)
	}
	if m.MaxResponseBytes < 0 {
		return keyErr("mcp.max_response_bytes", "must be positive")
	}
	t.Request.MaxResponseBytes = m.MaxResponseBytes
	if t.Request.MaxResponseBytes == 0 {
		t.Request.MaxResponseBytes = DefaultMaxResponseBytes
	}
	return nil
}

// compileCurrentTool checks a preview's current-state read made as a tool
// call: it goes to the task's own MCP server, like the action.
func (t *Task) compileCurrentTool(checkRefs func(string, []ref) error) error {
	c := t.Preview.Current
	if t.MCP == nil {
		return keyErr("preview.current.tool", "is for mcp tasks (a read tool of the task's MCP server); an HTTP task reads with method and url")
	}
	if c.Method != "" || c.URL != "" || len(c.Headers) > 0 {
		return keyErr("preview.current", "a tool call takes tool and arguments, not method, url or headers")
	}
	if !toolNameRE.MatchString(c.Tool) {
		return keyErr("preview.current.tool", "must be the upstream tool's name (%s), not %q", toolNameRE, c.Tool)
	}
	var err error
	t.currentArgs, err = compileArguments("preview.current.arguments", c.Arguments, checkRefs)
	return err
}

// toolNameRE is the MCP specification's tool name shape; metaKeyRE an
// optional prefix (reverse-DNS labels and a slash) and a name.
var (
	toolNameRE = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,128}$`)
	metaKeyRE  = regexp.MustCompile(`^([A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?)*/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c > 127 || !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// normalizeJSON turns a YAML-decoded tree into a JSON tree with json.Number numbers.
func normalizeJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	return out, dec.Decode(&out)
}

// schemaHasPath reports whether a placeholder path can exist under schema.
// Where a schema does not enumerate properties, any path is accepted.
func schemaHasPath(schema any, path []string) bool {
	if len(path) == 0 {
		return true
	}
	m, ok := schema.(map[string]any)
	if !ok {
		return true
	}
	if props, ok := m["properties"].(map[string]any); ok {
		sub, ok := props[path[0]]
		if !ok {
			if ap, ok := m["additionalProperties"]; ok && ap != false {
				return schemaHasPath(ap, path[1:])
			}
			return false
		}
		return schemaHasPath(sub, path[1:])
	}
	if items, ok := m["items"]; ok {
		return schemaHasPath(items, path[1:])
	}
	return true
}
