import { readFile } from "node:fs/promises";
import { parse as parseToml } from "smol-toml";
import type { z } from "zod";
import { TenantryError } from "../errors.js";
import { resolveConfig, type TenantryConfig } from "./resolve.js";
import { configSchema } from "./schema.js";

/** Replaces `${NAME}` in every string value; an unset variable is an error, never an empty string. */
export function interpolateEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = []): unknown {
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const v = env[name];
      if (v === undefined) {
        throw new TenantryError(
          "config_invalid",
          `${path.join(".")}: environment variable ${name} is not set`,
        );
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolateEnv(v, env, [...path, String(i)]));
  if (value !== null && typeof value === "object" && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolateEnv(v, env, [...path, k]);
    return out;
  }
  return value;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => (path ? `${path}.${k}` : k));
    return `${keys.join(", ")}: unknown key${keys.length > 1 ? "s" : ""}`;
  }
  return `${path || "(root)"}: ${issue.message}`;
}

/** Validates an already-parsed TOML document. Errors name the file, the key path and what was expected. */
export function parseConfig(
  doc: unknown,
  source?: string,
  env: NodeJS.ProcessEnv = process.env,
): TenantryConfig {
  const where = source ?? "config";
  let interpolated: unknown;
  try {
    interpolated = interpolateEnv(doc, env);
  } catch (error) {
    throw new TenantryError("config_invalid", `${where}: ${(error as Error).message}`);
  }
  const result = configSchema.safeParse(interpolated);
  if (!result.success) {
    const lines = result.error.issues.map(describeIssue);
    throw new TenantryError("config_invalid", `${where}: ${lines.join("; ")}`);
  }
  return resolveConfig(result.data, source);
}

/** Reads and validates `tenantry.toml`. */
export async function loadConfig(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<TenantryConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new TenantryError(
      "config_invalid",
      `${path}: cannot read (${(error as NodeJS.ErrnoException).code})`,
      {
        cause: error,
      },
    );
  }
  let doc: unknown;
  try {
    doc = parseToml(text);
  } catch (error) {
    const msg = (error as Error).message.split("\n")[0];
    throw new TenantryError("config_invalid", `${path}: invalid TOML: ${msg}`, { cause: error });
  }
  return parseConfig(doc, path, env);
}
