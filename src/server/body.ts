import type { IncomingMessage } from "node:http";
import { TenantryError } from "../errors.js";

/**
 * Reads a request body up to `limit` bytes. A declared Content-Length over the limit is refused
 * before reading; a body that grows past it is refused as soon as it does, and the socket drained.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new TenantryError("payload_too_large", `the body is larger than ${limit} bytes`));
  }
  // A request destroyed before this is called (its client went away while admission or the rate
  // limit was awaited: Node destroys an unanswered request when its socket closes, and tells no
  // one who was not listening yet; one destroyed while read errs, below) emits nothing any more: without this, the promise would never
  // settle, the handler never end, and close() wait for it forever.
  if (req.destroyed) {
    return Promise.reject(new TenantryError("bad_request", "the client went away before its body was read"));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(new TenantryError("payload_too_large", `the body is larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!failed) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
    req.on("error", (error) => {
      if (!failed)
        reject(new TenantryError("bad_request", "the request body could not be read", { cause: error }));
    });
  });
}

/** True for `application/json` with any parameters (charset). */
export function isJsonContentType(value: string | undefined): boolean {
  if (!value) return false;
  const semi = value.indexOf(";");
  const type = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  return type === "application/json";
}
