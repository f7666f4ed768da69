package policy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
)

func engine(t testing.TB, src string, tasks ...string) *Engine {
	t.Helper()
	e, err := New([]Source{{Name: "test.cedar", Text: []byte(src)}}, tasks)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func input(t testing.TB, s string) any {
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

var bot = agentg8.Principal{Kind: agentg8.KindAgent, ID: "bot", Groups: []string{"support"}}

func req(task, in string, t testing.TB) Request {
	return Request{Agent: bot, Task: task, ResourceType: "Task", ResourceID: task, Input: input(t, in), Risk: agentg8.RiskWrite,
		Now: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)}
}

func TestAuthorize(t *testing.T) {
	src := `
@id("ns") permit (principal in Group::"support", action in Action::"crm", resource);
@id("cap") forbid (principal, action == Action::"billing.refund", resource) when { context.input.amount > 100 };
@id("refund") permit (principal, action == Action::"billing.refund", resource);
@id("err") forbid (principal, action == Action::"ops.run", resource) when { context.input.nope == 1 };
@id("ops") permit (principal, action == Action::"ops.run", resource);
@id("hours") permit (principal, action == Action::"ops.hours", resource) when { context.now.hour >= 9 && context.now.hour < 17 && context.now.weekday == "Wednesday" };
@id("user") permit (principal, action == Action::"crm.sub.deep", resource) when { context has user && context.user in Group::"vip" };
@id("approval-only") @approval("finance") permit (principal, action == Action::"billing.pay", resource);
`
	e := engine(t, src, "crm.note", "crm.sub.deep", "billing.refund", "billing.pay", "ops.run", "ops.hours", "other.x")
	cases := []struct {
		name   string
		r      Request
		effect agentg8.Effect
		policy string
	}{
		{"namespace grant", req("crm.note", `{}`, t), agentg8.Allow, "ns"},
		{"nested namespace", req("crm.sub.deep", `{}`, t), agentg8.Allow, "ns"},
		{"default deny", req("other.x", `{}`, t), agentg8.Deny, ""},
		{"forbid beats permit", req("billing.refund", `{"amount":500}`, t), agentg8.Deny, "cap"},
		{"permit when forbid does not match", req("billing.refund", `{"amount":5}`, t), agentg8.Allow, "refund"},
		{"erroring forbid is a deny", req("ops.run", `{"x":1}`, t), agentg8.Deny, ""},
		{"context.now", req("ops.hours", `{}`, t), agentg8.Allow, "hours"},
		{"approval rule is not a grant", req("billing.pay", `{}`, t), agentg8.Deny, ""},
		{"unknown task", req("nope.nope", `{}`, t), agentg8.Deny, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.Authorize(c.r)
			if d.Effect != c.effect {
				t.Fatalf("effect %s, want %s (%+v)", d.Effect, c.effect, d)
			}
			if c.policy != "" && (len(d.Policies) != 1 || d.Policies[0] != c.policy) {
				t.Errorf("policies %v, want [%s]", d.Policies, c.policy)
			}
		})
	}
	if d := e.Authorize(req("ops.run", `{}`, t)); len(d.Errors) != 1 || d.Errors[0] != "err" {
		t.Errorf("errors should name the policy: %+v", d)
	}
	r := req("crm.sub.deep", `{}`, t)
	r.Agent.Groups = nil
	if d := e.Authorize(r); d.Effect != agentg8.Deny {
		t.Error("user rule matched without a user")
	}
	r.User = &agentg8.User{ID: "alice", Groups: []string{"vip"}}
	if d := e.Authorize(r); d.Effect != agentg8.Allow || d.Policies[0] != "user" {
		t.Errorf("user in group: %+v", d)
	}
}

func TestApprovalRules(t *testing.T) {
	e := engine(t, `
@id("g") permit (principal, action, resource);
@id("big") @approval("finance") @quorum("2") permit (principal, action == Action::"billing.refund", resource) when { context.input.amount > 10000 };
@id("all") @approval("ops") permit (principal, action in Action::"billing", resource);
@id("bad") @approval("sec") permit (principal, action == Action::"billing.pay", resource) when { context.input.x.y == 1 };
`, "billing.refund", "billing.pay")
	got, err := e.RequiredApprovals(req("billing.refund", `{"amount":50000}`, t))
	if err != nil || len(got) != 2 || got[0] != (agentg8.ApprovalRequirement{Group: "finance", Quorum: 2, Rule: "big"}) || got[1].Rule != "all" {
		t.Errorf("got %+v %v", got, err)
	}
	got, _ = e.RequiredApprovals(req("billing.refund", `{"amount":5}`, t))
	if len(got) != 1 || got[0].Rule != "all" {
		t.Errorf("small: %+v", got)
	}
	if _, err := e.RequiredApprovals(req("billing.pay", `{}`, t)); err == nil {
		t.Error("erroring approval rule must be an error (fail closed)")
	}
}

func TestCouldPermit(t *testing.T) {
	e := engine(t, `
@id("a") permit (principal in Group::"support", action == Action::"crm.read", resource);
@id("b") permit (principal == Agent::"bot", action == Action::"crm.write", resource) when { context.input.x == 1 };
@id("c") permit (principal is Agent, action == Action::"pub.x", resource);
@id("d") forbid (principal, action == Action::"crm.secret", resource);
`, "crm.read", "crm.write", "crm.secret", "pub.x")
	other := agentg8.Principal{Kind: agentg8.KindAgent, ID: "other"}
	for _, c := range []struct {
		p    agentg8.Principal
		task string
		want bool
	}{{bot, "crm.read", true}, {bot, "crm.write", true}, {bot, "crm.secret", false}, {bot, "pub.x", true},
		{other, "crm.read", false}, {other, "crm.write", false}, {other, "pub.x", true}} {
		if got := e.CouldPermit(c.p, c.task); got != c.want {
			t.Errorf("%s %s: %v", c.p.ID, c.task, got)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	for name, src := range map[string]string{
		"parse":           `permit (principal, action, resource) when { 1 + };`,
		"duplicate id":    `@id("x") permit (principal, action, resource); @id("x") permit (principal, action, resource);`,
		"bad quorum":      `@approval("g") @quorum("zero") permit (principal, action, resource);`,
		"quorum alone":    `@quorum("2") permit (principal, action, resource);`,
		"approval forbid": `@approval("g") forbid (principal, action, resource);`,
	} {
		if _, err := New([]Source{{Name: "p.cedar", Text: []byte(src)}}, []string{"a.b"}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "p.cedar") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
}

// BenchmarkAuthorize evaluates one request against 1, 100 and 1,000
// policies, each for its own task, so the index keeps evaluation flat.
func BenchmarkAuthorize(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			var src strings.Builder
			tasks := make([]string, n)
			for i := 0; i < n; i++ {
				tasks[i] = fmt.Sprintf("ns%d.task%d", i%10, i)
				fmt.Fprintf(&src, "@id(\"p%d\") permit (principal in Group::\"support\", action == Action::%q, resource) when { context.input.amount < %d };\n", i, tasks[i], 1000+i)
			}
			e := engine(b, src.String(), tasks...)
			r := req(tasks[n/2], `{"amount":5,"note":"hello"}`, b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if d := e.Authorize(r); d.Effect != agentg8.Allow {
					b.Fatal(d)
				}
			}
		})
	}
}
