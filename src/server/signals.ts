import type { TenantryApp } from "./app.js";

/**
 * SIGTERM / SIGINT: stop accepting requests, let those in flight finish, flush the audit queue,
 * close databases — then exit. A second signal exits at once.
 */
export function installSignalHandlers(
  app: TenantryApp,
  onExit: (code: number) => void = process.exit,
  options: { timeoutMs?: number } = {},
): void {
  let closing = false;
  const stop = (signal: NodeJS.Signals) => {
    if (closing) return onExit(130);
    closing = true;
    app.log.info({ signal }, "shutting down: draining requests and flushing the audit log");
    // A stuck request must not hold the process forever; exiting non-zero says the drain was cut short.
    const timer = setTimeout(() => {
      app.log.error({ timeoutMs: options.timeoutMs ?? 30_000 }, "shutdown timed out");
      onExit(1);
    }, options.timeoutMs ?? 30_000);
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
