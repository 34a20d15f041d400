import type { Logger } from "pino";
import { SYSTEM_ACTOR } from "./admin-audit.js";
import type { TenantService } from "./tenant-service.js";

/**
 * Purges deprovisioned tenants past their retention every `[lifecycle] purge_interval_s`. The
 * timer is unref'd (it never keeps the process alive) and runs never overlap. Several replicas
 * may run it: each step of a purge is idempotent, so a tenant purged twice ends the same way.
 */
export class PurgeJob {
  readonly #tenants: TenantService;
  readonly #intervalMs: number;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(tenants: TenantService, options: { intervalSeconds: number; log: Logger }) {
    this.#tenants = tenants;
    this.#intervalMs = options.intervalSeconds * 1000;
    this.#log = options.log;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.runOnce(), this.#intervalMs);
    this.#timer.unref();
  }

  /** One pass now (also what the timer calls); resolves when it is done, never rejects. */
  runOnce(): Promise<void> {
    this.#running ??= (async () => {
      try {
        const result = await this.#tenants.purge(SYSTEM_ACTOR);
        for (const p of result.purged)
          this.#log.info({ tenant: p.id, archive: p.archivePath }, "tenant purged");
        for (const f of result.failed)
          this.#log.error({ tenant: f.id, code: f.code }, `purge failed: ${f.message}`);
      } catch (error) {
        this.#log.error({ err: error }, "purge job failed");
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Stops the timer and waits for a pass in progress. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
