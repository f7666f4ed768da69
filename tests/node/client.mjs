// Drives AgentG8 with the official MCP TypeScript SDK client, over
// Streamable HTTP and over the `agentg8 mcp` stdio bridge, and prints what
// it saw as JSON for the Go test to check.
//
// env: AGENTG8_URL, AGENTG8_KEY (agent), APPROVER_KEY (user), AGENTG8_BIN (binary for stdio)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const { AGENTG8_URL: url, AGENTG8_KEY: key, APPROVER_KEY: approver, AGENTG8_BIN: bin } = process.env;

const text = (r) => r.content.filter((c) => c.type === "text").map((c) => c.text).join("");

async function exercise(client, withApproval, keyName) {
  const out = {};
  const tools = await client.listTools();
  out.tools = tools.tools.map((t) => t.name).sort();
  out.readOnly = tools.tools.find((t) => t.name === "crm.get_customer")?.annotations?.readOnlyHint;
  let r = await client.callTool({ name: "crm.get_customer", arguments: { customer_id: "cus_1" } });
  out.allowed = { isError: !!r.isError, status: r.structuredContent?.status };
  r = await client.callTool({ name: "crm.delete_customer", arguments: { customer_id: "cus_1" } });
  out.denied = { isError: !!r.isError, text: text(r) };
  r = await client.callTool({ name: "crm.add_note", arguments: { customer_id: "nope" } });
  out.invalid = { isError: !!r.isError, text: text(r) };
  // The same call twice under one idempotency key: one action.
  const keyed = { name: "crm.add_note", arguments: { customer_id: "cus_1", note: keyName }, _meta: { "agentg8/idempotency-key": keyName } };
  const k1 = await client.callTool(keyed);
  const k2 = await client.callTool(keyed);
  out.keyed = [k1, k2].map((k) => k.structuredContent?.action_id);
  if (withApproval) {
    r = await client.callTool({ name: "ops.refund", arguments: { amount: 5000 } });
    const sc = r.structuredContent;
    out.pending = { isError: !!r.isError, status: sc.status, text: text(r) };
    const res = await fetch(`${url}/v1/approvals/${sc.approval.id}/approve`, {
      method: "POST",
      headers: { Authorization: `Bearer ${approver}`, "Content-Type": "application/json" },
      body: JSON.stringify({ request_hash: sc.approval.request_hash, comment: "ok from the TS test" }),
    });
    out.approveStatus = res.status;
    let status = sc.status;
    for (let i = 0; i < 20 && status !== "succeeded"; i++) {
      const s = await client.callTool({ name: "agentg8_action_status", arguments: { action_id: sc.action_id, wait_seconds: 5 } });
      status = s.structuredContent?.status;
    }
    out.final = status;
  }
  return out;
}

const result = {};
const http = new Client({ name: "ts-sdk-test", version: "1.0.0" });
await http.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
}));
result.http = await exercise(http, true, "ts-http");
await http.close();

const stdio = new Client({ name: "ts-sdk-desktop", version: "1.0.0" });
await stdio.connect(new StdioClientTransport({ command: bin, args: ["mcp", "--url", url], env: { AGENTG8_KEY: key, PATH: process.env.PATH } }));
result.stdio = await exercise(stdio, false, "ts-stdio");
await stdio.close();

console.log(JSON.stringify(result));
