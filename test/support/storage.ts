import type { TenantStorage } from "../../src/isolation/storage/index.js";

/** Every key under `prefix`, following `nextCursor` page by page. */
export async function listAll(storage: TenantStorage, prefix = "", limit = 100): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await storage.list(prefix, cursor === undefined ? { limit } : { cursor, limit });
    keys.push(...page.keys);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return keys;
}
