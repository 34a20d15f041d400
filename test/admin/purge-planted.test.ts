import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

/**
 * With `backend = "fs"`, anything with write access to the storage root can plant entries that are
 * not objects in a tenant's prefix: a link to a file outside the root, a link to another tenant's
 * directory, a FIFO. Purging the tenant must still leave no trace of its prefix, without following
 * any of them (the outside file and the other tenant's objects are intact) or waiting on the FIFO.
 */
describe("purge of a tenant whose fs prefix holds planted links and FIFOs", () => {
  let h: Harness;
  let outside: string;

  beforeAll(async () => {
    outside = await mkdtemp(join(tmpdir(), "tenantry-outside-"));
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools: demoTools,
      migrations: demoMigrations,
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: 10 } } },
    });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await rm(outside, { recursive: true, force: true });
  });

  const put = async (id: string, key: string, content: string) =>
    toolResult(
      await mcp(h, await h.token(id), "tools/call", { name: "documents_put", arguments: { key, content } }),
    );

  it("removes acme's whole prefix; the outside file and globex's objects are intact; nothing hangs", async () => {
    await put("acme", "doc", "acme's");
    await put("acme", "a/b", "acme's nested");
    await put("globex", "doc", "globex's");
    const root = h.app.config.storage.root;
    const prefixDir = async (id: string) => join(root, "t.d", `${(await h.app.tenants.show(id)).key}.d`);
    const acme = await prefixDir("acme");
    const globex = await prefixDir("globex");
    expect((await stat(acme)).isDirectory()).toBe(true);
    const secret = join(outside, "secret.f");
    await writeFile(secret, "outside the root");
    await symlink(secret, join(acme, "passwd.f"));
    await symlink(globex, join(acme, "theirs.d"));
    await symlink(globex, join(acme, "a.d", "deeper.d"));
    execFileSync("mkfifo", [join(acme, "pipe.f")]);
    execFileSync("mkfifo", [join(acme, "a.d", "pipe.f")]);

    await h.app.tenants.deprovision({ id: "test" }, "acme");
    const late = Symbol("still purging after 10 s");
    const result = await Promise.race([
      h.app.tenants.purge({ id: "test" }, { now: true }),
      new Promise<typeof late>((r) => setTimeout(() => r(late), 10_000).unref()),
    ]);
    expect(result).not.toBe(late);
    if (result === late) return;
    expect(result.failed).toEqual([]);
    expect(result.purged).toMatchObject([{ id: "acme", objects: 2 }]);

    await expect(stat(acme)).rejects.toMatchObject({ code: "ENOENT" });
    expect(await readFile(secret, "utf8")).toBe("outside the root");
    expect(await readdir(globex)).toEqual(["doc.f"]);
    const got = toolResult<{ content: string }>(
      await mcp(h, await h.token("globex"), "tools/call", {
        name: "documents_get",
        arguments: { key: "doc" },
      }),
    );
    expect(got.content).toBe("globex's");
  });
});
