package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
)

// The spliced encoding must be byte-identical to encoding the whole event:
// verification hashes the stored bytes, and readers decode them.
func TestPlaceEqualsMarshal(t *testing.T) {
	events := []*agentg8.AuditEvent{
		{Type: agentg8.EventProposed},
		{Type: agentg8.EventExecuting, ActionID: "act_1", Task: "crm.get", Principal: "bot", Input: json.RawMessage(`{"a":"<b>&\u2028"}`),
			Decision: &agentg8.Decision{Effect: agentg8.Allow, Policies: []string{"p"}}, Upstream: &agentg8.UpstreamInfo{Method: "GET", URL: "http://x/y?z=1"}},
		{Type: "weird \"type\"\n", Detail: "é ⟦U+202E⟧", Error: &agentg8.Error{Code: "x", Message: "y"}},
	}
	times := []time.Time{time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC), time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC), time.Unix(0, 1).UTC()}
	for i, ev := range events {
		for j, tm := range times {
			body, err := encodeBody(ev)
			if err != nil {
				t.Fatal(err)
			}
			tj, _ := tm.MarshalJSON()
			seq := int64(i*1000 + j)
			got := place(seq, tj, body)
			full := *ev
			full.Seq, full.Time = seq, tm
			want, _ := json.Marshal(&full)
			if !bytes.Equal(got, want) {
				t.Errorf("event %d time %d:\n got %s\nwant %s", i, j, got, want)
			}
		}
	}
}
