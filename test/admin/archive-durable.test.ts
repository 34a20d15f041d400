import { readdirSync, readlinkSync } from "node:fs";
import { type FileHandle, mkdtemp, open, realpath, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { readArchive } from "../../src/isolation/tenant-archive.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

/** One `FileHandle.sync()`: what was synced, and what it held then. */
interface Synced {
  readonly path: string;
  /** A file's size when it was synced. */
  readonly size?: number;
  /** A directory's entries when it was synced. */
  readonly entries?: readonly string[];
}

/**
 * After purge the archive is the only copy of a tenant's data, so deprovisioning makes it durable
 * before it marks the tenant deprovisioned: every file (rows, objects, manifest) is fsynced whole,
 * every directory after its entries are written, `archive_dir` after the rename into place (and
 * its parent when the first archive creates it). Checked by recording every `FileHandle.sync()`
 * (the path of its descriptor, from /proc, and the file's size or the directory's entries at that
 * moment) and the registry write that marks the tenant deprovisioned. A power cut cannot be tested
 * here; what this proves is that each sync is asked for, covers what the archive ends up holding,
 * and comes before the mark.
 */
describe.skipIf(process.platform !== "linux")("deprovision makes its archive durable first", () => {
  let h: Harness;
  let base: string;
  let archiveDir: string;
  let restoreSync: () => void;
  const events: (Synced | { marked: string })[] = [];

  beforeAll(async () => {
    base = await realpath(await mkdtemp(join(tmpdir(), "tenantry-archive-durable-")));
    archiveDir = join(base, "new", "archive"); // created by the first archive
    h = await startHarness({
      tenants: [{ id: "acme" }],
      tools: demoTools,
      migrations: demoMigrations,
      config: {
        auth: { multi_tenant: { registry_cache_ttl_ms: 10 } },
        lifecycle: { archive_dir: archiveDir },
      },
    });
    const token = await h.token("acme");
    for (const key of ["a.txt", "dir/b.txt"]) {
      toolResult(
        await mcp(h, token, "tools/call", {
          name: "documents_put",
          arguments: { key, content: `acme's ${key}`.repeat(1000) },
        }),
      );
    }
    for (let i = 0; i < 3; i++) {
      toolResult(
        await mcp(h, token, "tools/call", {
          name: "notes_create",
          arguments: { title: `note ${i}`, body: "kept" },
        }),
      );
    }

    const probe = await open(join(base, "probe"), "w");
    const proto = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    const sync = proto.sync;
    proto.sync = async function (this: FileHandle) {
      const path = readlinkSync(`/proc/self/fd/${this.fd}`);
      const info = await this.stat();
      events.push(
        info.isDirectory() ? { path, entries: readdirSync(path).sort() } : { path, size: info.size },
      );
      return sync.call(this);
    };
    restoreSync = () => {
      proto.sync = sync;
    };
  }, 60_000);
  afterAll(async () => {
    restoreSync?.();
    vi.restoreAllMocks();
    await h?.close();
    await rm(base, { recursive: true, force: true });
  });

  it("syncs every file whole, every directory after its entries, archive_dir after the rename, all before the mark", async () => {
    const store = h.app.registry.store;
    const updateIf = store.updateIf.bind(store);
    vi.spyOn(store, "updateIf").mockImplementation(async (id, expect, u) => {
      if (u.status === "deprovisioned") events.push({ marked: id });
      return updateIf(id, expect, u);
    });
    const done = await h.app.tenants.deprovision({ id: "test" }, "acme");
    const archive = done.archivePath as string;
    expect(dirname(archive)).toBe(archiveDir);
    const manifest = await readArchive(archive);
    expect(manifest.tables.length).toBeGreaterThan(0);
    expect(manifest.objects).toHaveLength(2);

    const marked = events.findIndex((e) => "marked" in e);
    expect(marked).toBeGreaterThan(0);
    const before = events.slice(0, marked) as Synced[];
    expect(events.slice(marked + 1).filter((e) => "path" in e && e.path.startsWith(base))).toEqual([]);
    const partial = join(archiveDir, `.${basename(archive)}.partial`);
    const syncOf = (path: string) => before.filter((e) => e.path === path);

    // Every file, synced holding all it holds in the finished archive.
    const files = [...manifest.tables, ...manifest.objects].map((x) => x.file);
    for (const file of [...files, "manifest.json"]) {
      const { size } = await stat(join(archive, file));
      expect(syncOf(join(partial, file)), file).toContainEqual({ path: join(partial, file), size });
    }
    // Every directory, synced holding its entries.
    for (const sub of ["rows", "objects"]) {
      const entries = files.filter((f) => f.startsWith(`${sub}/`)).map((f) => basename(f));
      expect(syncOf(join(partial, sub)), sub).toContainEqual({
        path: join(partial, sub),
        entries: entries.sort(),
      });
    }
    expect(syncOf(partial)).toContainEqual({ path: partial, entries: ["manifest.json", "objects", "rows"] });
    // archive_dir after the rename: the archive is in it, the partial directory no longer.
    expect(syncOf(archiveDir)).toContainEqual({ path: archiveDir, entries: [basename(archive)] });
    // archive_dir was created by this archive: its entry, and its parent's, are synced too.
    expect(syncOf(base).length).toBeGreaterThan(0);
    expect(syncOf(join(base, "new")).length).toBeGreaterThan(0);
  });
});
