import { Writable } from "node:stream";
import { type Logger, pino } from "pino";

/** A pino logger whose JSON lines are kept, parsed, in `lines` (for asserting what was logged). */
export function captureLogs(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino(sink), lines };
}
