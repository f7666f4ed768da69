// Package policy decides, with Cedar, whether an agent (acting for a user) may
// propose an action, and which approval rules the action must satisfy.
//
// Default deny; forbid beats permit; any evaluation error is a deny (cedar-go
// skips erroring policies, so without this a broken forbid would let a permit
// through). Policies are indexed by task at load so evaluation touches only
// the policies whose action scope can match. Policies annotated
// @approval("group") are approval rules, never grants.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/ast"

	"github.com/agentg8/agentg8"
)

// Entity types AgentG8 supplies.
const (
	TypeAgent  = types.EntityType("Agent")
	TypeUser   = types.EntityType("User")
	TypeGroup  = types.EntityType("Group")
	TypeAction = types.EntityType("Action")
)

// Rule is an approval rule: a permit annotated @approval("group").
type Rule struct {
	ID     string
	Group  string
	Quorum int
	File   string
	set    *cedar.PolicySet
	ast    *ast.Policy
}

type taskPolicies struct {
	grants *cedar.PolicySet
	asts   []*ast.Policy // grant permits, for CouldPermit
	rules  []*Rule
}

// Engine evaluates policies for a fixed set of tasks. Immutable once built.
type Engine struct {
	tasks   map[string]*taskPolicies
	actions map[types.EntityUID]types.Entity
	rules   []*Rule
	count   int
	digest  string
}

// Digest identifies the policy sources (names and contents): two engines
// built from the same files have the same digest.
func (e *Engine) Digest() string { return e.digest }

// Source is one policy file's contents.
type Source struct {
	Name string
	Text []byte
}

// LoadDir reads every *.cedar file in dir.
func LoadDir(dir string) ([]Source, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("policies folder: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.cedar"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Source
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, Source{Name: f, Text: b})
	}
	return out, nil
}

// New parses the sources and indexes them for the named tasks. All problems
// are returned together.
func New(sources []Source, taskNames []string) (*Engine, error) {
	e := &Engine{tasks: map[string]*taskPolicies{}, actions: map[types.EntityUID]types.Entity{}}
	h := sha256.New()
	for _, src := range slices.SortedFunc(slices.Values(sources), func(a, b Source) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(h, "%s\x00%d\x00", src.Name, len(src.Text))
		h.Write(src.Text)
	}
	e.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	for _, n := range taskNames {
		e.tasks[n] = &taskPolicies{grants: cedar.NewPolicySet()}
		e.addActionEntities(n)
	}
	ids := map[string]string{}
	var errs []error
	for _, src := range sources {
		list, err := cedar.NewPolicyListFromBytes(src.Name, src.Text)
		if err != nil {
			// cedar-go names the source "<input>"; name the file instead.
			msg := strings.ReplaceAll(err.Error(), "<input>", src.Name)
			if !strings.Contains(msg, src.Name) {
				msg = src.Name + ": " + msg
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		for i, p := range list {
			pos := p.Position()
			loc := fmt.Sprintf("%s:%d", src.Name, pos.Line)
			id := fmt.Sprintf("%s#%d", filepath.Base(src.Name), i)
			ann := p.Annotations()
			if v, ok := ann["id"]; ok {
				id = string(v)
			}
			if prev, dup := ids[id]; dup {
				errs = append(errs, fmt.Errorf("%s: policy id %q is also used at %s", loc, id, prev))
				continue
			}
			ids[id] = loc
			e.count++
			a := (*ast.Policy)(p.AST())
			matched := e.tasksFor(a.Action)
			if g, ok := ann["approval"]; ok {
				r, err := newRule(id, src.Name, p, string(g), ann)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", loc, err))
					continue
				}
				e.rules = append(e.rules, r)
				for _, t := range matched {
					e.tasks[t].rules = append(e.tasks[t].rules, r)
				}
				continue
			}
			if _, ok := ann["quorum"]; ok {
				errs = append(errs, fmt.Errorf("%s: @quorum without @approval", loc))
				continue
			}
			for _, t := range matched {
				tp := e.tasks[t]
				tp.grants.Add(cedar.PolicyID(id), p)
				if p.Effect() == cedar.Permit {
					tp.asts = append(tp.asts, a)
				}
			}
		}
	}
	return e, errors.Join(errs...)
}

func newRule(id, file string, p *cedar.Policy, group string, ann cedar.Annotations) (*Rule, error) {
	if p.Effect() != cedar.Permit {
		return nil, errors.New("@approval is only meaningful on permit policies")
	}
	if group == "" {
		return nil, errors.New("@approval needs a group name")
	}
	q := 1
	if v, ok := ann["quorum"]; ok {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("@quorum(%q) must be a positive integer", string(v))
		}
		q = n
	}
	set := cedar.NewPolicySet()
	set.Add(cedar.PolicyID(id), p)
	return &Rule{ID: id, Group: group, Quorum: q, File: file, set: set, ast: (*ast.Policy)(p.AST())}, nil
}

// Rules returns every approval rule (for config validation).
func (e *Engine) Rules() []*Rule { return e.rules }

// Count is the number of policies loaded.
func (e *Engine) Count() int { return e.count }

func (e *Engine) addActionEntities(name string) {
	uid := types.NewEntityUID(TypeAction, types.String(name))
	parts := strings.Split(name, ".")
	for i := len(parts); i >= 1; i-- {
		id := strings.Join(parts[:i], ".")
		u := types.NewEntityUID(TypeAction, types.String(id))
		var parents []types.EntityUID
		if i > 1 {
			parents = []types.EntityUID{types.NewEntityUID(TypeAction, types.String(strings.Join(parts[:i-1], ".")))}
		}
		if _, ok := e.actions[u]; !ok || u == uid {
			e.actions[u] = types.Entity{UID: u, Parents: types.NewEntityUIDSet(parents...)}
		}
	}
}

// tasksFor lists the tasks an action scope can match.
func (e *Engine) tasksFor(scope ast.IsActionScopeNode) []string {
	var out []string
	for name := range e.tasks {
		if actionMatches(scope, name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func actionMatches(scope ast.IsActionScopeNode, task string) bool {
	in := func(u types.EntityUID) bool {
		if u.Type != TypeAction {
			return false
		}
		id := string(u.ID)
		return task == id || strings.HasPrefix(task, id+".")
	}
	switch s := scope.(type) {
	case ast.ScopeTypeAll:
		return true
	case ast.ScopeTypeEq:
		return s.Entity.Type == TypeAction && string(s.Entity.ID) == task
	case ast.ScopeTypeIn:
		return in(s.Entity)
	case ast.ScopeTypeInSet:
		for _, u := range s.Entities {
			if in(u) {
				return true
			}
		}
	}
	return false
}

// Request is one authorization question.
type Request struct {
	Agent        agentg8.Principal
	User         *agentg8.User
	Task         string
	ResourceType string
	ResourceID   string
	Input        any
	Risk         agentg8.Risk
	DryRun       bool
	Now          time.Time
}

// entities answers Cedar's entity look-ups without building a map per request.
type entities struct {
	e     *Engine
	agent types.Entity
	user  *types.Entity
}

func (en entities) Get(uid types.EntityUID) (types.Entity, bool) {
	switch uid.Type {
	case TypeAgent:
		if uid == en.agent.UID {
			return en.agent, true
		}
	case TypeUser:
		if en.user != nil && uid == en.user.UID {
			return *en.user, true
		}
	case TypeAction:
		ent, ok := en.e.actions[uid]
		return ent, ok
	}
	return types.Entity{}, false
}

func groupSet(groups []string) types.EntityUIDSet {
	uids := make([]types.EntityUID, len(groups))
	for i, g := range groups {
		uids[i] = types.NewEntityUID(TypeGroup, types.String(g))
	}
	return types.NewEntityUIDSet(uids...)
}

func (e *Engine) build(r Request) (types.Request, entities, error) {
	en := entities{e: e, agent: types.Entity{
		UID:     types.NewEntityUID(TypeAgent, types.String(r.Agent.ID)),
		Parents: groupSet(r.Agent.Groups),
	}}
	input, err := toCedar(r.Input, 0)
	if err != nil {
		return types.Request{}, en, err
	}
	if _, ok := input.(types.Record); !ok {
		input = types.NewRecord(nil)
	}
	now := r.Now.UTC()
	ctx := types.RecordMap{
		"input":   input,
		"risk":    types.String(r.Risk),
		"dry_run": types.Boolean(r.DryRun),
		"now": types.NewRecord(types.RecordMap{
			"unix":    types.Long(now.Unix()),
			"hour":    types.Long(now.Hour()),
			"weekday": types.String(now.Weekday().String()),
		}),
	}
	if r.User != nil {
		u := types.Entity{UID: types.NewEntityUID(TypeUser, types.String(r.User.ID)), Parents: groupSet(r.User.Groups)}
		en.user = &u
		ctx["user"] = u.UID
	}
	req := types.Request{
		Principal: en.agent.UID,
		Action:    types.NewEntityUID(TypeAction, types.String(r.Task)),
		Resource:  types.NewEntityUID(types.EntityType(r.ResourceType), types.String(r.ResourceID)),
		Context:   types.NewRecord(ctx),
	}
	return req, en, nil
}

// Authorize decides a request. It never returns Allow when anything went wrong.
func (e *Engine) Authorize(r Request) agentg8.Decision {
	tp, ok := e.tasks[r.Task]
	if !ok {
		return agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "no policies for this task"}
	}
	req, en, err := e.build(r)
	if err != nil {
		return agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}, Reason: "input cannot be evaluated: " + err.Error()}
	}
	dec, diag := cedar.Authorize(tp.grants, en, req)
	d := agentg8.Decision{Effect: agentg8.Deny, Policies: []string{}}
	if len(diag.Errors) > 0 {
		for _, de := range diag.Errors {
			d.Errors = append(d.Errors, string(de.PolicyID))
		}
		d.Reason = "policy evaluation error"
		return d
	}
	for _, rs := range diag.Reasons {
		d.Policies = append(d.Policies, string(rs.PolicyID))
	}
	if dec == cedar.Allow {
		d.Effect = agentg8.Allow
	} else if len(d.Policies) > 0 {
		d.Reason = "forbidden by policy"
	} else {
		d.Reason = "no policy permits this action"
	}
	return d
}

// RequiredApprovals returns the approval rules that match the request. An
// evaluation error in any rule is returned as an error: the caller must deny.
func (e *Engine) RequiredApprovals(r Request) ([]agentg8.ApprovalRequirement, error) {
	tp, ok := e.tasks[r.Task]
	if !ok || len(tp.rules) == 0 {
		return nil, nil
	}
	req, en, err := e.build(r)
	if err != nil {
		return nil, err
	}
	var out []agentg8.ApprovalRequirement
	for _, rule := range tp.rules {
		dec, diag := cedar.Authorize(rule.set, en, req)
		if len(diag.Errors) > 0 {
			return nil, fmt.Errorf("approval rule %s: %s", rule.ID, diag.Errors[0].Message)
		}
		if dec == cedar.Allow {
			out = append(out, agentg8.ApprovalRequirement{Group: rule.Group, Quorum: rule.Quorum, Rule: rule.ID})
		}
	}
	return out, nil
}

// CouldPermit reports whether some permit policy's scope admits this agent for
// this task, ignoring conditions: the tasks an agent is shown.
func (e *Engine) CouldPermit(agent agentg8.Principal, task string) bool {
	tp, ok := e.tasks[task]
	if !ok {
		return false
	}
	self := types.NewEntityUID(TypeAgent, types.String(agent.ID))
	in := func(u types.EntityUID) bool {
		return u == self || (u.Type == TypeGroup && agent.InGroup(string(u.ID)))
	}
	for _, a := range tp.asts {
		switch s := a.Principal.(type) {
		case ast.ScopeTypeAll:
			return true
		case ast.ScopeTypeEq:
			if s.Entity == self {
				return true
			}
		case ast.ScopeTypeIn:
			if in(s.Entity) {
				return true
			}
		case ast.ScopeTypeIs:
			if s.Type == TypeAgent {
				return true
			}
		case ast.ScopeTypeIsIn:
			if s.Type == TypeAgent && in(s.Entity) {
				return true
			}
		}
	}
	return false
}

// toCedar converts a validated JSON input into a Cedar value. Objects become
// records, arrays sets, integers Longs and other numbers decimals; nulls are
// left out.
func toCedar(v any, depth int) (types.Value, error) {
	if depth > 64 {
		return nil, errors.New("too deep")
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		return types.String(x), nil
	case bool:
		return types.Boolean(x), nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return types.Long(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, err
		}
		d, err := types.NewDecimalFromFloat(f)
		if err != nil {
			return nil, fmt.Errorf("number %s is out of Cedar's decimal range", x)
		}
		return d, nil
	case map[string]any:
		m := make(types.RecordMap, len(x))
		for k, e := range x {
			cv, err := toCedar(e, depth+1)
			if err != nil {
				return nil, err
			}
			if cv != nil {
				m[types.String(k)] = cv
			}
		}
		return types.NewRecord(m), nil
	case []any:
		vals := make([]types.Value, 0, len(x))
		for _, e := range x {
			cv, err := toCedar(e, depth+1)
			if err != nil {
				return nil, err
			}
			if cv != nil {
				vals = append(vals, cv)
			}
		}
		return types.NewSet(vals...), nil
	}
	return nil, fmt.Errorf("unsupported value %T", v)
}
