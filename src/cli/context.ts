import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadConfig, parseConfig } from "../config/load.js";
import type { TenantryConfig } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import { readControlFile } from "../server/control-file.js";

/** Options every config-reading command accepts. */
export interface ConfigOptions {
  config?: string;
  dataDir?: string;
}

export const DEFAULT_CONFIG = "tenantry.toml";
export const DEFAULT_DEV_DIR = ".tenantry";

/** The `tenantry dev` configuration: dev issuer, embedded PGlite, files under one directory. */
export function devConfig(options: { dataDir?: string; port?: number } = {}): TenantryConfig {
  const dir = options.dataDir ?? DEFAULT_DEV_DIR;
  const port = options.port ?? 8080;
  return parseConfig(
    {
      server: { host: "127.0.0.1", port, base_url: `http://localhost:${port}` },
      auth: { provider: "dev" },
      database: { data_dir: join(dir, "data") },
      storage: { backend: "fs", root: join(dir, "objects") },
      audit: { sink: "both", path: join(dir, "audit.jsonl") },
      lifecycle: { archive_dir: join(dir, "archive") },
    },
    "tenantry dev",
    {},
  );
}

/**
 * The config a command works on: `--config F` if given (it must exist), else `./tenantry.toml`
 * if present, else the `tenantry dev` defaults (so the CLI works next to a running `tenantry dev`).
 */
export async function resolveCliConfig(options: ConfigOptions): Promise<TenantryConfig> {
  if (options.config) return loadConfig(options.config);
  if (options.dataDir === undefined && existsSync(DEFAULT_CONFIG)) return loadConfig(DEFAULT_CONFIG);
  const dataDir = options.dataDir ?? DEFAULT_DEV_DIR;
  // Next to a running `tenantry dev --port P`, take its port: token audiences derive from it.
  const running = await readControlFile(devConfig({ dataDir }).database.data_dir);
  const port = running?.baseUrl ? Number(new URL(running.baseUrl).port) || undefined : undefined;
  return devConfig({ dataDir, ...(port ? { port } : {}) });
}

/** Parses a positive integer flag, or `invalid_argument` naming the flag. */
export function positiveInt(value: string, flag: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw new TenantryError(
      "invalid_argument",
      `${flag} must be a positive integer, got ${JSON.stringify(value)}`,
    );
  }
  return Number(value);
}

/** Parses a `--port` flag: 1-65535, or `invalid_argument` naming the flag. */
export function portNumber(value: string, flag = "--port"): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65_535) {
    throw new TenantryError(
      "invalid_argument",
      `${flag} must be a port from 1 to 65535, got ${JSON.stringify(value)}`,
    );
  }
  return Number(value);
}
