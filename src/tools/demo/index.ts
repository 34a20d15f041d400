import type { AppMigration } from "../../isolation/migrations.js";
import type { ToolDefinition } from "../define-tool.js";
import { documentsGet, documentsList, documentsPut } from "./documents.js";
import { notesCreate, notesList, notesMigrations } from "./notes.js";
import { whoami } from "./whoami.js";

export { documentsGet, documentsList, documentsPut } from "./documents.js";
export { notesCreate, notesList, notesMigrations } from "./notes.js";
export { whoami } from "./whoami.js";

/** The demo tools `tenantry dev` serves: whoami, notes (database) and documents (object storage). */
export const demoTools: ToolDefinition[] = [
  whoami,
  notesCreate,
  notesList,
  documentsPut,
  documentsGet,
  documentsList,
];

/** The tables the demo tools need; register with `app.migrations(demoMigrations)`. */
export const demoMigrations: AppMigration[] = [...notesMigrations];
