import type { Client } from "@modelcontextprotocol/sdk/client/index.js";

export type CallResult = Awaited<ReturnType<Client["callTool"]>>;

/** A tool call's structured result; a tool error fails the test with its content. */
export function structured<T>(r: CallResult): T {
  if (r.isError) throw new Error(`tool error: ${JSON.stringify(r.content)}`);
  return r.structuredContent as T;
}
