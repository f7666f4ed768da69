package preview

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestApplyAndDiff(t *testing.T) {
	current := []byte(`{"id":"cus_1","plan":"pro","notes":[{"text":"a"}],"flags":{"vip":false}}`)
	cases := []struct {
		name     string
		patch    string
		merge    bool
		proposed string
		ops      string
		summary  string
	}{
		{"add to list", `[{"op":"add","path":"/notes/-","value":{"text":"b"}}]`, false,
			`{"flags":{"vip":false},"id":"cus_1","notes":[{"text":"a"},{"text":"b"}],"plan":"pro"}`,
			`[{"op":"add","path":"/notes/1","value":{"text":"b"}}]`, `add /notes/1 = {"text":"b"}`},
		{"update fields", `{"plan":"enterprise","flags":{"vip":true}}`, true,
			`{"flags":{"vip":true},"id":"cus_1","notes":[{"text":"a"}],"plan":"enterprise"}`,
			`[{"op":"replace","path":"/flags/vip","value":true,"old_value":false},{"op":"replace","path":"/plan","value":"enterprise","old_value":"pro"}]`,
			`change /flags/vip from false to true`},
		{"delete", `[{"op":"remove","path":"/notes/0"}]`, false,
			`{"flags":{"vip":false},"id":"cus_1","notes":[],"plan":"pro"}`,
			`[{"op":"remove","path":"/notes/0","old_value":{"text":"a"}}]`, `remove /notes/0 (was {"text":"a"})`},
		{"add to missing list", `[{"op":"add","path":"/tags/-","value":"x"}]`, false,
			`{"flags":{"vip":false},"id":"cus_1","notes":[{"text":"a"}],"plan":"pro","tags":["x"]}`,
			`[{"op":"add","path":"/tags","value":["x"]}]`, `add /tags = ["x"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Apply(current, []byte(c.patch), c.merge)
			if err != nil {
				t.Fatal(err)
			}
			if canon(t, got) != canon(t, []byte(c.proposed)) {
				t.Errorf("proposed %s", got)
			}
			ops, summary, err := Diff(current, got)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(ops)
			if canon(t, b) != canon(t, []byte(c.ops)) {
				t.Errorf("ops %s", b)
			}
			if !strings.Contains(strings.Join(summary, "\n"), c.summary) {
				t.Errorf("summary %q", summary)
			}
		})
	}
	if _, err := Apply(current, []byte(`[{"op":"remove","path":"/nope"}]`), false); err == nil {
		t.Error("removing a missing path should fail")
	}
}

func canon(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
