import { describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { BatchingAuditSink } from "../../src/audit/batching-sink.js";
import { fanOut } from "../../src/audit/sinks.js";
import { auditEvent } from "../support/records.js";

const event = auditEvent;

/** A writer that records what it wrote and fails while `down()` says so (all or nothing). */
function writer(down: () => boolean = () => false) {
  const rows: string[] = [];
  return {
    rows,
    write: async (batch: readonly AuditEvent[]) => {
      if (down()) throw new Error("down");
      rows.push(...batch.map((e) => e.requestId ?? ""));
    },
  };
}

/** `sink = "both"`: the database writer then the file writer, batches flushed only on demand. */
function bothSink(database: ReturnType<typeof writer>, file: ReturnType<typeof writer>) {
  return new BatchingAuditSink(fanOut([database.write, file.write]), {
    queueSize: 100,
    batchSize: 10,
    flushIntervalMs: 60_000,
  });
}

describe('sink = "both": a batch retried after one writer failed', () => {
  it("gives each writer only what it has not written, so neither duplicates nor loses events", async () => {
    let fileDown = true;
    const database = writer();
    const file = writer(() => fileDown);
    const sink = bothSink(database, file);
    for (let i = 0; i < 4; i++) sink.enqueue(event(i));
    await expect(sink.flush()).rejects.toThrow("down");
    expect(database.rows).toEqual(["r0", "r1", "r2", "r3"]);
    expect(file.rows).toEqual([]);
    // More events arrive before the retry: the retried batch carries them too.
    for (let i = 4; i < 6; i++) sink.enqueue(event(i));
    fileDown = false;
    await sink.flush();
    const all = ["r0", "r1", "r2", "r3", "r4", "r5"];
    expect(database.rows).toEqual(all);
    expect(file.rows).toEqual(all);
    expect(sink.pending).toBe(0);
  });

  it("the same when the first writer is the one that failed", async () => {
    let databaseDown = true;
    const database = writer(() => databaseDown);
    const file = writer();
    const sink = bothSink(database, file);
    for (let i = 0; i < 3; i++) sink.enqueue(event(i));
    await expect(sink.flush()).rejects.toThrow("down");
    await expect(sink.flush()).rejects.toThrow("down");
    expect(file.rows).toEqual([]); // not reached: writers run in order
    databaseDown = false;
    await sink.flush();
    expect(database.rows).toEqual(["r0", "r1", "r2"]);
    expect(file.rows).toEqual(["r0", "r1", "r2"]);
  });

  it("a batch that is not a retry is written whole to every writer, even if it reuses event objects", async () => {
    const database = writer();
    const file = writer();
    const write = fanOut([database.write, file.write]);
    const same = event(7);
    await write([same, same]);
    await write([same]);
    expect(database.rows).toEqual(["r7", "r7", "r7"]);
    expect(file.rows).toEqual(["r7", "r7", "r7"]);
  });
});

describe('sink = "both": an admin event written while a failed batch waits for its retry', () => {
  it("does not make the retry start over: the writer that had the batch does not get it twice", async () => {
    let fileDown = true;
    const database = writer();
    const file = writer(() => fileDown);
    const sink = bothSink(database, file);
    for (let i = 0; i < 3; i++) sink.enqueue(event(i));
    await expect(sink.flush()).rejects.toThrow("down");
    fileDown = false;
    // An admin action is written at once (not queued) before the batch's retry.
    await sink.write(event(9));
    await sink.flush();
    expect(database.rows).toEqual(["r0", "r1", "r2", "r9"]);
    expect(file.rows).toEqual(["r9", "r0", "r1", "r2"]);
  });

  it("nor does one that fails too", async () => {
    let fileDown = true;
    const database = writer();
    const file = writer(() => fileDown);
    const sink = bothSink(database, file);
    for (let i = 0; i < 3; i++) sink.enqueue(event(i));
    await expect(sink.flush()).rejects.toThrow("down");
    await expect(sink.write(event(9))).rejects.toThrow("down");
    fileDown = false;
    await sink.flush();
    expect(database.rows).toEqual(["r0", "r1", "r2", "r9"]);
    expect(file.rows).toEqual(["r0", "r1", "r2"]);
  });
});
