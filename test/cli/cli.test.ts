import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";

const BIN = resolve("dist/cli/main.js");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], cwd: string): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, TENANTRY_LOG_LEVEL: "warn" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

/** Starts a long-running command and resolves once `ready` matches its output. */
function start(
  args: string[],
  cwd: string,
  ready: RegExp,
): Promise<{ child: ChildProcess; output: () => string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, TENANTRY_LOG_LEVEL: "info" },
    });
    let out = "";
    const timer = setTimeout(() => fail(new Error(`not ready in time:\n${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d;
      if (ready.test(out)) {
        clearTimeout(timer);
        done({ child, output: () => out });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (!ready.test(out)) fail(new Error(`exited with ${code}:\n${out}`));
    });
  });
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  return exited;
}

async function whoami(url: string, token: string): Promise<Record<string, unknown>> {
  const client = new Client({ name: "cli-test", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(url), {
      requestInit: { headers: { Authorization: `Bearer ${token}` } },
    }),
  );
  try {
    const r = await client.callTool({ name: "whoami", arguments: {} });
    return r.structuredContent as Record<string, unknown>;
  } finally {
    await client.close();
  }
}

describe("tenantry CLI", () => {
  let dir: string;
  beforeAll(async () => {
    expect(existsSync(BIN), "build first: npm test runs `npm run build`").toBe(true);
    dir = await mkdtemp(join(tmpdir(), "tenantry-cli-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("bad input gives one line on stderr and exit code 2", async () => {
    await writeFile(join(dir, "valid.toml"), "");
    const cases = [
      ["frobnicate"],
      ["init", "--oauth", "saml"],
      ["init", "--isolation", "none"],
      ["tenants", "create", "bad/id", "--name", "x"],
      ["tenants", "create", "ok", "--name", "x", "--rate-limit", "-3"],
      ["serve", "--config", "missing.toml"],
      ["serve", "--config", "valid.toml", "--port", "http"],
      ["serve", "--config", "valid.toml", "--port", "70000"],
      ["dev", "--port", "70000"],
      ["token", "--tenant", "acme", "--ttl", "forever"],
    ];
    for (const args of cases) {
      const r = await run(args, dir);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
    }
  }, 120_000);

  it("init writes a valid file and refuses to overwrite it without --force", async () => {
    const sub = await mkdtemp(join(dir, "init-"));
    const first = await run(
      ["init", "--oauth", "auth0", "--multi-tenant", "--isolation", "schema_per_tenant"],
      sub,
    );
    expect(first.code).toBe(0);
    const text = await readFile(join(sub, "tenantry.toml"), "utf8");
    expect(text).toContain('isolation = "schema_per_tenant"');
    const again = await run(["init", "--oauth", "entra"], sub);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("--force");
    expect(await readFile(join(sub, "tenantry.toml"), "utf8")).toBe(text);
    const forced = await run(["init", "--oauth", "entra", "--multi-tenant", "--force"], sub);
    expect(forced.code).toBe(0);
    expect(await readFile(join(sub, "tenantry.toml"), "utf8")).toContain('provider = "entra"');
  });

  it("a config error names the file and the key", async () => {
    const sub = await mkdtemp(join(dir, "bad-"));
    await writeFile(join(sub, "tenantry.toml"), '[auth]\nprovider = "dev"\nenabeld = true\n');
    const r = await run(["serve"], sub);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("tenantry.toml");
    expect(r.stderr).toContain("auth.enabeld");
  });

  describe("init --oauth oidc --multi-tenant, then serve against an external issuer", () => {
    let idp: TestIssuer;
    beforeAll(async () => {
      idp = await startTestIssuer();
    });
    afterAll(async () => idp?.close());

    it("serves the tenants it was told about, and only them", async () => {
      const sub = await mkdtemp(join(dir, "oidc-"));
      expect(
        (await run(["init", "--oauth", "oidc", "--multi-tenant", "--tenant-claim", "org_id"], sub)).code,
      ).toBe(0);
      const file = join(sub, "tenantry.toml");
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      let text = await readFile(file, "utf8");
      text = text
        .replace('issuer = "https://idp.example.com"', `issuer = "${idp.issuer}"`)
        .replace(/^port = \d+$/m, `port = ${port}`)
        .replace(/^audience = .*$/m, 'audience = "https://mcp.example.com"');
      await writeFile(file, text);
      expect((await run(["tenants", "create", "acme", "--name", "Acme"], sub)).code).toBe(0);
      expect((await run(["tenants", "create", "globex", "--name", "Globex"], sub)).code).toBe(0);
      const listed = JSON.parse((await run(["tenants", "list", "--json"], sub)).stdout) as {
        tenants: { id: string }[];
      };
      expect(listed.tenants.map((t) => t.id)).toEqual(["acme", "globex"]);

      const server = await start(["serve"], sub, /tenantry listening/);
      try {
        const url = `http://127.0.0.1:${port}/mcp`;
        const acme = await idp.sign({
          sub: "u1",
          aud: "https://mcp.example.com",
          iss: idp.issuer,
          org_id: "acme",
        });
        expect(await whoami(url, acme)).toMatchObject({ tenantId: "acme", userId: "u1", issuer: idp.issuer });
        const globex = await idp.sign({
          sub: "u2",
          aud: "https://mcp.example.com",
          iss: idp.issuer,
          org_id: "globex",
        });
        expect(await whoami(url, globex)).toMatchObject({ tenantId: "globex", userId: "u2" });
        const stranger = await idp.sign({
          sub: "u3",
          aud: "https://mcp.example.com",
          iss: idp.issuer,
          org_id: "initech",
        });
        const refused = await fetch(url, {
          method: "POST",
          headers: { authorization: `Bearer ${stranger}`, "content-type": "application/json" },
          body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
        });
        expect(refused.status).toBe(403);
        expect(await refused.json()).toMatchObject({ error: "unknown_tenant" });
      } finally {
        expect(await stop(server.child)).toBe(0);
      }
    }, 240_000);
  });

  it("dev: starts, prints tokens, CLI commands go through it, a second start reuses the data", async () => {
    const sub = await mkdtemp(join(dir, "dev-"));
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const dev = await start(["dev", "--port", String(port)], sub, /stop with Ctrl-C/);
    try {
      const out = dev.output();
      expect(out).toContain(`http://localhost:${port}/mcp`);
      const acmeToken = /acme token \(24 h\):\s+(\S+)/.exec(out)?.[1];
      expect(acmeToken).toBeTruthy();
      expect(await whoami(`http://127.0.0.1:${port}/mcp`, acmeToken!)).toMatchObject({ tenantId: "acme" });

      // The embedded database is held by the server: these go through its admin API.
      expect((await run(["tenants", "create", "initech", "--name", "Initech"], sub)).code).toBe(0);
      const token = (await run(["token", "--tenant", "initech"], sub)).stdout.trim();
      expect(await whoami(`http://127.0.0.1:${port}/mcp`, token)).toMatchObject({ tenantId: "initech" });
      expect((await run(["tenants", "suspend", "initech"], sub)).code).toBe(0);
      const refused = await fetch(`http://127.0.0.1:${port}/mcp`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
      expect(refused.status).toBe(403);
      expect(await refused.json()).toMatchObject({ error: "tenant_suspended" });
    } finally {
      expect(await stop(dev.child)).toBe(0);
    }
    // Second start: same data (initech is still there, suspended), tokens still verify (same key).
    const again = await start(["dev", "--port", String(port)], sub, /stop with Ctrl-C/);
    try {
      const shown = JSON.parse((await run(["tenants", "show", "initech", "--json"], sub)).stdout) as {
        status: string;
      };
      expect(shown.status).toBe("suspended");
    } finally {
      await stop(again.child);
    }
  }, 240_000);
});
