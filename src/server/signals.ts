import type { TenantryApp } from "./app.js";

/** Time beyond `tool_timeout_ms` for the last calls' audit events to be flushed and databases closed. */
const FLUSH_MARGIN_MS = 10_000;

/**
 * SIGTERM / SIGINT: stop accepting requests, let those in flight finish, flush the audit queue,
 * close databases — then exit. A second signal exits at once (130 for SIGINT, 143 for SIGTERM). The drain may take `timeoutMs`,
 * by default `tool_timeout_ms` + 10 s (at least 30 s): a call started just before the signal may
 * run that long, and is still recorded.
 */
export function installSignalHandlers(
  app: TenantryApp,
  onExit: (code: number) => void = process.exit,
  options: { timeoutMs?: number } = {},
): void {
  const timeoutMs =
    options.timeoutMs ?? Math.max(30_000, app.config.server.tool_timeout_ms + FLUSH_MARGIN_MS);
  let closing = false;
  const stop = (signal: NodeJS.Signals) => {
    // The shell convention for "killed by this signal": 128 + its number (SIGINT 2, SIGTERM 15).
    if (closing) return onExit(signal === "SIGINT" ? 130 : 143);
    closing = true;
    app.log.info({ signal }, "shutting down: draining requests and flushing the audit log");
    // A stuck request must not hold the process forever; exiting non-zero says the drain was cut short.
    const timer = setTimeout(() => {
      app.log.error({ timeoutMs }, "shutdown timed out");
      onExit(1);
    }, timeoutMs);
    timer.unref();
    app.close().then(
      () => onExit(0),
      (error: unknown) => {
        app.log.error({ err: error }, "shutdown failed");
        onExit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
