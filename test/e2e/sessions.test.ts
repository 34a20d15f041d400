/**
 * Stateful sessions (`server.sessions = "stateful"`): a session belongs to the identity that
 * opened it (issuer + user + tenant). Anyone else presenting its id gets the same 404 as for an
 * id that never existed; the owner keeps working, and the owner's DELETE ends it.
 */
import { randomUUID } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import {
  callToolMessage,
  type E2eServer,
  expectRefused,
  post,
  RESOURCE,
  startServer,
  whoamiVia,
} from "./helpers.js";

/** A second issuer the server also trusts (same keys, for brevity): a different identity namespace. */
const OTHER_ISSUER = "https://login.partner-idp.example/";

describe("stateful sessions", () => {
  let idp: TestIssuer;
  let server: E2eServer;
  let aliceAtAcme: string;

  const token = (o: { sub: string; org: string; issuer?: string }) =>
    idp.auth0Token({
      sub: o.sub,
      orgId: o.org,
      audience: RESOURCE,
      ...(o.issuer ? { issuer: o.issuer } : {}),
    });

  /** A raw request inside session `sid`. */
  const inSession = (sid: string | undefined, t: string, method = "POST") =>
    post(server, {
      token: t,
      method,
      body: callToolMessage("whoami"),
      headers: {
        "mcp-protocol-version": LATEST_PROTOCOL_VERSION,
        ...(sid !== undefined ? { "mcp-session-id": sid } : {}),
      },
    });

  async function open(t: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const transport = new StreamableHTTPClientTransport(new URL(server.mcpUrl), {
      requestInit: { headers: { Authorization: `Bearer ${t}` } },
    });
    const client = new Client({ name: "tenantry-e2e-sessions", version: "1.0.0" });
    await client.connect(transport);
    return { client, transport };
  }

  beforeAll(async () => {
    idp = await startTestIssuer();
    server = await startServer({
      config: {
        server: { sessions: "stateful" },
        auth: {
          provider: "auth0",
          issuer: [`${idp.issuer}/`, OTHER_ISSUER],
          audience: RESOURCE,
          jwks_uri: idp.jwksUri,
        },
      },
      tools: [whoami],
      tenants: [{ id: "acme" }, { id: "globex" }],
    });
    aliceAtAcme = await token({ sub: "auth0|alice", org: "acme" });
  });

  afterAll(async () => {
    await server?.close();
    await idp?.close();
  });

  it("the SDK client gets a session id and works inside it", async () => {
    const { client, transport } = await open(aliceAtAcme);
    try {
      expect(transport.sessionId).toMatch(/^[0-9a-f-]{36}$/);
      expect(await whoamiVia(client)).toMatchObject({ tenantId: "acme", userId: "auth0|alice" });
    } finally {
      await client.close();
    }
  });

  it("another identity presenting the session id gets 404, exactly like an unknown id; the owner keeps working", async () => {
    const { client, transport } = await open(aliceAtAcme);
    const sid = transport.sessionId!;
    const unknown = await inSession(randomUUID(), aliceAtAcme);
    expect(unknown.status).toBe(404);
    const unknownBody = await unknown.json();
    expect(unknownBody).toMatchObject({ jsonrpc: "2.0", error: { code: expect.any(Number) } });

    const intruders = {
      "a different user of the same tenant": await token({ sub: "auth0|mallory", org: "acme" }),
      "the same user in another tenant": await token({ sub: "auth0|alice", org: "globex" }),
      "the same user and tenant from another issuer": await token({
        sub: "auth0|alice",
        org: "acme",
        issuer: OTHER_ISSUER,
      }),
    };
    for (const [who, t] of Object.entries(intruders)) {
      const post404 = await inSession(sid, t);
      expect(post404.status, who).toBe(404);
      expect(await post404.json(), who).toEqual(unknownBody);
      // Nor can an intruder end the session.
      const delete404 = await inSession(sid, t, "DELETE");
      expect(delete404.status, who).toBe(404);
      await delete404.body?.cancel();
      // The intruder's identity is valid: it is only this session that is not theirs.
      const own = await post(server, { token: t });
      expect(own.status, who).toBe(200);
      expect(own.headers.get("mcp-session-id"), who).not.toBe(sid);
      await own.body?.cancel();
      expect(await whoamiVia(client)).toMatchObject({ tenantId: "acme", userId: "auth0|alice" });
    }
    await client.close();
  });

  it("a request without the session header is 400", async () => {
    const response = await inSession(undefined, aliceAtAcme);
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      jsonrpc: "2.0",
      id: null,
      error: { code: expect.any(Number) },
    });
  });

  it("the owner's DELETE ends the session; afterwards its id is 404", async () => {
    const { client, transport } = await open(aliceAtAcme);
    const sid = transport.sessionId!;
    await whoamiVia(client);
    await transport.terminateSession();
    expect(transport.sessionId).toBeUndefined();
    const after = await inSession(sid, aliceAtAcme);
    expect(after.status).toBe(404);
    await after.body?.cancel();
    const again = await inSession(sid, aliceAtAcme, "DELETE");
    expect(again.status).toBe(404);
    await again.body?.cancel();
    await client.close();
  });

  it("every method it does not serve is 405 with the same Allow: POST, DELETE", async () => {
    for (const method of ["GET", "PUT", "PATCH"]) {
      const response = await post(server, { token: aliceAtAcme, method });
      expect(response.headers.get("allow"), method).toBe("POST, DELETE");
      await expectRefused(response, 405, "method_not_allowed");
    }
  });

  it("the protected-resource metadata lists every configured issuer", async () => {
    const doc = (await (await fetch(`${server.url}/.well-known/oauth-protected-resource/mcp`)).json()) as {
      resource: string;
      authorization_servers: string[];
    };
    expect(doc.resource).toBe(RESOURCE);
    expect(doc.authorization_servers).toEqual([`${idp.issuer}/`, OTHER_ISSUER]);
  });

  it("a new initialize opens a fresh session for the same identity", async () => {
    const first = await post(server, { token: aliceAtAcme });
    const second = await post(server, { token: aliceAtAcme });
    const [a, b] = [first.headers.get("mcp-session-id"), second.headers.get("mcp-session-id")];
    await Promise.all([first.body?.cancel(), second.body?.cancel()]);
    expect(a).toBeTruthy();
    expect(b).toBeTruthy();
    expect(a).not.toBe(b);
    const ok = await inSession(a!, aliceAtAcme);
    expect(ok.status).toBe(200);
    await ok.body?.cancel();
  });
});
