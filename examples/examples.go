// Package examples holds runnable configurations: the demo (tasks, policies
// and config that `agentg8 demo` starts) and, in crm/, its sample upstream.
package examples

import "embed"

// Demo is the demo folder: agentg8.yaml, tasks/ and policies/.
//
//go:embed demo
var Demo embed.FS

// DemoUpstream is the address the demo's task files name; `agentg8 demo`
// replaces it with the address its sample CRM listens on.
const DemoUpstream = "http://127.0.0.1:9000"
