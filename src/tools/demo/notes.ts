import { z } from "zod";
import type { AppMigration } from "../../isolation/migrations.js";
import { defineTool } from "../define-tool.js";

/**
 * The demo `notes` table. Written once, for every strategy: under row_level_security Tenantry adds
 * `tenant_id` (defaulted from the transaction's tenant), its index, forced RLS and the policy; under
 * schema_per_tenant the table is created in each tenant's schema. A random UUID key rather than a
 * shared sequence, so ids reveal nothing about other tenants' activity.
 */
export const notesMigrations: readonly AppMigration[] = [
  {
    version: 1,
    name: "demo_notes",
    sql: `CREATE TABLE IF NOT EXISTS notes (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
            body text NOT NULL CHECK (char_length(body) <= 10000),
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
          );`,
    tenantTables: ["notes"],
  },
];

interface NoteRow {
  [key: string]: unknown;
  id: string;
  title: string;
  body: string;
  created_at: Date | string;
}

const toNote = (r: NoteRow) => ({
  id: r.id,
  title: r.title,
  body: r.body,
  createdAt: (r.created_at instanceof Date ? r.created_at : new Date(r.created_at)).toISOString(),
});

/** Creates a note for the caller's tenant. The query names no tenant: the transaction is bound to it. */
export const notesCreate = defineTool({
  name: "notes_create",
  description: "Create a note for your organization.",
  input: z.object({
    title: z.string().min(1).max(200),
    body: z.string().max(10_000),
  }),
  async run(input, ctx) {
    const r = await ctx.db.query<NoteRow>(
      "INSERT INTO notes (title, body) VALUES ($1, $2) RETURNING id, title, body, created_at",
      [input.title, input.body],
    );
    return { note: toNote(r.rows[0]!) };
  },
});

/** Lists the caller's tenant's notes, newest first. */
export const notesList = defineTool({
  name: "notes_list",
  description: "List your organization's notes, newest first.",
  input: z.object({
    limit: z.number().int().min(1).max(1000).optional(),
  }),
  annotations: { readOnlyHint: true },
  async run(input, ctx) {
    const r = await ctx.db.query<NoteRow>(
      "SELECT id, title, body, created_at FROM notes ORDER BY created_at DESC, id LIMIT $1",
      [input.limit ?? 100],
    );
    return { notes: r.rows.map(toNote) };
  },
});
