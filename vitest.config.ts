import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
    // The default output, then any unhandled error repeated on the last lines (a CI log's tail).
    reporters: ["default", "./test/support/unhandled-errors-reporter.ts"],
  },
});
