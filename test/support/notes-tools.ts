/**
 * The demo notes tools as the database e2e tests use them: `notes_list` again in
 * `transaction: "statement"` mode, and the titles a call answered with.
 */
import { z } from "zod";
import { defineTool } from "../../src/tools/define-tool.js";
import type { postMcp } from "./replicas.js";

/** The same read as notes_list, in `transaction: "statement"` mode (one implicit transaction). */
export const notesListStatement = defineTool({
  name: "notes_list_statement",
  description: "notes_list, one statement per transaction",
  input: z.object({}),
  transaction: "statement",
  async run(_input, ctx) {
    const { rows } = await ctx.db.query<{ title: string }>("SELECT title FROM notes ORDER BY title");
    return { titles: rows.map((r) => r.title) };
  },
});

type Reply = Awaited<ReturnType<typeof postMcp>>;

/** The note titles a notes_list or notes_list_statement call answered with; `undefined` if it failed. */
export const titlesOf = (r: Reply): string[] | undefined => {
  const result = r.body.result as
    | { isError?: boolean; structuredContent?: { notes?: { title: string }[]; titles?: string[] } }
    | undefined;
  if (r.status !== 200 || !result || result.isError) return undefined;
  return result.structuredContent?.titles ?? result.structuredContent?.notes?.map((n) => n.title).sort();
};
