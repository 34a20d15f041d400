import { mkdir, mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { readArchive } from "../../src/isolation/tenant-archive.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { adminApi, mcp, toolResult } from "./helpers.js";

/**
 * Deprovisioning writes the tenant's archive into `[lifecycle] archive_dir`. When that write fails
 * (here with real file-system errors that stop root too: a regular file where a directory must go),
 * the deprovision fails with `backend_unavailable` (503, not 500 internal) and a message naming the
 * configured archive directory and the errno, never the archive's own paths; no archive, whole or
 * partial, is left; the tenant stays suspended (not deprovisioned, so never purged); and a re-run
 * once the directory is fixed completes.
 */
describe("deprovision when writing the archive fails", () => {
  let h: Harness;
  let base: string;
  let blocker: string;
  let archiveDir: string;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), "tenantry-archive-fail-"));
    blocker = join(base, "mount");
    archiveDir = join(blocker, "archive");
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }, { id: "initech" }],
      tools: demoTools,
      migrations: demoMigrations,
      config: {
        auth: { multi_tenant: { registry_cache_ttl_ms: 10 } },
        lifecycle: { archive_dir: archiveDir },
      },
    });
    for (const id of ["acme", "globex", "initech"]) {
      toolResult(
        await mcp(h, await h.token(id), "tools/call", {
          name: "documents_put",
          arguments: { key: "doc", content: `${id}'s document` },
        }),
      );
      toolResult(
        await mcp(h, await h.token(id), "tools/call", {
          name: "notes_create",
          arguments: { title: "t", body: `${id}'s note` },
        }),
      );
    }
  }, 60_000);
  afterAll(async () => {
    vi.useRealTimers();
    await h?.close();
    await rm(base, { recursive: true, force: true });
  });

  const entries = async (id: string) =>
    (await readdir(archiveDir).catch(() => [] as string[])).filter((e) => e.includes(id));

  function expectArchiveError(error: unknown, errno: string) {
    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(archiveDir); // what the operator configured
    expect(message).toContain(errno);
    expect(message).not.toContain(".partial"); // nothing of the archive's own paths
    expect(message).not.toContain((error as Error & { cause: Error }).cause.message);
    expect((error as Error & { cause: { code: string } }).cause.code).toBe(errno);
  }

  it("a file where archive_dir's parent must be (ENOTDIR): 503 backend_unavailable, tenant suspended, a re-run completes", async () => {
    await writeFile(blocker, "a file, not the mounted directory");

    const error = await h.app.tenants.deprovision({ id: "test" }, "acme").catch((e: unknown) => e);
    expectArchiveError(error, "ENOTDIR");
    const api = await adminApi(h, await h.adminToken({ sub: "ops" }), "POST", "/tenants/acme/deprovision");
    expect(api.status).toBe(503);
    expect(api.body.error).toBe("backend_unavailable");
    expect(api.body.message).toContain("lifecycle.archive_dir");
    expect(JSON.stringify(api.body)).not.toContain(".partial");

    const after = await h.app.tenants.show("acme");
    expect(after.status).toBe("suspended");
    expect(after.archivePath).toBeNull();
    expect((await h.app.tenants.purge({ id: "test" }, { now: true })).purged).toEqual([]);

    await rm(blocker);
    await mkdir(blocker);
    const done = await h.app.tenants.deprovision({ id: "test" }, "acme");
    expect(done.status).toBe("deprovisioned");
    expect(await entries("acme")).toHaveLength(1);
    const manifest = await readArchive(done.archivePath as string);
    expect(manifest.objects.map((o) => o.key)).toEqual(["doc"]);
  });

  it("fails at the manifest, after every row and object was written: nothing an archive reader could take for whole is left", async () => {
    await mkdir(archiveDir, { recursive: true });
    // The archive's name comes from the clock: fix it, and put a directory where its manifest goes.
    vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-11-30T12:00:00.000Z") });
    const planted = join(archiveDir, ".globex-20261130T120000000Z.partial", "manifest.json");
    await mkdir(planted, { recursive: true });
    let error: unknown;
    try {
      error = await h.app.tenants.deprovision({ id: "test" }, "globex").catch((e: unknown) => e);
    } finally {
      vi.useRealTimers();
    }
    expectArchiveError(error, "EEXIST"); // the manifest is created with wx: nothing may be at its path
    expect(await entries("globex")).toEqual([]); // the partial archive (rows and object) is gone
    expect((await h.app.tenants.show("globex")).status).toBe("suspended");

    const done = await h.app.tenants.deprovision({ id: "test" }, "globex");
    expect(done.status).toBe("deprovisioned");
    expect(await entries("globex")).toHaveLength(1);
    const manifest = await readArchive(done.archivePath as string);
    expect(manifest.tables.reduce((n, t) => n + t.rows, 0)).toBeGreaterThan(0);
    expect(manifest.objects.map((o) => o.key)).toEqual(["doc"]);
  });

  it("an object's archive file that cannot be created leaves no descriptor open on the object", async () => {
    await mkdir(archiveDir, { recursive: true });
    vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-11-30T13:00:00.000Z") });
    // A directory where the first object's file goes: open(…, "wx") fails with EEXIST.
    await mkdir(join(archiveDir, ".initech-20261130T130000000Z.partial", "objects", "000000"), {
      recursive: true,
    });
    let error: unknown;
    try {
      error = await h.app.tenants.deprovision({ id: "test" }, "initech").catch((e: unknown) => e);
    } finally {
      vi.useRealTimers();
    }
    expectArchiveError(error, "EEXIST");
    const root = h.app.config.storage.root as string;
    const open = await Promise.all(
      (await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")),
    );
    expect(open.filter((target) => target.startsWith(root))).toEqual([]);
  });
});
