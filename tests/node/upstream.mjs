// An upstream MCP server on the official TypeScript SDK (Streamable HTTP,
// with sessions, as most servers in the wild run), for tasks that call an
// upstream tool. Prints its endpoint URL, then serves until killed.
// GET /calls answers what its tool was asked, for the Go test to check.
//
// env: UPSTREAM_KEY (the bearer key it requires)
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const { UPSTREAM_KEY: key } = process.env;
const calls = [];
const transports = {};

function newServer() {
  const s = new McpServer({ name: "ts-helpdesk", version: "1.0.0" });
  s.registerTool("create_ticket", {
    description: "Open a ticket.",
    inputSchema: { title: z.string(), reporter: z.string() },
    outputSchema: { id: z.string(), title: z.string(), echo: z.string() },
  }, async (args, extra) => {
    const auth = extra.requestInfo?.headers?.authorization ?? "";
    calls.push({ args, meta: extra._meta ?? {}, auth });
    if (args.title === "fail") {
      return { isError: true, content: [{ type: "text", text: `queue closed (${auth})` }] };
    }
    const out = { id: `TS-${calls.length}`, title: args.title, echo: auth };
    return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
  });
  return s;
}

const server = http.createServer(async (req, res) => {
  if (req.url === "/calls") {
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(calls));
    return;
  }
  if (req.headers.authorization !== `Bearer ${key}`) {
    res.writeHead(401).end();
    return;
  }
  const sid = req.headers["mcp-session-id"];
  let t = sid ? transports[sid] : undefined;
  if (!t) {
    if (sid) {
      res.writeHead(404).end();
      return;
    }
    t = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => { transports[id] = t; },
    });
    t.onclose = () => { if (t.sessionId) delete transports[t.sessionId]; };
    await newServer().connect(t);
  }
  await t.handleRequest(req, res);
});
server.listen(0, "127.0.0.1", () => console.log(`http://127.0.0.1:${server.address().port}/mcp`));
