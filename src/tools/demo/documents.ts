import { z } from "zod";
import { TenantryError } from "../../errors.js";
import { defineTool } from "../define-tool.js";

// Keys are validated by ctx.storage (no `..` segment, leading `/`, backslash or NUL; bounded length).
const key = z.string().min(1).max(1024);

/** Stores a text document under a tenant-relative key. */
export const documentsPut = defineTool({
  name: "documents_put",
  description: "Store a text document under a key (e.g. reports/2024.txt) for your organization.",
  input: z.object({ key, content: z.string() }),
  async run(input, ctx) {
    await ctx.storage.put(input.key, input.content, { contentType: "text/plain; charset=utf-8" });
    return { key: input.key, bytes: Buffer.byteLength(input.content, "utf8") };
  },
});

/** Reads a document back; `object_not_found` when there is none. */
export const documentsGet = defineTool({
  name: "documents_get",
  description: "Read one of your organization's documents.",
  input: z.object({ key }),
  annotations: { readOnlyHint: true },
  async run(input, ctx) {
    const content = await ctx.storage.getText(input.key);
    if (content === undefined) throw new TenantryError("object_not_found", `no document ${input.key}`);
    return { key: input.key, content };
  },
});

/** Lists document keys, optionally under a prefix, one page at a time. */
export const documentsList = defineTool({
  name: "documents_list",
  description: "List your organization's document keys, optionally under a prefix.",
  input: z.object({
    prefix: z.string().max(1024).optional(),
    cursor: z.string().min(1).max(1024).optional(),
    limit: z.number().int().min(1).max(1000).optional(),
  }),
  annotations: { readOnlyHint: true },
  async run(input, ctx) {
    const page = await ctx.storage.list(input.prefix ?? "", {
      ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
      ...(input.limit !== undefined ? { limit: input.limit } : {}),
    });
    return page.nextCursor === undefined
      ? { keys: page.keys }
      : { keys: page.keys, nextCursor: page.nextCursor };
  },
});
