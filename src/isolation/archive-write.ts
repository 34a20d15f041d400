import { type FileHandle, open } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { isTenantryError, TenantryError } from "../errors.js";

/*
 * Writing an archive (TenantData.archive) durably, and what its failures mean to an operator.
 */

/** One write of an archive, run by {@link archiveWrite} for the archive being written. */
export type ArchiveWrite = <T>(run: () => Promise<T>) => Promise<T>;

/** Writes all of `chunk`: a write to a file may take only part of it (a full disk, a signal). */
export async function writeAll(handle: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let at = 0; at < chunk.byteLength; ) {
    const { bytesWritten } = await handle.write(chunk, at, chunk.byteLength - at);
    if (bytesWritten === 0) throw Object.assign(new Error("short write"), { code: "EIO" });
    at += bytesWritten;
  }
}

/**
 * Creates a file, writes it and fsyncs it before closing it (the archive's manifest). Like the
 * archive's other files, it must not exist yet (`wx`): a file or link already at that path, in a
 * directory this archive just created, is not ours to overwrite or follow.
 */
export async function writeSynced(file: string, text: string): Promise<void> {
  const handle = await open(file, "wx", 0o600);
  try {
    await handle.writeFile(text, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Fsyncs a directory, which makes its entries (files created, renamed into it) durable. On Linux
 * a directory opened read-only can be synced.
 */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Fsyncs the parent of every directory `mkdir -p` created, from `created` (the first) down to
 * `root`, so that the new directories are durable entries too. `root` itself is synced later.
 */
export async function syncNewDirs(created: string, root: string): Promise<void> {
  const parts = relative(created, root).split(sep).filter(Boolean);
  let dir = created;
  await syncDir(dirname(created));
  for (const part of parts) {
    await syncDir(dir);
    dir = join(dir, part);
  }
}

/** What an errno means for whoever runs the deployment, in their words. */
const ARCHIVE_ERRNO: Record<string, string> = {
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  ENOTDIR: "a component of the path is not a directory",
  EISDIR: "a directory is where a file must go",
  EEXIST: "a file is already where the archive writes",
  EMFILE: "too many open files",
  ENFILE: "too many open files in the system",
  EIO: "I/O error",
};

/**
 * Runs one write of an archive (a directory, a file, an fsync, the rename into place). A failure there — the
 * archive directory full, read-only, not writable, a file where a directory must be, out of file
 * descriptors — is `backend_unavailable`, a dependency that is down and may heal (free space and
 * run `deprovision` again), not a 500. The message names `[lifecycle] archive_dir` as configured
 * and the errno, never the archive's own paths or Node's message: the errno error is the cause,
 * for the server's log.
 */
export async function archiveWrite<T>(archiveDir: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (isTenantryError(error)) throw error;
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    const why = code === undefined ? "write failed" : `${ARCHIVE_ERRNO[code] ?? "write failed"} (${code})`;
    throw new TenantryError(
      "backend_unavailable",
      `cannot write the archive to lifecycle.archive_dir ${JSON.stringify(archiveDir)}: ${why}`,
      { cause: error },
    );
  }
}
