package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/agentg8/agentg8"
)

const taskYAML = `
name: crm.add_note
description: Add a note.
risk: write
input:
  type: object
  required: [customer_id, note]
  additionalProperties: false
  properties:
    customer_id: {type: string}
    note: {type: string}
    count: {type: integer}
    email: {type: string, format: email}
    tags: {type: array, items: {type: string}}
credential: crm
request:
  method: post
  url: https://api.example.com/v1/customers/${input.customer_id}/notes?tag=${input.note}
  headers: {X-Note: "${input.note}", X-Actor: "agent ${principal.id}"}
  body: {text: "${input.note}", n: "${input.count}", who: "${principal.id} for ${user.id}", tags: "${input.tags}", nested: [{"c": "${input.customer_id}"}]}
`

func mustTask(t testing.TB, src string) *Task {
	t.Helper()
	r, err := New(map[string][]byte{"t.yaml": []byte(src)}, map[string]CredentialInfo{"crm": {}})
	if err != nil {
		t.Fatal(err)
	}
	return r.Tasks()[0]
}

func TestRenderRequest(t *testing.T) {
	task := mustTask(t, taskYAML)
	in, err := task.ValidateInput([]byte(`{"customer_id":"a/b?c#d","note":"x&y=z","count":42,"tags":["p","q"]}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := task.RenderRequest(Vars{Input: in, Principal: "bot", User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "POST" {
		t.Errorf("method %s", r.Method)
	}
	u, _ := url.Parse(r.URL)
	if u.Host != "api.example.com" || u.Path != "/v1/customers/a/b?c#d/notes" || u.EscapedPath() != "/v1/customers/a%2Fb%3Fc%23d/notes" {
		t.Errorf("url %s (path %q)", r.URL, u.Path)
	}
	if q := u.Query(); len(q) != 1 || q.Get("tag") != "x&y=z" {
		t.Errorf("query %q", u.RawQuery)
	}
	if r.Header.Get("X-Note") != "x&y=z" || r.Header.Get("X-Actor") != "agent bot" {
		t.Errorf("headers %v", r.Header)
	}
	var body map[string]any
	json.Unmarshal(r.Body, &body)
	want := `{"n":42,"nested":[{"c":"a/b?c#d"}],"tags":["p","q"],"text":"x\u0026y=z","who":"bot for alice"}`
	if got, _ := json.Marshal(body); string(got) != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}

func TestRenderRejects(t *testing.T) {
	task := mustTask(t, taskYAML)
	for _, in := range []string{
		`{"customer_id":"ok","note":"a\r\nX-Evil: 1"}`,
		`{"customer_id":"ok","note":"a\u0000"}`,
		`{"customer_id":"..","note":"n"}`,
		`{"customer_id":"","note":"n"}`,
	} {
		v, err := task.ValidateInput([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		_, err = task.RenderRequest(Vars{Input: v, Principal: "bot"})
		var re *RenderError
		if !errors.As(err, &re) {
			t.Errorf("%s: want RenderError, got %v", in, err)
		}
	}
}

func TestParseInputStrict(t *testing.T) {
	bad := map[string]string{
		"duplicate key":  `{"a":1,"a":2}`,
		"nested dup":     `{"a":{"b":1,"b":1}}`,
		"invalid utf-8":  "{\"a\":\"\xff\"}",
		"huge integer":   `{"a":123456789012345678901234567890}`,
		"float overflow": `{"a":1e400}`,
		"trailing data":  `{"a":1} {}`,
		"too deep":       strings.Repeat("[", MaxInputDepth+2) + strings.Repeat("]", MaxInputDepth+2),
		"not json":       `{a:1}`,
		"truncated":      `{"a":`,
		"trailing comma": `{"a":1,}`,
	}
	for name, in := range bad {
		if _, err := ParseInput([]byte(in)); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		}
	}
	for _, in := range []string{`{}`, `{"a":[1,2.5,-3e10,true,null,"é"]}`, `{"big":9223372036854775807}`} {
		if _, err := ParseInput([]byte(in)); err != nil {
			t.Errorf("rejected %s: %v", in, err)
		}
	}
}

func TestValidateInputErrors(t *testing.T) {
	task := mustTask(t, taskYAML)
	_, err := task.ValidateInput([]byte(`{"customer_id":5,"note":"n","email":"not-an-email","extra":1}`))
	var e *agentg8.Error
	if !errors.As(err, &e) || e.Code != agentg8.CodeInvalidInput {
		t.Fatalf("got %v", err)
	}
	paths := map[string]bool{}
	for _, fe := range e.Errors {
		paths[fe.Path] = true
	}
	for _, p := range []string{"/customer_id", "/email", ""} {
		if !paths[p] {
			t.Errorf("no error at %q: %+v", p, e.Errors)
		}
	}
}

func TestLookupIsExact(t *testing.T) {
	r, _ := New(map[string][]byte{"t.yaml": []byte(taskYAML)}, map[string]CredentialInfo{"crm": {}})
	for _, n := range []string{"CRM.add_note", "crm.add_note.", "crm.add_note ", "crm.add\u200bnote", "crm.add_not\u0435", "crm.add_note\x00"} {
		if _, ok := r.Lookup(n); ok {
			t.Errorf("lookup accepted %q", n)
		}
	}
	if _, ok := r.Lookup("crm.add_note"); !ok {
		t.Error("exact name missed")
	}
}

func TestSelectOutput(t *testing.T) {
	task := mustTask(t, taskYAML+"output:\n  select: /data\n  redact: [/data/secret, /data/items/*/token]\n")
	var v any
	json.Unmarshal([]byte(`{"data":{"secret":"s","keep":1,"items":[{"token":"t","id":1}]},"other":2}`), &v)
	got, _ := json.Marshal(task.SelectOutput(v))
	if string(got) != `{"items":[{"id":1}],"keep":1}` {
		t.Errorf("got %s", got)
	}
}

func FuzzParseInput(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":[1,{"b":"c"}]}`, `{"a":1,"a":2}`, "\xff", `{"n":1e999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseInput(b)
		if err != nil {
			return
		}
		// Whatever is accepted is valid JSON that round-trips.
		out, err := json.Marshal(v)
		if err != nil || !json.Valid(b) {
			t.Fatalf("accepted %q but cannot re-encode (%v)", b, err)
		}
		if _, err := ParseInput(out); err != nil {
			t.Fatalf("re-encoded %q rejected: %v", out, err)
		}
	})
}

func FuzzRenderURL(f *testing.F) {
	task := mustTask(f, taskYAML)
	for _, s := range []string{"a", "../x", "a/b", "?q=1", "#f", "%2F", "@host", "http://evil/"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, id, note string) {
		r, err := task.RenderRequest(Vars{Input: map[string]any{"customer_id": id, "note": note}, Principal: "p"})
		if err != nil {
			var re *RenderError
			if !errors.As(err, &re) {
				t.Fatalf("non-input error: %v", err)
			}
			return
		}
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatalf("rendered unparseable URL %q", r.URL)
		}
		if u.Scheme != "https" || u.Host != "api.example.com" {
			t.Fatalf("value changed the origin: %q", r.URL)
		}
		segs := strings.Split(u.EscapedPath(), "/")
		if len(segs) != 5 || segs[4] != "notes" {
			t.Fatalf("value changed the path shape: %q", u.EscapedPath())
		}
		if q := u.Query(); len(q) != 1 || q.Get("tag") != note {
			t.Fatalf("value changed the query: %q", u.RawQuery)
		}
		for _, v := range r.Header {
			if strings.ContainsAny(v[0], "\r\n\x00") {
				t.Fatalf("control character reached a header: %q", v[0])
			}
		}
	})
}

func FuzzLookup(f *testing.F) {
	r, _ := New(map[string][]byte{"t.yaml": []byte(taskYAML)}, map[string]CredentialInfo{"crm": {}})
	for _, s := range []string{"crm.add_note", "CRM.ADD_NOTE", "crm.add_note.", "crm", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		task, ok := r.Lookup(name)
		if ok != (name == "crm.add_note") || ok && task.Name != name {
			t.Fatalf("lookup(%q) = %v", name, ok)
		}
	})
}

// BenchmarkValidateInput parses and validates inputs of about 1 KB and 10 KB.
func BenchmarkValidateInput(b *testing.B) {
	task := mustTask(b, taskYAML)
	for _, size := range []int{1 << 10, 10 << 10} {
		tags := []string{}
		for n := 0; n*12 < size-100; n++ {
			tags = append(tags, fmt.Sprintf("tag-%06d", n))
		}
		in, _ := json.Marshal(map[string]any{"customer_id": "cus_123", "note": "hello", "count": 3, "email": "a@example.com", "tags": tags})
		b.Run(fmt.Sprintf("bytes=%d", len(in)), func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := task.ValidateInput(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An HTTP task's definition hash is what it was before tasks could run as
// MCP tools: approvals pending across an upgrade stay bound.
func TestHTTPTaskHashUnchanged(t *testing.T) {
	if h := mustTask(t, taskYAML).Hash; h != "sha256:ba1dd97ace86229ae9973f66c3ad4296cefdc10addd8b7825a3adc3aee5f4ba0" {
		t.Fatalf("hash %s", h)
	}
}

const mcpTaskYAML = `
name: tickets.create
description: Open a ticket.
risk: write
input:
  type: object
  required: [title]
  additionalProperties: false
  properties:
    title: {type: string}
    queue: {type: string}
credential: crm
mcp:
  url: https://tools.example.com/mcp
  tool: create_ticket
  headers: {X-Queue: "${input.queue}"}
  arguments: {title: "${input.title}", reporter: "${principal.id}", tags: ["agent"]}
  idempotency_meta: agentg8/idempotency-key
  timeout: 3s
`

func TestMCPTask(t *testing.T) {
	task := mustTask(t, mcpTaskYAML)
	in, err := task.ValidateInput([]byte(`{"title":"printer on fire","queue":"ops"}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := task.RenderRequest(Vars{Input: in, Principal: "bot", ActionID: "act_1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"create_ticket","arguments":{"reporter":"bot","tags":["agent"],"title":"printer on fire"},"_meta":{"agentg8/idempotency-key":"agentg8-act_1"}}}`
	if r.Method != "POST" || r.URL != "https://tools.example.com/mcp" || string(r.Body) != want || r.Header.Get("X-Queue") != "ops" {
		t.Fatalf("rendered %s %s %v\n%s", r.Method, r.URL, r.Header, r.Body)
	}
	if task.Timeout.String() != "3s" || task.Origin() != "https://tools.example.com" || !task.Idempotent() {
		t.Fatalf("timeout %s origin %s idempotent %v", task.Timeout, task.Origin(), task.Idempotent())
	}

	// A preview's read tool goes to the same server with the same headers.
	withRead := mustTask(t, mcpTaskYAML+"preview: {current: {tool: get_queue, arguments: {queue: \"${input.queue}\"}}}\n")
	cr, err := withRead.RenderCurrent(Vars{Input: in, ActionID: "act_1"})
	if err != nil || cr.Method != "POST" || cr.URL != "https://tools.example.com/mcp" || cr.Header.Get("X-Queue") != "ops" ||
		string(cr.Body) != `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get_queue","arguments":{"queue":"ops"}}}` {
		t.Fatalf("current read %+v (%v)", cr, err)
	}

	// Without arguments the validated input is the tool's arguments.
	plain := mustTask(t, strings.Replace(mcpTaskYAML, `  arguments: {title: "${input.title}", reporter: "${principal.id}", tags: ["agent"]}
  idempotency_meta: agentg8/idempotency-key
`, "", 1))
	r, err = plain.RenderRequest(Vars{Input: in, ActionID: "act_1"})
	if err != nil || string(r.Body) != `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"create_ticket","arguments":{"queue":"ops","title":"printer on fire"}}}` || plain.Idempotent() {
		t.Fatalf("rendered %s (%v)", r.Body, err)
	}
}

// A read tool for an HTTP task's preview is refused: it has no MCP server.
func TestCurrentToolNeedsMCP(t *testing.T) {
	_, err := New(map[string][]byte{"t.yaml": []byte(taskYAML + "preview: {current: {tool: get_note}}\n")}, map[string]CredentialInfo{"crm": {}})
	if err == nil || !strings.Contains(err.Error(), "preview.current.tool: is for mcp tasks") {
		t.Fatalf("got %v", err)
	}
}

func TestMCPTaskRejects(t *testing.T) {
	for _, tc := range []struct{ edit, want string }{
		{"  tool: create_ticket\n|  tool: ${input.title}\n", "mcp.tool: must be the upstream tool's name"},
		{"  tool: create_ticket\n|", "mcp.tool: must be the upstream tool's name"},
		{"  url: https://tools.example.com/mcp\n|  url: tools.example.com/mcp\n", "mcp.url: url"},
		{`reporter: "${principal.id}"|reporter: "${input.reporter}"`, "mcp.arguments: placeholder ${input.reporter} names no property"},
		{`  arguments: {title: "${input.title}", reporter: "${principal.id}", tags: ["agent"]}|  arguments: ["${input.title}"]`, "mcp.arguments: must be an object"},
		{"  idempotency_meta: agentg8/idempotency-key\n|  idempotency_meta: \"bad key!\"\n", "mcp.idempotency_meta"},
		{"  timeout: 3s\n|  timeout: 1h\n", "mcp.timeout: must be a duration"},
		{"  timeout: 3s\n|  timeout: 3s\n  retries: 2\n", "unknown field \"retries\""},
		{"mcp:\n|request: {method: GET, url: \"https://x.example\"}\nmcp:\n", "mcp: a task executes by request or by mcp, not both"},
		{"  timeout: 3s\n|  timeout: 3s\npreview: {current: {tool: get_ticket, url: \"https://x.example\"}}\n", "preview.current: a tool call takes tool and arguments"},
		{"  timeout: 3s\n|  timeout: 3s\npreview: {current: {tool: \"bad tool\"}}\n", "preview.current.tool: must be the upstream tool's name"},
		{"  timeout: 3s\n|  timeout: 3s\npreview: {current: {tool: get_ticket, arguments: {id: \"${input.nope}\"}}}\n", "preview.current.arguments: placeholder ${input.nope}"},
		{"  timeout: 3s\n|  timeout: 3s\npreview: {current: {url: \"https://x.example\", arguments: {id: 1}}}\n", "preview.current.arguments: set without preview.current.tool"},
	} {
		from, to, _ := strings.Cut(tc.edit, "|")
		src := strings.Replace(mcpTaskYAML, from, to, 1)
		if src == mcpTaskYAML {
			t.Fatalf("edit %q changed nothing", tc.edit)
		}
		_, err := New(map[string][]byte{"t.yaml": []byte(src)}, map[string]CredentialInfo{"crm": {}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("edit %q: got %v, want %q", tc.edit, err, tc.want)
		}
	}
}
