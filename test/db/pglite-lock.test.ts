import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { devConfig } from "../../src/cli/context.js";
import { main } from "../../src/cli/program.js";
import { pgliteDir } from "../../src/db/open.js";
import { PgliteDatabase } from "../../src/db/pglite.js";
import { TenantryApp } from "../../src/server/app.js";

/**
 * PGlite is one process with no lock of its own: two processes on one data directory each keep
 * their own copy and overwrite each other's files (a tenant created by one vanishes, registry keys
 * are handed out twice). A second `tenantry dev`, or a CLI command that opens the directory while a
 * server is starting, must be refused, not run beside the first.
 */
describe("the embedded database is opened by one holder at a time", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-pglite-lock-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("a second open of the same directory is refused while the first is open, and allowed after", async () => {
    const config = devConfig({ dataDir: dir });
    const first = new TenantryApp(config, { logger: false, controlFile: false });
    await first.start();
    try {
      await first.tenants.create({ id: "test" }, { id: "acme", name: "Acme" });
      const second = new TenantryApp(config, { logger: false, controlFile: false });
      const refused = await second.start().then(
        () => undefined,
        (error: unknown) => error,
      );
      await second.close();
      expect(refused).toMatchObject({ code: "backend_unavailable" });
      expect(String((refused as Error).message)).toContain(config.database.data_dir);

      // The CLI beside a server that has no control file yet (still starting): one line, no second open.
      let stderr = "";
      const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
        stderr += String(chunk);
        return true;
      });
      const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
      let code: number;
      try {
        code = await main([
          "node",
          "tenantry",
          "tenants",
          "create",
          "initech",
          "--name",
          "I",
          "--data-dir",
          dir,
        ]);
      } finally {
        err.mockRestore();
        out.mockRestore();
        process.exitCode = undefined;
      }
      expect(code).toBe(1);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).toContain("in use");
    } finally {
      await first.close();
    }
    const again = new TenantryApp(config, { logger: false, controlFile: false });
    await again.start();
    try {
      expect((await again.tenants.list()).map((t) => t.id)).toEqual(["acme"]);
    } finally {
      await again.close();
    }
  }, 120_000);

  it("a lock left by a process that is gone does not block the next open", async () => {
    const sub = await mkdtemp(join(dir, "stale-"));
    const path = pgliteDir(devConfig({ dataDir: sub }));
    const first = await PgliteDatabase.open(path);
    await first.close();
    // A pid that no process has (above the kernel's pid_max).
    await writeFile(`${path}.lock`, "2147483646\n");
    const db = await PgliteDatabase.open(path);
    try {
      expect((await db.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
    }
  }, 120_000);
});
