package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentg8/agentg8"
	"github.com/agentg8/agentg8/action"
	"github.com/agentg8/agentg8/audit"
)

// Writers runs b.N calls of op spread over n goroutines, as n concurrent
// writers would, and reports the rate as unit/s.
func Writers(b *testing.B, n int, unit string, op func() error) {
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		calls := b.N / n
		if w < b.N%n {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit+"/s")
}

// Lifecycle runs b.N allowed actions' durable writes over s from n
// concurrent writers, as the pipeline makes them: the intent commit (the
// action created in executing with its lease, and the proposed,
// credential_issued and executing events) and the outcome commit (the
// action moved to succeeded with its output, and the succeeded event). It
// isolates what the audit writer costs per action; newID names actions the
// way the pipeline does.
func Lifecycle(b *testing.B, s Store, n int, newID func(prefix string) string) {
	key, err := audit.LoadOrCreateKey(b.TempDir() + "/audit.key")
	if err != nil {
		b.Fatal(err)
	}
	l := audit.Open(s, key, audit.Options{})
	defer l.Close()
	input := json.RawMessage(`{"customer_id":"cus_1"}`)
	output := json.RawMessage(`{"id":"cus_1","name":"Ada Lovelace","plan":"enterprise","notes":[]}`)
	dec := &agentg8.Decision{Effect: agentg8.Allow, Policies: []string{"support-read"}}
	ctx := context.Background()
	Writers(b, n, "actions", func() error {
		now := time.Now()
		a := &agentg8.Action{ID: newID("act"), Task: "crm.get_customer", Input: input, Principal: "load-bot",
			Status: agentg8.StateExecuting, TaskHash: "sha256:" + strings.Repeat("0", 64), Decision: dec, CreatedAt: now, UpdatedAt: now}
		up := &agentg8.UpstreamInfo{Method: "GET", URL: "http://127.0.0.1:8081/customers/cus_1"}
		data, _ := json.Marshal(a) // as the pipeline does, before queueing
		if err := l.Commit(ctx, &action.Change{Action: a, Data: data, Lease: &action.Lease{Owner: "replica_bench", TTL: 30 * time.Second}},
			&agentg8.AuditEvent{Type: agentg8.EventProposed, ActionID: a.ID, Task: a.Task, Principal: a.Principal, Input: input, Decision: dec},
			&agentg8.AuditEvent{Type: agentg8.EventCredentialIssued, ActionID: a.ID, Task: a.Task, Principal: a.Principal, Credential: "crm",
				SecretHMAC: "hmac-sha256:" + strings.Repeat("1", 64), Issued: &agentg8.IssuedInfo{Type: "api_key"}},
			&agentg8.AuditEvent{Type: agentg8.EventExecuting, ActionID: a.ID, Task: a.Task, Principal: a.Principal, Status: a.Status, Upstream: up}); err != nil {
			return fmt.Errorf("intent: %w", err)
		}
		a.Version = 1
		a.Status, a.Output, a.UpstreamStatus, a.UpdatedAt = agentg8.StateSucceeded, output, 200, time.Now()
		up.Status = 200
		data, _ = json.Marshal(a)
		return l.Commit(ctx, &action.Change{Action: a, Data: data, From: agentg8.StateExecuting},
			&agentg8.AuditEvent{Type: agentg8.EventSucceeded, ActionID: a.ID, Task: a.Task, Principal: a.Principal, Status: a.Status, Output: output, Upstream: up})
	})
}
