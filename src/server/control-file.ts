import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isRunning } from "../pid.js";

/**
 * PGlite is one process: while a server holds the embedded database, CLI commands must go through
 * that server. The server writes where it listens and a random secret (mode 0600) into the data
 * dir; the CLI reads it and calls `/admin/api` with `Authorization: Tenantry-Control <secret>`.
 */
export interface ControlInfo {
  url: string;
  /** The server's public `base_url` (token audiences derive from it). */
  baseUrl?: string;
  pid: number;
  secret: string;
}

export const CONTROL_FILE = "control.json";

export function newControlSecret(): string {
  return randomBytes(32).toString("base64url");
}

export async function writeControlFile(dataDir: string, info: ControlInfo): Promise<void> {
  await writeFile(join(dataDir, CONTROL_FILE), JSON.stringify(info), { mode: 0o600 });
}

export async function removeControlFile(dataDir: string, secret: string): Promise<void> {
  const current = await readControlFile(dataDir);
  if (current?.secret === secret) await rm(join(dataDir, CONTROL_FILE), { force: true });
}

/** The running server's control info, or undefined when none is running (stale files are ignored). */
export async function readControlFile(dataDir: string): Promise<ControlInfo | undefined> {
  let info: ControlInfo;
  try {
    info = JSON.parse(await readFile(join(dataDir, CONTROL_FILE), "utf8")) as ControlInfo;
  } catch {
    return undefined;
  }
  if (typeof info.url !== "string" || typeof info.secret !== "string" || !Number.isInteger(info.pid))
    return undefined;
  return isRunning(info.pid) ? info : undefined;
}

/** Compares two secrets in constant time (as digests: not even the length is told by the timing). */
export function sameSecret(a: string, b: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();
  return timingSafeEqual(digest(a), digest(b)) && a === b;
}
