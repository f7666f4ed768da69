// An MCP host on the official TypeScript SDK, connected over Streamable
// HTTP, waiting to be told that its tool list changed. Prints "ready" once
// connected, then one JSON line: whether it was told within 15 s and the
// tools it then listed.
//
// env: AGENTG8_URL, AGENTG8_KEY (agent)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const { AGENTG8_URL: url, AGENTG8_KEY: key } = process.env;

const client = new Client({ name: "ts-sdk-host", version: "1.0.0" });
let told;
const changed = new Promise((resolve) => { told = resolve; });
client.setNotificationHandler(ToolListChangedNotificationSchema, () => told(true));
await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
}));
console.log("ready");
const wasTold = await Promise.race([changed, new Promise((resolve) => setTimeout(() => resolve(false), 15000))]);
const tools = await client.listTools();
console.log(JSON.stringify({ told: wasTold, protocol: client.transport.protocolVersion ?? "", tools: tools.tools.map((t) => t.name).sort() }));
await client.close();
process.exit(0); // the 15 s timer would keep Node running
