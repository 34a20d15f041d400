import { describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { BatchingAuditSink } from "../../src/audit/batching-sink.js";
import { auditEvent } from "../support/records.js";

const event = auditEvent;

function recorder(options: { fail?: () => boolean; delayMs?: number } = {}) {
  const written: AuditEvent[][] = [];
  const write = async (batch: readonly AuditEvent[]) => {
    if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
    if (options.fail?.()) throw new Error("sink down");
    written.push([...batch]);
  };
  return { written, write, all: () => written.flat().map((e) => e.requestId) };
}

describe("BatchingAuditSink", () => {
  it("writes batches in order, off the caller's path", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, { queueSize: 100, batchSize: 3, flushIntervalMs: 10_000 });
    for (let i = 0; i < 7; i++) sink.enqueue(event(i));
    expect(r.written.length).toBeLessThanOrEqual(1); // nothing awaited yet
    await sink.flush();
    expect(r.all()).toEqual(["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
    expect(r.written.every((b) => b.length <= 3)).toBe(true);
    expect(sink.pending).toBe(0);
  });

  it("under load writes full batches; a remainder waits for its timer instead of going out alone", async () => {
    const r = recorder({ delayMs: 20 });
    const sink = new BatchingAuditSink(r.write, { queueSize: 100, batchSize: 3, flushIntervalMs: 150 });
    for (let i = 0; i < 3; i++) sink.enqueue(event(i)); // a full batch: written at once
    for (let i = 3; i < 8; i++) sink.enqueue(event(i)); // arrive while it is in flight
    await new Promise((resolve) => setTimeout(resolve, 80));
    // The first batch, then the one full batch that was waiting; "r6", "r7" wait for the timer.
    expect(r.written.map((b) => b.map((e) => e.requestId))).toEqual([
      ["r0", "r1", "r2"],
      ["r3", "r4", "r5"],
    ]);
    expect(sink.pending).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(r.written.at(-1)?.map((e) => e.requestId)).toEqual(["r6", "r7"]);
    expect(sink.pending).toBe(0);
  });

  it("writes small batches while it keeps up, and batches grow to batch_size when events outpace it", async () => {
    let release: () => void = () => {};
    const written: string[][] = [];
    const write = async (batch: readonly AuditEvent[]) => {
      written.push(batch.map((e) => e.requestId ?? ""));
      await new Promise<void>((resolve) => {
        release = resolve;
      });
    };
    const sink = new BatchingAuditSink(write, {
      queueSize: 100,
      batchSize: 5,
      startAt: 2,
      flushIntervalMs: 10_000,
    });
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    sink.enqueue(event(0));
    await settle();
    expect(written).toEqual([]); // fewer than startAt: waits for the timer
    sink.enqueue(event(1));
    await settle();
    expect(written).toEqual([["r0", "r1"]]); // startAt reached: written at once, not at batch_size
    for (let i = 2; i < 10; i++) sink.enqueue(event(i)); // arrive faster than the write takes
    release();
    await settle();
    expect(written.at(-1)).toEqual(["r2", "r3", "r4", "r5", "r6"]); // as many as batch_size allows
    release();
    await settle();
    expect(written.at(-1)).toEqual(["r7", "r8", "r9"]); // at least startAt wait: written too
    sink.enqueue(event(10));
    release();
    await settle();
    expect(written).toHaveLength(3); // one left over waits for the timer or for startAt
    expect(sink.pending).toBe(1);
    const flushed = sink.flush();
    await settle();
    release();
    await flushed;
    expect(written.at(-1)).toEqual(["r10"]);
  });

  it("flushes on its timer when fewer than a batch are queued", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, { queueSize: 100, batchSize: 50, flushIntervalMs: 10 });
    sink.enqueue(event(1));
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(r.all()).toEqual(["r1"]);
  });

  it("reserves room before the work, refuses when full, and a reserved slot never fails", async () => {
    const r = recorder({ delayMs: 5 });
    const sink = new BatchingAuditSink(r.write, { queueSize: 2, batchSize: 100, flushIntervalMs: 10_000 });
    expect(sink.reserve()).toBe(true);
    expect(sink.reserve()).toBe(true);
    expect(sink.full).toBe(true);
    expect(sink.reserve()).toBe(false);
    // Unreserved events are refused too: reservations count against the bound.
    expect(() => sink.enqueue(event(9))).toThrow(expect.objectContaining({ code: "service_unavailable" }));
    sink.enqueue(event(1), { reserved: true });
    sink.enqueue(event(2), { reserved: true });
    expect(sink.pending).toBe(2);
    expect(sink.reserve()).toBe(false);
    await sink.flush();
    expect(sink.full).toBe(false);
    expect(sink.reserve()).toBe(true);
    expect(r.all()).toEqual(["r1", "r2"]);
  });

  it("refusals before authentication take at most their share; the rest are counted, then summarised", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, {
      queueSize: 30,
      batchSize: 100,
      flushIntervalMs: 10_000,
      replica: "r-1",
    });
    const junk = (n: number, code = "invalid_token"): AuditEvent => ({
      ...event(n),
      tenantId: null,
      userId: null,
      outcome: "denied",
      errorCode: code,
      at: new Date(n * 1000).toISOString(),
    });
    // Nothing is written until flushed (the writer is behind); a tenth of 30 is 3.
    let queued = 0;
    for (let i = 0; i < 10; i++)
      if (sink.enqueueRefused(junk(i, i === 9 ? "forbidden" : undefined))) queued++;
    expect(queued).toBe(3);
    expect(sink.unrecorded).toBe(7);
    // Authenticated requests still have the rest of the queue, to the last slot.
    let reserved = 0;
    while (sink.reserve()) reserved++;
    expect(reserved).toBe(27);
    for (let i = 0; i < reserved; i++) sink.enqueue(event(100 + i), { reserved: true });
    await sink.flush();
    const written = r.written.flat();
    expect(written).toHaveLength(31);
    const summary = written.at(-1)!;
    expect(summary).toMatchObject({
      at: new Date(3000).toISOString(),
      kind: "request",
      action: "audit.unrecorded",
      tenantId: null,
      outcome: "denied",
      replica: "r-1",
      details: {
        unrecorded: 7,
        since: new Date(3000).toISOString(),
        until: new Date(9000).toISOString(),
        error_codes: { invalid_token: 6, forbidden: 1 },
      },
    });
    expect(sink.unrecorded).toBe(0);
    // The share is free again once its events are written.
    expect(sink.enqueueRefused(junk(20))).toBe(true);
    await sink.close();
  });

  it("the summary counts refusals per tenant, naming at most 100 tenants whatever ids tokens carry", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, { queueSize: 1, batchSize: 10, flushIntervalMs: 10_000 });
    expect(sink.reserve()).toBe(true); // the queue is full: every refusal is only counted
    const refusal = (tenantId: string | null): AuditEvent => ({
      ...event(1),
      tenantId,
      outcome: "denied",
      errorCode: "unknown_tenant",
    });
    // Ids of unknown tenants come from tokens: `__proto__` is a valid one.
    for (const id of ["__proto__", "__proto__", "constructor", null]) sink.enqueueRefused(refusal(id));
    for (let i = 0; i < 150; i++) sink.enqueueRefused(refusal(`ghost-${i}`));
    sink.enqueue(event(2), { reserved: true });
    await sink.close();
    const summary = r.written.flat().find((e) => e.action === "audit.unrecorded")!;
    const tenants = summary.details!.tenants as Record<string, number>;
    expect(Object.hasOwn(tenants, "__proto__")).toBe(true);
    expect(Object.getOwnPropertyDescriptor(tenants, "__proto__")?.value).toBe(2);
    expect(tenants.constructor).toBe(1);
    expect(Object.keys(tenants)).toHaveLength(101); // 100 ids and (other)
    expect(tenants["(other)"]).toBe(52);
    expect(Object.values(tenants).reduce((n, c) => n + c, 0)).toBe(153); // the null-tenant one is not named
    expect(summary.details!.unrecorded).toBe(154);
  });

  it("close() writes the summary of refusals not recorded one by one", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, { queueSize: 1, batchSize: 10, flushIntervalMs: 10_000 });
    expect(sink.reserve()).toBe(true);
    expect(sink.enqueueRefused({ ...event(1), errorCode: "invalid_token" })).toBe(false);
    sink.enqueue(event(2), { reserved: true });
    await sink.close();
    expect(r.written.flat().map((e) => e.action)).toEqual(["tools/call", "audit.unrecorded"]);
  });

  it("keeps a failed batch at the head and retries it, in order", async () => {
    let down = true;
    const errors: unknown[] = [];
    const r = recorder({ fail: () => down });
    const sink = new BatchingAuditSink(r.write, {
      queueSize: 100,
      batchSize: 2,
      flushIntervalMs: 5,
      maxRetryDelayMs: 20,
      onError: (e) => errors.push(e),
    });
    for (let i = 0; i < 5; i++) sink.enqueue(event(i));
    await expect(sink.flush()).rejects.toThrow("sink down");
    expect(sink.pending).toBe(5);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(errors.length).toBeGreaterThan(0);
    down = false;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(r.all()).toEqual(["r0", "r1", "r2", "r3", "r4"]);
    expect(sink.pending).toBe(0);
    await sink.close();
  });

  it("close() flushes everything queued, including events queued while closing", async () => {
    const r = recorder({ delayMs: 2 });
    const sink = new BatchingAuditSink(r.write, { queueSize: 1000, batchSize: 10, flushIntervalMs: 10_000 });
    for (let i = 0; i < 25; i++) sink.enqueue(event(i));
    const closing = sink.close();
    sink.enqueue(event(99));
    await closing;
    expect(r.all()).toHaveLength(26);
    expect(new Set(r.all()).size).toBe(26);
  });

  it("write() is synchronous with the caller and reports failure", async () => {
    const r = recorder({ fail: () => true });
    const sink = new BatchingAuditSink(r.write, { queueSize: 1, batchSize: 1, flushIntervalMs: 10 });
    await expect(sink.write(event(1))).rejects.toThrow("sink down");
  });

  it("a timer drain that finds the queue empty does not wedge later flushes", async () => {
    const r = recorder();
    const sink = new BatchingAuditSink(r.write, { queueSize: 100, batchSize: 50, flushIntervalMs: 5 });
    sink.enqueue(event(1));
    await sink.flush(); // empties the queue before the timer fires
    await new Promise((resolve) => setTimeout(resolve, 30));
    sink.enqueue(event(2));
    await sink.flush();
    expect(r.all()).toEqual(["r1", "r2"]);
    await sink.close();
  });
});
