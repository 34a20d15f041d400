/** Prints `value` as JSON when `json`, else through `human`. */
export function print(value: unknown, json: boolean | undefined, human?: (v: unknown) => string): void {
  process.stdout.write(`${json || !human ? JSON.stringify(value, null, 2) : human(value)}\n`);
}

/** A plain table for `tenants list`. */
export function printTenants(list: Record<string, unknown>[]): void {
  if (list.length === 0) {
    process.stdout.write("no tenants\n");
    return;
  }
  const rows = list.map((t) => [
    String(t.id),
    String(t.status),
    String(t.name),
    t.rate_limit === null ? "default" : String(t.rate_limit),
    (t.allowed_tools as string[]).length === 0 ? "all" : (t.allowed_tools as string[]).join(","),
    t.expires_at ? String(t.expires_at) : "",
  ]);
  const head = ["ID", "STATUS", "NAME", "RATE/MIN", "TOOLS", "TRIAL ENDS"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  process.stdout.write(`${[line(head), ...rows.map(line)].join("\n")}\n`);
}
