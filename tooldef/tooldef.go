// Package tooldef turns tasks into ready tool definitions for function-calling
// APIs. OpenAI and Anthropic tool names may not contain dots, so for those
// formats a task name's dots become hyphens, which task names never contain:
// the mapping is reversible with TaskName.
package tooldef

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/agentg8/agentg8/registry"
)

// Formats supported by Export.
const (
	OpenAI    = "openai"
	Anthropic = "anthropic"
	MCP       = "mcp"
)

// ToolName maps a task name to a tool name for format.
func ToolName(format, task string) string {
	if format == MCP {
		return task
	}
	return strings.ReplaceAll(task, ".", "-")
}

// TaskName reverses ToolName.
func TaskName(format, tool string) string {
	if format == MCP {
		return tool
	}
	return strings.ReplaceAll(tool, "-", ".")
}

// Export renders tool definitions for tasks.
func Export(format string, tasks []*registry.Task) ([]any, error) {
	out := []any{}
	for _, t := range tasks {
		name := ToolName(format, t.Name)
		schema := json.RawMessage(t.InputSchema())
		switch format {
		case OpenAI:
			out = append(out, map[string]any{"type": "function", "function": map[string]any{
				"name": name, "description": t.Description, "parameters": schema}})
		case Anthropic:
			out = append(out, map[string]any{"name": name, "description": t.Description, "input_schema": schema})
		case MCP:
			ann := map[string]any{"readOnlyHint": t.Risk == "read", "destructiveHint": t.Risk == "destructive"}
			if t.Idempotent() {
				ann["idempotentHint"] = true
			}
			out = append(out, map[string]any{"name": name, "description": t.Description, "inputSchema": schema, "annotations": ann})
		default:
			return nil, fmt.Errorf("unknown tool format %q (use openai, anthropic or mcp)", format)
		}
	}
	return out, nil
}
