import { existsSync } from "node:fs";
import { isAbsolute, relative, resolve, sep } from "node:path";
import type { Command } from "commander";
import { purgeResultToJson } from "../admin/tenant-service.js";
import { tenantToJson } from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { run, withAdminAccess } from "./admin-client.js";
import { type ConfigOptions, resolveCliConfig } from "./context.js";
import { print } from "./output.js";

type Json = Record<string, unknown>;

/**
 * An archive argument: a path from the current directory if it exists there, else a name inside
 * `[lifecycle] archive_dir`. Through a running server it is sent relative to that directory
 * (the admin API only restores archives inside it).
 */
function archiveArgument(archive: string, archiveDir: string): { local: string; remote: string } {
  const root = resolve(archiveDir);
  const local = existsSync(archive) ? resolve(archive) : resolve(root, archive);
  const rel = relative(root, local);
  const inside = rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
  return { local, remote: inside ? rel : local };
}

/** `tenantry tenants deprovision|purge|restore`: the end of a tenant's life, and its undoing. */
export function registerLifecycleCommands(tenants: Command): Command {
  const withConfig = (c: Command) =>
    c
      .option("--config <file>", "tenantry.toml to use")
      .option("--data-dir <dir>", "data directory of `tenantry dev`")
      .option("--json", "print JSON");

  withConfig(
    tenants
      .command("deprovision <id>")
      .description("suspend a tenant at once, archive its data, and schedule the purge"),
  ).action(async (tenantId: string, o: ConfigOptions & { json?: boolean }) => {
    const id = assertTenantId(tenantId);
    const config = await resolveCliConfig(o);
    const t = (await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("POST", `/tenants/${id}/deprovision`, {}),
        async (d) => tenantToJson(await d.app.tenants.deprovision(d.actor, id)),
      ),
    )) as Json;
    print(
      t,
      o.json,
      () => `tenant ${t.id} deprovisioned\n  archive: ${t.archive_path}\n  purged after: ${t.purge_after}`,
    );
  });

  withConfig(
    tenants
      .command("purge")
      .description(
        "delete the data of deprovisioned tenants past [lifecycle] retention_days (archives are kept)",
      )
      .option("--now", "purge every deprovisioned tenant, whatever its retention")
      .option(
        "--without-archive <id,id>",
        "purge these tenants even if their archive does not verify (lost or damaged): their data goes without a copy",
      ),
  ).action(async (o: ConfigOptions & { json?: boolean; now?: boolean; withoutArchive?: string }) => {
    const config = await resolveCliConfig(o);
    // Each id is checked where the purge runs (TenantService.purge), through the server or not.
    const withoutArchive = o.withoutArchive === undefined ? [] : o.withoutArchive.split(",");
    const out = (await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("POST", "/purge", { now: o.now === true, without_archive: withoutArchive }),
        async (d) =>
          purgeResultToJson(await d.app.tenants.purge(d.actor, { now: o.now === true, withoutArchive })),
      ),
    )) as { purged: Json[]; failed: Json[] };
    print(out, o.json, () => {
      const lines = out.purged.map((p) =>
        p.archive_verified === false
          ? `purged ${p.id} WITHOUT a verified archive (${p.archive_path ?? "none"})`
          : `purged ${p.id} (archive kept: ${p.archive_path ?? "none"})`,
      );
      for (const f of out.failed) lines.push(`FAILED ${f.id}: ${f.message}`);
      return lines.length > 0 ? lines.join("\n") : "nothing to purge";
    });
    if (out.failed.length > 0) process.exitCode = 1;
  });

  withConfig(
    tenants
      .command("restore <archive>")
      .description("re-create a tenant from an archive written by deprovision (checksums are verified)"),
  ).action(async (archive: string, o: ConfigOptions & { json?: boolean }) => {
    const config = await resolveCliConfig(o);
    const path = archiveArgument(archive, config.lifecycle.archive_dir);
    const t = (await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("POST", "/restore", { archive: path.remote }),
        async (d) => tenantToJson(await d.app.tenants.restore(d.actor, path.local)),
      ),
    )) as Json;
    print(t, o.json, () => `tenant ${t.id} restored from ${t.archive_path} (${t.status})`);
  });
  return tenants;
}
