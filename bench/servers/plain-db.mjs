// (d'') For reference: the same query behind a bare node:http JSON-RPC server (no MCP, no auth),
// a pg pool and the plain table, the tenant in a WHERE clause.
import { createServer } from "node:http";
import pg from "pg";

const pool = new pg.Pool({ connectionString: process.env.BENCH_PG_ADMIN_URL, max: 10 });
pool.on("error", () => {}); // idle connections end when the run drops its database
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const tenant = req.headers["x-tenant"] ?? "bench-0";
    const { rows } = await pool.query(
      "SELECT id, title FROM bench_items_plain WHERE tenant_id = $1 ORDER BY id LIMIT 5",
      [tenant],
    );
    const text = JSON.stringify({ rows });
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: msg.id,
      result: { content: [{ type: "text", text }], structuredContent: { rows } },
    });
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));
