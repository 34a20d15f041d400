import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { devConfig } from "../../src/cli/context.js";
import { main } from "../../src/cli/program.js";
import { TenantryApp } from "../../src/server/app.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { freePort } from "../support/ports.js";

/** Runs the CLI in-process; returns its exit code and what it printed. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  try {
    const code = await main(["node", "tenantry", ...args]);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
}

describe("CLI: deprovision, purge, restore and audit through the running server", () => {
  let dir: string;
  let app: TenantryApp;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-cli-lifecycle-"));
    const port = await freePort();
    app = new TenantryApp(devConfig({ dataDir: dir, port }), { logger: false });
    for (const tool of demoTools) app.tool(tool);
    app.migrations(demoMigrations);
    await app.start();
    for (const id of ["acme", "globex"]) await app.tenants.create({ id: "test" }, { id, name: id });
    await app.listen({ port, host: "127.0.0.1" }); // writes the control file the CLI reads
  }, 120_000);
  afterAll(async () => {
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("runs the lifecycle, every step audited as the CLI", async () => {
    const dep = await cli("tenants", "deprovision", "acme", "--data-dir", dir, "--json");
    expect(dep.code).toBe(0);
    const t = JSON.parse(dep.stdout) as { status: string; archive_path: string };
    expect(t.status).toBe("deprovisioned");

    const human = await cli("tenants", "purge", "--data-dir", dir);
    expect(human).toMatchObject({ code: 0, stdout: "nothing to purge\n" });
    const purged = await cli("tenants", "purge", "--now", "--data-dir", dir, "--json");
    expect(JSON.parse(purged.stdout)).toMatchObject({ purged: [{ id: "acme" }], failed: [] });

    const restored = await cli("tenants", "restore", basename(t.archive_path), "--data-dir", dir);
    expect(restored.code).toBe(0);
    expect(restored.stdout).toContain("tenant acme restored");
    expect((await app.tenants.show("acme")).status).toBe("active");

    const log = await cli("audit", "--tenant", "acme", "--data-dir", dir, "--json");
    const events = (JSON.parse(log.stdout) as { events: { action: string; user_id: string }[] }).events;
    expect(events.map((e) => e.action)).toEqual([
      "tenant.create",
      "tenant.deprovision",
      "tenant.purge",
      "tenant.restore",
    ]);
    expect(events.slice(1).every((e) => e.user_id === "cli")).toBe(true);
    const text = await cli("audit", "--action", "tenant.restore", "--limit", "1", "--data-dir", dir);
    expect(text.stdout.trim().split("\n")).toHaveLength(1);
    expect(text.stdout).toContain("tenant.restore");
  });

  it("purge --without-archive: only the named tenant goes without a verified archive; a bad id is bad input", async () => {
    const dep = await cli("tenants", "deprovision", "globex", "--data-dir", dir, "--json");
    await rm((JSON.parse(dep.stdout) as { archive_path: string }).archive_path, { recursive: true });
    const bad = await cli("tenants", "purge", "--now", "--without-archive", "../x", "--data-dir", dir);
    expect(bad.code).toBe(2);
    const kept = await cli("tenants", "purge", "--now", "--data-dir", dir);
    expect(kept.code).toBe(1);
    expect(kept.stdout).toContain("FAILED globex");
    const gone = await cli("tenants", "purge", "--now", "--without-archive", "globex", "--data-dir", dir);
    expect(gone).toMatchObject({ code: 0 });
    expect(gone.stdout).toContain("purged globex WITHOUT a verified archive");
    await expect(app.tenants.show("globex")).rejects.toMatchObject({ code: "unknown_tenant" });
  });

  it("bad input is one line on stderr and exit code 2", async () => {
    for (const args of [
      ["audit", "--since", "yesterday"],
      ["audit", "--limit", "0"],
      ["audit", "--tenant", "a/b"],
      ["tenants", "deprovision", "no/such"],
      ["tenants", "deprovision", "nobody"],
      ["tenants", "restore", "/etc"],
      ["tenants", "restore", "acme"],
      ["tenants", "list", "--status", "suspend"],
    ]) {
      const r = await cli(...args, "--data-dir", dir);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
    }
  });
});
