import { mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeSynced } from "../../src/isolation/archive-write.js";

/** The archive's manifest is created, never overwritten and never written through a link. */
describe("writeSynced", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-archive-write-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates the file, owner-only, with the text", async () => {
    const file = join(dir, "manifest.json");
    await writeSynced(file, "{}\n");
    expect(await readFile(file, "utf8")).toBe("{}\n");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it("refuses a file already there and leaves it as it was", async () => {
    const file = join(dir, "manifest.json");
    await writeFile(file, "theirs");
    await expect(writeSynced(file, "ours")).rejects.toMatchObject({ code: "EEXIST" });
    expect(await readFile(file, "utf8")).toBe("theirs");
  });

  it("attack: a link planted at the path is not followed", async () => {
    const target = join(dir, "elsewhere");
    await writeFile(target, "untouched");
    await symlink(target, join(dir, "manifest.json"));
    await expect(writeSynced(join(dir, "manifest.json"), "ours")).rejects.toMatchObject({ code: "EEXIST" });
    expect(await readFile(target, "utf8")).toBe("untouched");
  });
});
