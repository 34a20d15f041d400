import { execFileSync } from "node:child_process";
import { constants, type Stats } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { storageSchema } from "../../src/config/schema.js";
import { isTenantryError } from "../../src/errors.js";
import { createObjectStore } from "../../src/isolation/storage/create-object-store.js";
import { FsObjectStore } from "../../src/isolation/storage/fs-store.js";
import type { ObjectStore } from "../../src/isolation/storage/object-store.js";
import { TenantStorage } from "../../src/isolation/storage/tenant-storage.js";

const bytes = (s: string) => new TextEncoder().encode(s);

describe("FsObjectStore", () => {
  let base: string;
  let root: string;
  let store: FsObjectStore;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "tenantry-fs-"));
    root = join(base, "objects");
    store = new FsObjectStore(root);
  });
  afterEach(() => rm(base, { recursive: true, force: true }));

  it("validates full keys itself, whatever the caller did (defence in depth)", async () => {
    for (const key of ["../outside", "t/1/../../outside", "/abs", "t\\x", "t/\u0000", "t/1/"]) {
      await expect(store.put(key, bytes("x"))).rejects.toMatchObject({ code: "invalid_storage_key" });
      await expect(store.get(key)).rejects.toMatchObject({ code: "invalid_storage_key" });
    }
    await expect(store.list("../", { limit: 10 })).rejects.toMatchObject({ code: "invalid_storage_key" });
    expect(await readdir(base)).toEqual([]);
  });

  it("removes temp files a crashed write left behind (over an hour old), not a write in progress", async () => {
    const tmp = join(root, ".tmp");
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, "crashed"), "half an object");
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(tmp, "crashed"), twoHoursAgo, twoHoursAgo);
    await writeFile(join(tmp, "in-progress"), "another writer's");
    await store.put("t/1/a", bytes("a"));
    expect(await readdir(tmp)).toEqual(["in-progress"]);
    expect(new TextDecoder().decode(await store.get("t/1/a"))).toBe("a");
  });

  it("keeps keys differing only in case or in escaping apart", async () => {
    const keys = ["A", "a", "%41", "a.f", "a.d", "a b", "é", "e\u0301"];
    for (const key of keys) await store.put(`t/${key}`, bytes(key));
    for (const key of keys) expect(new TextDecoder().decode(await store.get(`t/${key}`))).toBe(key);
    expect((await store.list("t/", { limit: 100 })).keys).toHaveLength(keys.length);
  });

  it("orders listings by UTF-8 bytes, as S3 does", async () => {
    for (const key of ["\uff5e", "😀", "z"]) await store.put(key, bytes(key));
    expect((await store.list("", { limit: 10 })).keys).toEqual(["z", "\uff5e", "😀"]);
    expect((await store.list("", { limit: 1, cursor: "\uff5e" })).keys).toEqual(["😀"]);
  });

  it("ignores files it did not write: temp files, stray names, symbolic links", async () => {
    await store.put("t/1/real", bytes("x"));
    await writeFile(join(root, "t.d", "stray"), "x");
    await writeFile(join(root, "t.d", "UPPER.f"), "x"); // not canonical: we would write %55…
    await mkdir(join(base, "elsewhere"));
    await writeFile(join(base, "elsewhere", "secret.f"), "x");
    await symlink(join(base, "elsewhere"), join(root, "t.d", "link.d"));
    await writeFile(join(root, ".tmp", "partial"), "x");
    expect((await store.list("", { limit: 100 })).keys).toEqual(["t/1/real"]);
  });

  it("refuses a segment too long for a file name, with a clear reason", async () => {
    await expect(store.put(`t/${"é".repeat(100)}`, bytes("x"))).rejects.toThrow(
      /too long for the fs backend/,
    );
  });

  it("leaves no empty directories behind a deleted tenant", async () => {
    await store.put("t/1/a/b/c", bytes("x"));
    await store.put("t/2/a", bytes("y"));
    expect(await store.deletePrefix("t/1/")).toBe(1);
    expect(await readdir(join(root, "t.d"))).toEqual(["2.d"]);
  });

  it("survives concurrent writers, readers and deleters without torn objects or errors", async () => {
    const values = Array.from({ length: 20 }, (_, i) => bytes(String(i % 10).repeat(10_000 + i)));
    // Deleting a directory's last object prunes it while other writers are about to rename into it.
    const ops = values.flatMap((v, i) => [
      store.put("t/x/k", v),
      store.get("t/x/k"),
      store.put(`t/y/${i}`, v),
      store.delete(`t/y/${i - 1}`),
    ]);
    const results = await Promise.allSettled(ops);
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    const bodies = results.flatMap((r) =>
      r.status === "fulfilled" && r.value instanceof Uint8Array ? [r.value] : [],
    );
    bodies.push((await store.get("t/x/k")) as Uint8Array);
    for (const body of bodies) expect(values.some((v) => Buffer.compare(v, body) === 0)).toBe(true);
  });
});

describe("TenantStorage over a misbehaving backend", () => {
  const fake = (keys: string[], nextCursor?: string): ObjectStore => ({
    put: async () => {},
    get: async () => undefined,
    delete: async () => false,
    list: async () => (nextCursor === undefined ? { keys } : { keys, nextCursor }),
    deletePrefix: async () => 0,
  });

  it("skips and logs keys outside the tenant prefix instead of showing them", async () => {
    const warn = vi.fn();
    const t = new TenantStorage(fake(["t/1/mine", "t/10/theirs", "t/2/x"], "t/2/x"), "t/1/", {
      log: { warn },
    });
    expect(await t.list()).toEqual({ keys: ["mine"] });
    expect(warn).toHaveBeenCalledTimes(3);
  });

  it("refuses prefixes that are not a tenant prefix", () => {
    for (const prefix of ["", "t/1", "../", "/t/1/"]) {
      expect(() => new TenantStorage(fake([]), prefix)).toThrow();
    }
  });
});

describe("createObjectStore", () => {
  it("refuses an incomplete s3 table", () => {
    const parse = (table: Record<string, unknown>) => storageSchema.parse({ backend: "s3", ...table });
    expect(() => createObjectStore(parse({}))).toThrow(expect.objectContaining({ code: "config_invalid" }));
    expect(() => createObjectStore(parse({ bucket: "b", access_key_id: "k" }))).toThrow(
      expect.objectContaining({ code: "config_invalid" }),
    );
  });
});

describe("FsObjectStore reads bounded by max_object_bytes", () => {
  let base: string;
  let root: string;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "tenantry-fs-big-"));
    root = join(base, "objects");
    await mkdir(join(root, "t.d", "9.d"), { recursive: true });
  });
  afterEach(() => rm(base, { recursive: true, force: true }));

  it("refuses a file placed in the directory that is larger than the limit, from its size alone", async () => {
    // 3 GiB, sparse: reading it would take 3 GiB of memory (and Node refuses a readFile over 2 GiB).
    const handle = await open(join(root, "t.d", "9.d", "huge.f"), "w");
    await handle.truncate(3 * 1024 ** 3);
    await handle.close();
    const t = TenantStorage.forKey(new FsObjectStore(root), "9", { maxObjectBytes: 1024 * 1024 });
    const error = await t.get("huge").catch((e: unknown) => e);
    expect(isTenantryError(error, "payload_too_large")).toBe(true);
    expect((error as Error).message).toBe(
      `object of ${3 * 1024 ** 3} bytes exceeds max_object_bytes (1048576): not read`,
    );
  });

  it("stops reading one byte past the limit when the file grew after its size was read", async () => {
    await writeFile(join(root, "t.d", "9.d", "grown.f"), new Uint8Array(200 * 1024));
    // The size on the handle says 0 (as if the file was appended to right after the check).
    const probe = await open(join(root, "t.d", "9.d", "grown.f"), "r");
    const proto = Object.getPrototypeOf(probe) as { stat: (...args: unknown[]) => Promise<Stats> };
    await probe.close();
    const realStat = proto.stat;
    const spy = vi.spyOn(proto, "stat").mockImplementation(async function (this: unknown, ...args) {
      return Object.assign(await realStat.apply(this, args), { size: 0 });
    });
    try {
      const t = TenantStorage.forKey(new FsObjectStore(root), "9", { maxObjectBytes: 100 * 1024 });
      await expect(t.get("grown")).rejects.toMatchObject({ code: "payload_too_large" });
      expect(spy).toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});

/**
 * Objects Tenantry writes are regular files reached through real directories. Anything else at an
 * object's name (planted by whatever can write the storage root, or by a restored backup) is not
 * an object: it is never followed out of the root or the tenant's prefix, and never waited on.
 */
describe("FsObjectStore and what it did not write: links, FIFOs", () => {
  let base: string;
  let root: string;
  let store: FsObjectStore;
  const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "tenantry-fs-links-"));
    root = join(base, "objects");
    store = new FsObjectStore(root);
    await store.put("t/9/mine", bytes("tenant 9's own"));
    await store.put("t/7/theirs", bytes("tenant 7's secret"));
    await mkdir(join(base, "outside", "sub.d"), { recursive: true });
    await writeFile(join(base, "outside", "secret.f"), "outside the root");
    await writeFile(join(base, "outside", "sub.d", "deep.f"), "outside, deeper");
  });
  afterEach(() => rm(base, { recursive: true, force: true }));

  it("does not read, list or delete through a link at an object's name", async () => {
    const dir = join(root, "t.d", "9.d");
    await symlink(join(base, "outside", "secret.f"), join(dir, "passwd.f"));
    await symlink(join(root, "t.d", "7.d", "theirs.f"), join(dir, "theirs.f"));
    await symlink("/dev/zero", join(dir, "zero.f"));
    for (const key of ["passwd", "theirs", "zero"]) {
      expect(await store.get(`t/9/${key}`)).toBeUndefined();
      expect(await store.get(`t/9/${key}`, { maxBytes: 1024 })).toBeUndefined();
      expect(await store.getStream(`t/9/${key}`)).toBeUndefined();
    }
    expect((await store.list("t/9/", { limit: 100 })).keys).toEqual(["t/9/mine"]);
    // Delete removes the link itself, never what it points to.
    await store.delete("t/9/passwd");
    expect(await readFile(join(base, "outside", "secret.f"), "utf8")).toBe("outside the root");
    expect(text(await store.get("t/7/theirs"))).toBe("tenant 7's secret");
  });

  it("does not follow a linked directory inside a tenant prefix: get, list, put and delete stay in the root", async () => {
    await symlink(join(base, "outside"), join(root, "t.d", "9.d", "a.d"));
    expect(await store.get("t/9/a/secret")).toBeUndefined();
    expect(await store.get("t/9/a/sub/deep", { maxBytes: 1024 })).toBeUndefined();
    expect(await store.getStream("t/9/a/secret")).toBeUndefined();
    for (const prefix of ["t/9/a/", "t/9/a/s", "t/9/a/sub/", "t/9/"]) {
      expect((await store.list(prefix, { limit: 100 })).keys).toEqual(prefix === "t/9/" ? ["t/9/mine"] : []);
    }
    expect(await store.delete("t/9/a/secret")).toBe(false);
    expect(await readFile(join(base, "outside", "secret.f"), "utf8")).toBe("outside the root");
    const error = await store.put("t/9/a/planted", bytes("x")).catch((e: unknown) => e);
    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    expect((error as Error).message).toBe("object store put failed");
    expect(await readdir(join(base, "outside"))).toEqual(["secret.f", "sub.d"]);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("creates no directory through a linked directory: outside the root or in another tenant's prefix", async () => {
    await symlink(join(base, "outside"), join(root, "t.d", "9.d", "a.d"));
    await symlink(join(root, "t.d", "7.d"), join(root, "t.d", "8.d"));
    for (const key of ["t/9/a/new/deeper/planted", "t/8/new/planted"]) {
      const error = await store.put(key, bytes("x")).catch((e: unknown) => e);
      expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    }
    expect(await readdir(join(base, "outside"))).toEqual(["secret.f", "sub.d"]);
    expect(await readdir(join(root, "t.d", "7.d"))).toEqual(["theirs.f"]);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("does not follow a tenant's prefix directory linked to another tenant's", async () => {
    await symlink(join(root, "t.d", "7.d"), join(root, "t.d", "8.d"));
    expect(await store.get("t/8/theirs")).toBeUndefined();
    expect((await store.list("t/8/", { limit: 100 })).keys).toEqual([]);
    expect(await store.delete("t/8/theirs")).toBe(false);
    expect(text(await store.get("t/7/theirs"))).toBe("tenant 7's secret");
  });

  it("deletePrefix of a tenant removes its whole directory, planted links and FIFOs too, through none of them", async () => {
    const dir = join(root, "t.d", "9.d");
    await store.put("t/9/a/b", bytes("nested"));
    await symlink(join(base, "outside", "secret.f"), join(dir, "passwd.f"));
    await symlink(join(root, "t.d", "7.d"), join(dir, "other.d")); // another tenant's directory
    await symlink(join(base, "outside"), join(dir, "a.d", "out.d"));
    await symlink(join(base, "nowhere"), join(dir, "dangling.f"));
    execFileSync("mkfifo", [join(dir, "pipe.f")]);
    execFileSync("mkfifo", [join(dir, "a.d", "pipe")]);
    const late = Symbol("still running after 5 s");
    const deleted = await Promise.race([
      store.deletePrefix("t/9/"),
      new Promise<typeof late>((r) => setTimeout(() => r(late), 5000).unref()),
    ]);
    expect(deleted).toBe(2); // the objects: what is not one is removed, not counted
    expect(await readdir(join(root, "t.d"))).toEqual(["7.d"]);
    expect(await readFile(join(base, "outside", "secret.f"), "utf8")).toBe("outside the root");
    expect(await readFile(join(base, "outside", "sub.d", "deep.f"), "utf8")).toBe("outside, deeper");
    expect(text(await store.get("t/7/theirs"))).toBe("tenant 7's secret");
    expect(await readdir(join(root, "t.d", "7.d"))).toEqual(["theirs.f"]);
  });

  it("deletePrefix refuses a tenant's prefix directory that is a link, and removes nothing through it", async () => {
    await symlink(join(root, "t.d", "7.d"), join(root, "t.d", "8.d"));
    const error = await store.deletePrefix("t/8/").catch((e: unknown) => e);
    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    expect((error as Error).message).toBe("object store delete failed");
    expect(await readdir(join(root, "t.d", "7.d"))).toEqual(["theirs.f"]);
    expect(text(await store.get("t/7/theirs"))).toBe("tenant 7's secret");
  });

  it("answers at once, with no object, for a FIFO at an object's name (no writer is waited for)", async () => {
    const fifo = join(root, "t.d", "9.d", "pipe.f");
    execFileSync("mkfifo", [fifo]);
    const late = Symbol("still waiting after 2 s");
    const within2s = <T>(p: Promise<T>) =>
      Promise.race([p, new Promise<typeof late>((r) => setTimeout(() => r(late), 2000).unref())]);
    try {
      expect(await within2s(store.get("t/9/pipe"))).toBeUndefined();
      expect(await within2s(store.get("t/9/pipe", { maxBytes: 1024 }))).toBeUndefined();
      expect(await within2s(store.getStream("t/9/pipe"))).toBeUndefined();
      expect((await store.list("t/9/", { limit: 100 })).keys).toEqual(["t/9/mine"]);
    } finally {
      // Old code blocked a thread pool thread in open(2): a writer lets it go.
      const writer = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
      await writer?.close();
    }
  });
});

describe("FsObjectStore I/O failures", () => {
  let base: string;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "tenantry-fs-fail-"));
  });
  afterEach(() => rm(base, { recursive: true, force: true }));

  it("fail with backend_unavailable, as on S3, without the server's paths in the message", async () => {
    // The root is a file (a misconfigured mount): nothing can be written or created below it.
    const root = join(base, "objects-root");
    await writeFile(root, "not a directory");
    const store = new FsObjectStore(root);
    const error = await store.put("t/1/a", bytes("x")).catch((e: unknown) => e);
    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    expect((error as Error).message).toBe("object store put failed");
    expect((error as Error).message).not.toContain(base);
    expect((error as Error).cause).toBeInstanceOf(Error); // the errno error, for the server's log
  });
});
