import { describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { MemoryStore } from "../../src/limits/memory-store.js";

function fakeClock(startMs = 1_000_000) {
  let now = startMs;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

async function countAllowed(store: MemoryStore, tenant: string, n: number, limit: number, burst = 0) {
  let allowed = 0;
  for (let i = 0; i < n; i++) if ((await store.check(tenant, limit, burst)).allowed) allowed++;
  return allowed;
}

describe("MemoryStore", () => {
  it("limits each tenant on its own: limit + burst at once, then the steady rate", async () => {
    const clock = fakeClock();
    const store = new MemoryStore({ now: clock.now });
    expect(await countAllowed(store, "acme", 100, 60, 10)).toBe(70);
    expect(await countAllowed(store, "globex", 100, 60, 10)).toBe(70);
    const denied = await store.check("acme", 60, 10);
    expect(denied).toMatchObject({ allowed: false, retryAfterMs: 1000, reason: "rate_limited" });
    clock.advance(1000);
    expect(await countAllowed(store, "acme", 10, 60, 10)).toBe(1);
  });

  it("keeps at most maxTrackedTenants entries (100k distinct tenants, bound 1000)", () => {
    const clock = fakeClock();
    const store = new MemoryStore({ maxTrackedTenants: 1000, now: clock.now });
    let allowed = 0;
    let largest = 0;
    for (let i = 0; i < 100_000; i++) {
      if (store.take(`tenant-${i}`, 60, 0).allowed) allowed++;
      largest = Math.max(largest, store.size);
    }
    expect(allowed).toBe(100_000);
    expect(largest).toBe(1000);
  });

  it("evicts the least recently used tenant, keeping the state of recently used ones", () => {
    const store = new MemoryStore({ maxTrackedTenants: 2, now: fakeClock().now });
    expect(store.take("a", 1, 0).allowed).toBe(true);
    expect(store.take("b", 1, 0).allowed).toBe(true);
    expect(store.take("a", 1, 0).allowed).toBe(false); // touches a
    expect(store.take("c", 1, 0).allowed).toBe(true); // evicts b
    expect(store.size).toBe(2);
    expect(store.take("a", 1, 0).allowed).toBe(false); // a kept its debt
    expect(store.take("b", 1, 0).allowed).toBe(true); // b starts afresh
  });

  it("drops tenants whose capacity has fully refilled", () => {
    const clock = fakeClock();
    const store = new MemoryStore({ now: clock.now });
    for (let i = 0; i < 10; i++) store.take(`idle-${i}`, 60, 0);
    expect(store.size).toBe(10);
    clock.advance(1000); // each idle tenant spent one request: full again after one interval
    for (let i = 0; i < 5; i++) store.take("busy", 6, 0);
    expect(store.size).toBe(1);
  });

  it("rejects an invalid limit without touching state", async () => {
    const store = new MemoryStore({ now: fakeClock().now });
    const error = await store.check("acme", 0, 0).catch((e: unknown) => e);
    expect(isTenantryError(error, "invalid_argument")).toBe(true);
    expect(store.size).toBe(0);
  });

  it("uses a monotonic clock by default", async () => {
    const store = new MemoryStore();
    expect(await countAllowed(store, "acme", 10, 5)).toBe(5);
    await store.close();
    expect(store.size).toBe(0);
  });
});
