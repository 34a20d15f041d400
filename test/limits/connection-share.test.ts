import { describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import type { Release } from "../../src/limits/concurrency.js";
import { ConnectionShare } from "../../src/limits/connection-share.js";

const take = async (share: ConnectionShare, key: string): Promise<Release> => {
  const slot = share.acquire(key);
  return slot instanceof Promise ? slot : slot;
};

describe("ConnectionShare: each tenant's share of the pool", () => {
  it("grants up to max slots at once, synchronously, and each tenant has its own", () => {
    const share = new ConnectionShare(2, 1000);
    const a1 = share.acquire("a");
    const a2 = share.acquire("a");
    expect(typeof a1).toBe("function");
    expect(typeof a2).toBe("function");
    const a3 = share.acquire("a");
    expect(a3).toBeInstanceOf(Promise);
    // Another tenant is not affected by a's queue.
    expect(typeof share.acquire("b")).toBe("function");
    expect(share.held("a")).toBe(2);
    expect(share.held("b")).toBe(1);
    (a1 as Release)();
    (a2 as Release)();
    return (a3 as Promise<Release>).then((release) => release());
  });

  it("hands a freed slot to the oldest waiter, and a newcomer cannot overtake it", async () => {
    const share = new ConnectionShare(1, 1000);
    const first = share.acquire("a") as Release;
    const order: string[] = [];
    const w1 = (share.acquire("a") as Promise<Release>).then((r) => {
      order.push("w1");
      return r;
    });
    const w2 = (share.acquire("a") as Promise<Release>).then((r) => {
      order.push("w2");
      return r;
    });
    first();
    // The slot went to w1 at once: a newcomer now waits too.
    expect(share.acquire("a")).toBeInstanceOf(Promise);
    (await w1)();
    (await w2)();
    expect(order).toEqual(["w1", "w2"]);
  });

  it("a release is counted once, however often it is called", async () => {
    const share = new ConnectionShare(1, 1000);
    const release = share.acquire("a") as Release;
    const waiter = share.acquire("a") as Promise<Release>;
    release();
    release();
    const second = await waiter;
    expect(share.held("a")).toBe(1);
    expect(share.acquire("a")).toBeInstanceOf(Promise); // still one holder: the waiter
    second();
  });

  it("a call that waits longer than waitMs fails with service_unavailable and leaves no trace", async () => {
    const share = new ConnectionShare(1, 30);
    const held = share.acquire("a") as Release;
    const error = await take(share, "a").catch((e: unknown) => e);
    expect(isTenantryError(error, "service_unavailable")).toBe(true);
    expect(share.held("a")).toBe(1);
    held();
    expect(share.tracked).toBe(0);
    // The timed-out waiter is gone from the queue: the next caller gets the slot at once.
    const next = share.acquire("a");
    expect(typeof next).toBe("function");
    (next as Release)();
  });

  it("keeps no state for tenants that hold nothing", async () => {
    const share = new ConnectionShare(3, 1000);
    for (let i = 0; i < 1000; i++) (share.acquire(`t${i}`) as Release)();
    expect(share.tracked).toBe(0);
    // Five calls through a share of three: each releases when done, the waiters get through.
    await Promise.all(
      Array.from({ length: 5 }, async () => {
        const release = await take(share, "busy");
        await new Promise((resolve) => setTimeout(resolve, 5));
        release();
      }),
    );
    expect(share.tracked).toBe(0);
  });

  it("refuses a max that is not an integer ≥ 1", () => {
    for (const max of [0, -1, 1.5, Number.NaN]) {
      expect(() => new ConnectionShare(max, 1000)).toThrow(/max_connections_per_tenant/);
    }
  });
});
