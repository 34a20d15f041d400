import type { ServerResponse } from "node:http";
import type { HttpError } from "./error-mapper.js";

/**
 * Response headers as a flat `[name, value, name, value, …]` list, which `writeHead` takes as it is
 * (no per-header `setHeader` merging, no object to build). The request path uses this form.
 */
export type HeaderList = string[];

/** Sends `text` (already JSON) with the standard JSON headers followed by `headers`. The hot path. */
export function sendJsonText(res: ServerResponse, status: number, text: string, headers: HeaderList): void {
  headers.push(
    "Content-Type",
    "application/json",
    "Content-Length",
    String(Buffer.byteLength(text)),
    "Cache-Control",
    "no-store",
  );
  res.writeHead(status, headers);
  res.end(text);
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers?: Record<string, string>,
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(text);
}

export function sendHttpError(
  res: ServerResponse,
  error: HttpError,
  extraHeaders?: Record<string, string>,
): void {
  sendJson(res, error.status, error.body, { ...extraHeaders, ...error.headers });
}

export function sendText(res: ServerResponse, status: number, text: string, contentType: string): void {
  res.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}
