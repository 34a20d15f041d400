import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { jsonlAuditReader } from "../../src/audit/audit-query.js";
import { jsonlWriter } from "../../src/audit/sinks.js";
import { auditEvent } from "../support/records.js";

describe("JSON lines writer", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-jsonl-"));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  const requestIds = async (path: string) =>
    (await jsonlAuditReader(path).query({ limit: 10_000 })).map((e) => e.requestId);

  it("writes again once its directory can be made: one failure is not remembered for good", async () => {
    const logs = join(dir, "logs");
    const path = join(logs, "audit.jsonl");
    await writeFile(logs, "a file where the directory should be");
    const write = jsonlWriter(path);
    await expect(write([auditEvent(1)])).rejects.toThrow();
    // The operator clears the way; the sink retries the batch.
    await rm(logs);
    await write([auditEvent(1)]);
    await write([auditEvent(2)]);
    expect(await requestIds(path)).toEqual(["r1", "r2"]);
  });

  it("makes its directory again if it was removed while running", async () => {
    const logs = join(dir, "logs");
    const path = join(logs, "audit.jsonl");
    const write = jsonlWriter(path);
    await write([auditEvent(1)]);
    await rm(logs, { recursive: true });
    await write([auditEvent(2)]);
    expect(await requestIds(path)).toEqual(["r2"]);
  });

  it("starts on a line of its own after a torn last line (a crash mid-write): no event is glued to it", async () => {
    const path = join(dir, "audit.jsonl");
    await writeFile(path, '{"at":"2026-');
    const write = jsonlWriter(path);
    await write([auditEvent(1), auditEvent(2)]);
    await write([auditEvent(3)]);
    expect(await requestIds(path)).toEqual(["r1", "r2", "r3"]);
    // Only one line was started afresh: later batches follow on as usual.
    expect((await readFile(path, "utf8")).split("\n")).toHaveLength(5);
  });
});
