import { type ClientRequest, request as httpRequest } from "node:http";

/**
 * A POST to `/mcp` as `token` on a plain node:http request, for what fetch cannot do: send a body
 * chunked or in parts, or go away mid-request. `headers` are added (a Content-Length, say); the
 * caller writes the body and ends or destroys the request.
 */
export function rawMcpPost(
  mcpUrl: string,
  token: string,
  headers: Record<string, string> = {},
): ClientRequest {
  const url = new URL(mcpUrl);
  return httpRequest({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${token}`,
      ...headers,
    },
  });
}
