import type { Actor } from "../admin/tenant-service.js";
import type { TenantryConfig } from "../config/resolve.js";
import { pgliteDir } from "../db/open.js";
import { embeddedDatabaseHolder } from "../db/pglite.js";
import { ERROR_CODES, type ErrorCode, TenantryError } from "../errors.js";
import { TenantryApp } from "../server/app.js";
import { type ControlInfo, readControlFile } from "../server/control-file.js";
import { demoMigrations } from "../tools/demo/index.js";

/**
 * How long a command waits for a server that holds the embedded database but has not written its
 * control file yet: it is still starting (opening, and the first time initialising, the database
 * takes seconds), or another command has the database open for a moment.
 */
export const SERVER_START_WAIT_MS = 30_000;

/** How often the control file and the lock are looked at meanwhile. */
const START_POLL_MS = 100;

/**
 * The control info of the server running on the embedded database. A server takes the database's
 * lock seconds before it writes its control file, once it listens; a command issued in between
 * waits for the file rather than fail on the lock. It stops waiting when the lock is free (its
 * holder was another command, which has finished, or a server that stopped) or after `waitMs`, and
 * then opens the database itself, which fails with the holder's pid if it is still held. A lock
 * held by this process is not waited for.
 */
async function runningServer(config: TenantryConfig, waitMs: number): Promise<ControlInfo | undefined> {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const control = await readControlFile(config.database.data_dir);
    if (control) return control;
    const holder = await embeddedDatabaseHolder(pgliteDir(config));
    // Held by this very process (an app opened in-process, with no control file): no other
    // process will serve or free it, and the open below refuses at once.
    if (holder === undefined || holder === process.pid || Date.now() >= deadline) return undefined;
    if (!told) {
      told = true;
      process.stderr.write(
        `tenantry: the embedded database in ${config.database.data_dir} is held by process ${holder}; waiting for it (a server that is starting?)\n`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, START_POLL_MS));
  }
}

/**
 * How CLI commands reach the registry. With the embedded database, only one process may open it:
 * if a server is running on it, commands go through that server's `/admin/api` with the control
 * secret it wrote; otherwise they open it directly. With PostgreSQL they always open it directly.
 */
export type AdminAccess =
  | { mode: "remote"; call: (method: string, path: string, body?: unknown) => Promise<unknown> }
  | { mode: "direct"; app: TenantryApp; actor: Actor };

export async function withAdminAccess<T>(
  config: TenantryConfig,
  fn: (access: AdminAccess) => Promise<T>,
  options: { startWaitMs?: number } = {},
): Promise<T> {
  if (!config.database.url) {
    const control = await runningServer(config, options.startWaitMs ?? SERVER_START_WAIT_MS);
    if (control) {
      const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
        let res: Response;
        try {
          res = await fetch(`${control.url}/admin/api${path}`, {
            method,
            headers: {
              Authorization: `Tenantry-Control ${control.secret}`,
              ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
            },
            ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          });
        } catch (error) {
          throw new TenantryError(
            "backend_unavailable",
            `the running server at ${control.url} did not answer`,
            {
              cause: error,
            },
          );
        }
        const payload = (await res.json().catch(() => ({}))) as Record<string, unknown>;
        if (!res.ok) {
          const code = (
            typeof payload.error === "string" && payload.error in ERROR_CODES ? payload.error : "internal"
          ) as ErrorCode;
          throw new TenantryError(
            code,
            typeof payload.message === "string" ? payload.message : `HTTP ${res.status}`,
          );
        }
        return payload;
      };
      return fn({ mode: "remote", call });
    }
  }
  const app = new TenantryApp(config, { logger: false, controlFile: false });
  try {
    await app.start();
    // Tenants provisioned here (schema_per_tenant) get the tables `tenantry serve` serves and
    // `tenantry migrate` puts in every tenant schema. Added after start: no shared table is created.
    app.migrations(demoMigrations);
    return await fn({ mode: "direct", app, actor: { id: "cli" } });
  } finally {
    await app.close();
  }
}

type Call = (method: string, path: string, body?: unknown) => Promise<unknown>;

/** Runs through the server's admin API (`remote`) or on an opened app (`direct`). */
export function run(
  access: AdminAccess,
  remote: (call: Call) => Promise<unknown>,
  direct: (a: AdminAccess & { mode: "direct" }) => Promise<unknown>,
): Promise<unknown> {
  return access.mode === "remote" ? remote(access.call) : direct(access);
}
