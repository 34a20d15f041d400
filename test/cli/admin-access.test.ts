/**
 * A CLI command issued while `tenantry dev` (or `serve`) is starting: the server holds the embedded
 * database's lock seconds before it writes its control file. The command waits for that file and
 * goes through the server, instead of failing on the lock; it opens the database itself once the
 * lock is free, and fails with the holder's pid if the lock outlasts its wait.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { withAdminAccess } from "../../src/cli/admin-client.js";
import { devConfig } from "../../src/cli/context.js";
import { pgliteDir } from "../../src/db/open.js";
import { CONTROL_FILE } from "../../src/server/control-file.js";

const SECRET = "control-secret-for-this-test";

/** A live process that holds nothing but its pid (a stand-in for a server that is starting). */
function idleProcess(): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    child.once("spawn", () => resolve(child));
    child.once("error", reject);
  });
}

/** An admin API that answers every call with the path it was asked for, given the right secret. */
async function fakeServer(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const ok = req.headers.authorization === `Tenantry-Control ${SECRET}`;
    res.writeHead(ok ? 200 : 401, { "Content-Type": "application/json" });
    res.end(JSON.stringify(ok ? { via: "server", path: req.url } : { error: "unauthenticated" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe("CLI commands next to a server that is starting (embedded database)", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  /** A dev data directory whose database lock names a live process, and no control file yet. */
  async function heldDataDir() {
    const dir = await mkdtemp(join(tmpdir(), "tenantry-admin-access-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const config = devConfig({ dataDir: dir });
    await mkdir(config.database.data_dir, { recursive: true });
    const holder = await idleProcess();
    cleanups.push(() => void holder.kill("SIGKILL"));
    await writeFile(`${pgliteDir(config)}.lock`, `${holder.pid}\n`);
    return { config, holder };
  }

  it("waits for the server's control file, then goes through the server", async () => {
    const { config, holder } = await heldDataDir();
    const { server, url } = await fakeServer();
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const started = Date.now();
    const result = withAdminAccess(
      config,
      async (a) => (a.mode === "remote" ? a.call("GET", "/tenants") : { via: "direct" }),
      { startWaitMs: 20_000 },
    );
    await new Promise((resolve) => setTimeout(resolve, 400));
    await writeFile(
      join(config.database.data_dir, CONTROL_FILE),
      JSON.stringify({ url, pid: holder.pid, secret: SECRET }),
    );
    expect(await result).toEqual({ via: "server", path: "/admin/api/tenants" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
  });

  it("opens the database itself once the holder is gone without writing one", async () => {
    const { config, holder } = await heldDataDir();
    const result = withAdminAccess(config, async (a) => a.mode, { startWaitMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    holder.kill("SIGKILL");
    expect(await result).toBe("direct");
  }, 60_000);

  it("fails with the holder's pid when the lock outlasts the wait", async () => {
    const { config, holder } = await heldDataDir();
    const started = Date.now();
    await expect(withAdminAccess(config, async (a) => a.mode, { startWaitMs: 300 })).rejects.toMatchObject({
      code: "backend_unavailable",
      message: expect.stringContaining(`in use by process ${holder.pid}`),
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  });
});
