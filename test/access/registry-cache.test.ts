import { describe, expect, it } from "vitest";
import type { Database, QueryResult, Row } from "../../src/db/database.js";
import { TenantRegistry } from "../../src/tenancy/registry.js";

/*
 * The registry cache in front of the store: invalidation (what a NOTIFY triggers) must win over
 * reads that were already under way, so a change is seen on the next request, and concurrent
 * misses share one read.
 */

interface PendingRead {
  id: string;
  resolve(allowedTools: string[]): void;
}

function fakeDatabase() {
  const reads: PendingRead[] = [];
  const db = {
    kind: "postgres",
    query<R extends Row>(_text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
      const id = String(params[0]);
      return new Promise((resolve) => {
        reads.push({
          id,
          resolve: (allowedTools) => {
            const now = new Date();
            const row = {
              id,
              key: "1",
              name: id,
              status: "active",
              expires_at: null,
              rate_limit: null,
              allowed_tools: allowedTools,
              feature_flags: {},
              provisioning_step: null,
              archive_path: null,
              purge_after: null,
              created_at: now,
              updated_at: now,
            };
            resolve({ rows: [row as unknown as R], rowCount: 1 });
          },
        });
      });
    },
  } as unknown as Database;
  return { db, reads };
}

/** Answers at once: a row for the ids in `known`, none for the others; counts reads per id. */
function countingDatabase(known: ReadonlySet<string>) {
  const reads = new Map<string, number>();
  const db = {
    kind: "postgres",
    async query<R extends Row>(_text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
      const id = String(params[0]);
      reads.set(id, (reads.get(id) ?? 0) + 1);
      if (!known.has(id)) return { rows: [], rowCount: 0 };
      const now = new Date();
      const row = {
        id,
        key: id,
        name: id,
        status: "active",
        expires_at: null,
        rate_limit: null,
        allowed_tools: [],
        feature_flags: {},
        provisioning_step: null,
        archive_path: null,
        purge_after: null,
        created_at: now,
        updated_at: now,
        version: 1,
      };
      return { rows: [row as unknown as R], rowCount: 1 };
    },
  } as unknown as Database;
  return { db, reads };
}

const tools = async (value: ReturnType<TenantRegistry["get"]>) => (await value)?.config.allowedTools;

describe("TenantRegistry cache", () => {
  it("concurrent misses share one read, and a hit needs none", async () => {
    const { db, reads } = fakeDatabase();
    const registry = new TenantRegistry(db, { ttlMs: 60_000 });
    const a = registry.get("acme");
    const b = registry.get("acme");
    expect(reads).toHaveLength(1);
    reads[0]!.resolve(["x"]);
    expect(await tools(a)).toEqual(["x"]);
    expect(await tools(b)).toEqual(["x"]);
    expect(await tools(registry.get("acme"))).toEqual(["x"]);
    expect(reads).toHaveLength(1);
  });

  it("an invalidation during a read: the stale result is not cached, and the newer read stays shared", async () => {
    const { db, reads } = fakeDatabase();
    const registry = new TenantRegistry(db, { ttlMs: 60_000 });
    const stale = registry.get("acme"); // read 0 started before the change
    registry.invalidate("acme"); // the NOTIFY of the change arrives
    const fresh = registry.get("acme"); // read 1
    expect(reads).toHaveLength(2);
    reads[0]!.resolve(["old"]);
    expect(await tools(stale)).toEqual(["old"]);
    // Read 0 finishing must not drop read 1 from the in-flight map: this get joins it.
    const joined = registry.get("acme");
    expect(reads).toHaveLength(2);
    reads[1]!.resolve(["new"]);
    expect(await tools(fresh)).toEqual(["new"]);
    expect(await tools(joined)).toEqual(["new"]);
    expect(await tools(registry.get("acme"))).toEqual(["new"]);
    expect(reads).toHaveLength(2);
  });

  it("invalidate() without an id drops every entry; the TTL bounds staleness if a notification is lost", async () => {
    let now = 0;
    const { db, reads } = fakeDatabase();
    const registry = new TenantRegistry(db, { ttlMs: 1000, now: () => now });
    const first = registry.get("acme");
    reads[0]!.resolve(["a"]);
    await first;
    registry.invalidate();
    const second = registry.get("acme");
    expect(reads).toHaveLength(2);
    reads[1]!.resolve(["b"]);
    expect(await tools(second)).toEqual(["b"]);
    now = 999;
    expect(await tools(registry.get("acme"))).toEqual(["b"]);
    now = 1001;
    const third = registry.get("acme");
    expect(reads).toHaveLength(3);
    reads[2]!.resolve(["c"]);
    expect(await tools(third)).toEqual(["c"]);
  });

  it("renews an entry in use ahead of expiry: requests never wait, and one read renews it", async () => {
    let now = 0;
    const { db, reads } = fakeDatabase();
    const registry = new TenantRegistry(db, { ttlMs: 1000, now: () => now });
    const first = registry.get("acme");
    reads[0]!.resolve(["v1"]);
    await first;
    now = 700; // before the last quarter: a plain hit
    expect(registry.get("acme")).not.toBeInstanceOf(Promise);
    expect(reads).toHaveLength(1);
    now = 800; // last quarter: answered at once, renewed in the background, once
    for (let i = 0; i < 5; i++) {
      const got = registry.get("acme");
      expect(got).not.toBeInstanceOf(Promise);
      expect((got as unknown as { config: { allowedTools: string[] } }).config.allowedTools).toEqual(["v1"]);
    }
    expect(reads).toHaveLength(2);
    reads[1]!.resolve(["v2"]);
    await Promise.resolve();
    await Promise.resolve();
    now = 1500; // past the first entry's TTL, inside the renewed one
    const renewed = registry.get("acme");
    expect(renewed).not.toBeInstanceOf(Promise);
    expect(await tools(renewed)).toEqual(["v2"]);
    expect(reads).toHaveLength(2);
  });

  it("never uses an entry past its TTL, even while its renewal is still reading", async () => {
    let now = 0;
    const { db, reads } = fakeDatabase();
    const registry = new TenantRegistry(db, { ttlMs: 1000, now: () => now });
    const first = registry.get("acme");
    reads[0]!.resolve(["old"]);
    await first;
    now = 900;
    registry.get("acme"); // starts the renewal (read 1), still pending
    expect(reads).toHaveLength(2);
    now = 1000; // expired: the request waits for the renewal instead of using "old"
    const waiting = registry.get("acme");
    expect(waiting).toBeInstanceOf(Promise);
    reads[1]!.resolve(["new"]);
    expect(await tools(waiting)).toEqual(["new"]);
  });

  it("a failed renewal leaves the entry to expire; the request after that reads, and sees the failure", async () => {
    let now = 0;
    let fail = false;
    const { db, reads } = fakeDatabase();
    const failing = {
      ...db,
      query: (text: string, params?: readonly unknown[]) =>
        fail ? Promise.reject(new Error("database down")) : db.query(text, params),
    } as unknown as Database;
    const registry = new TenantRegistry(failing, { ttlMs: 1000, now: () => now });
    const first = registry.get("acme");
    reads[0]!.resolve(["v1"]);
    await first;
    fail = true;
    now = 900;
    expect(await tools(registry.get("acme"))).toEqual(["v1"]); // renewal fails in the background
    await new Promise((resolve) => setImmediate(resolve));
    expect(await tools(registry.get("acme"))).toEqual(["v1"]); // still inside the TTL
    now = 1000;
    await expect(Promise.resolve(registry.get("acme"))).rejects.toThrow("database down");
  });

  it("no number of distinct unknown tenant ids evicts a tenant's entry", async () => {
    const real = Array.from({ length: 8 }, (_, i) => `org_${i}`);
    const { db, reads } = countingDatabase(new Set(real));
    const registry = new TenantRegistry(db, {
      ttlMs: 60_000,
      maxEntries: real.length,
      maxNegativeEntries: 4,
    });
    for (const id of real) expect((await registry.get(id))?.id).toBe(id);
    // Anyone with a validly signed token for a tenant id of their choosing: 1,000 distinct ids.
    for (let i = 0; i < 1000; i++) expect(await registry.get(`attacker-${i}`)).toBeUndefined();
    for (const id of real) {
      const got = registry.get(id);
      expect(got).not.toBeInstanceOf(Promise); // answered from memory, synchronously
      expect((got as Awaited<typeof got>)?.id).toBe(id);
      expect(reads.get(id)).toBe(1);
    }
    // Negatives stay bounded by their own cap: at most 4 kept beside the 8 tenants.
    expect(registry.size).toBe(real.length + 4);
  });

  it("caches 'no such tenant' within its own cap, and an invalidation (the tenant is created) drops it", async () => {
    const known = new Set<string>();
    const { db, reads } = countingDatabase(known);
    const registry = new TenantRegistry(db, { ttlMs: 60_000, maxNegativeEntries: 2 });
    expect(await registry.get("later")).toBeUndefined();
    expect(registry.get("later")).toBeUndefined(); // a hit, no read
    expect(reads.get("later")).toBe(1);
    await registry.get("x");
    await registry.get("y"); // the oldest negative ("later") is dropped
    expect(await registry.get("later")).toBeUndefined();
    expect(reads.get("later")).toBe(2);
    known.add("later");
    registry.invalidate("later");
    expect((await registry.get("later"))?.id).toBe("later");
    expect(registry.get("later")).not.toBeInstanceOf(Promise);
    expect(reads.get("later")).toBe(3);
  });
  it("'no such tenant' is trusted for the TTL at most, and never hides a tenant read after it", async () => {
    const known = new Set<string>();
    const { db, reads } = countingDatabase(known);
    let now = 1_000_000;
    const registry = new TenantRegistry(db, { ttlMs: 1_000, now: () => now });
    expect(await registry.get("late")).toBeUndefined();
    // Created elsewhere and its notification lost: still "no such tenant" until the TTL …
    known.add("late");
    now += 999;
    expect(registry.get("late")).toBeUndefined();
    expect(reads.get("late")).toBe(1);
    // … and not a moment after it.
    now += 1;
    expect((await registry.get("late"))?.id).toBe("late");
    expect(reads.get("late")).toBe(2);
    // A positive entry is answered from memory; no negative is left beside it.
    expect((registry.get("late") as Awaited<ReturnType<TenantRegistry["get"]>>)?.id).toBe("late");
    expect(registry.size).toBe(1);

    // A negative read that an invalidation (the tenant's creation) overtook is not cached.
    const answers: Array<(found: boolean) => void> = [];
    const rows = countingDatabase(new Set(["raced"]));
    const slowDb = {
      kind: "postgres",
      query: (text: string, params: readonly unknown[]) =>
        new Promise((resolve) => {
          answers.push((found) => resolve(found ? rows.db.query(text, params) : { rows: [], rowCount: 0 }));
        }),
    } as unknown as Database;
    const racing = new TenantRegistry(slowDb, { ttlMs: 60_000 });
    const stale = racing.get("raced");
    racing.invalidate("raced");
    const fresh = racing.get("raced");
    expect(answers).toHaveLength(2);
    answers[1]!(true);
    expect((await fresh)?.id).toBe("raced");
    // The first read resolves last, saying "no such tenant": the tenant stays cached, not shadowed.
    answers[0]!(false);
    expect(await stale).toBeUndefined();
    const hit = racing.get("raced");
    expect(hit).not.toBeInstanceOf(Promise);
    expect((hit as Awaited<typeof hit>)?.id).toBe("raced");
  });
});
