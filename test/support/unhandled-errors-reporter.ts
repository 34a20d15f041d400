import { relative } from "node:path";
import type { Reporter, SerializedError } from "vitest/node";

/**
 * Repeats every unhandled error of the run on the last lines of the output, after the summary.
 *
 * Vitest prints an unhandled error (an uncaught exception or rejection: a test passes, yet the run
 * fails) in full above the summary, which a CI log cut to its tail leaves out: a run of this suite
 * once failed with nothing but "1 error" and the file it came from to go on. The run still fails
 * exactly as before; this only names the error where the tail shows it.
 */
export default class UnhandledErrorsReporter implements Reporter {
  onTestRunEnd(_modules: unknown, errors: ReadonlyArray<SerializedError>): void {
    if (errors.length === 0) return;
    const lines = [`Unhandled errors of this run (${errors.length}), repeated from above:`];
    for (const [i, error] of errors.entries()) {
      const origin = error as SerializedError & { VITEST_TEST_PATH?: string; VITEST_TEST_NAME?: string };
      lines.push(`${i + 1}. ${error.name ?? "Error"}: ${error.message ?? String(error)}`);
      if (origin.VITEST_TEST_PATH) {
        lines.push(
          `   from ${relative(process.cwd(), origin.VITEST_TEST_PATH)}${origin.VITEST_TEST_NAME ? ` (${origin.VITEST_TEST_NAME})` : ""}`,
        );
      }
      const stack = (error.stack ?? "").split("\n").slice(1, 9);
      for (const frame of stack) lines.push(`   ${frame.trim()}`);
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  }
}
