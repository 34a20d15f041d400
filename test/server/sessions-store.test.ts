/**
 * The stateful session store: bounded overall and per tenant. One tenant opening sessions in a loop
 * churns its own and leaves other tenants' sessions alone.
 */
import { describe, expect, it } from "vitest";
import { SessionStore } from "../../src/server/sessions.js";
import type { TenantScope } from "../../src/tenancy/context.js";

const as = (tenantId: string, userId = "u"): TenantScope => ({
  kind: "tenant",
  tenant: { tenantId, tenantName: undefined, userId, scopes: [], issuer: "https://idp.example/" },
});
const admin: TenantScope = { kind: "global", adminId: "root", issuer: "https://idp.example/", scopes: [] };

describe("SessionStore", () => {
  it("a tenant past its share evicts its own least recently used session, never another tenant's", () => {
    const store = new SessionStore(10, 60_000, Date.now, 3);
    const victims = [store.create(as("globex")), store.create(as("initech"))];
    const flood = Array.from({ length: 50 }, () => store.create(as("acme", "bot")));
    for (const [i, id] of victims.entries())
      expect(store.touch(id, as(["globex", "initech"][i]!))).toBe(true);
    expect(store.sizeOf("acme")).toBe(3);
    expect(store.size).toBe(5);
    // The flood's three most recent sessions are the ones kept.
    expect(flood.slice(0, 47).some((id) => store.touch(id, as("acme", "bot")))).toBe(false);
    expect(flood.slice(47).every((id) => store.touch(id, as("acme", "bot")))).toBe(true);
  });

  it("a tenant's share is kept by recency: touching a session keeps it, the idlest goes", () => {
    const store = new SessionStore(10, 60_000, Date.now, 2);
    const [a, b] = [store.create(as("acme")), store.create(as("acme"))];
    expect(store.touch(a, as("acme"))).toBe(true);
    store.create(as("acme"));
    expect(store.touch(a, as("acme"))).toBe(true);
    expect(store.touch(b, as("acme"))).toBe(false);
  });

  it("when the whole store is full, the least recently used session of all goes", () => {
    const store = new SessionStore(3, 60_000, Date.now, 2);
    const first = store.create(as("acme"));
    const second = store.create(as("globex"));
    store.create(as("initech"));
    store.create(as("umbrella"));
    expect(store.size).toBe(3);
    expect(store.touch(first, as("acme"))).toBe(false);
    expect(store.touch(second, as("globex"))).toBe(true);
    expect(store.sizeOf("acme")).toBe(0);
  });

  it("global admins have a share of their own; deleted and expired sessions free their slot", () => {
    let now = 0;
    const store = new SessionStore(10, 1_000, () => now, 2);
    const a = store.create(admin);
    store.create(admin);
    store.create(admin);
    expect(store.sizeOf("*global*")).toBe(2);
    expect(store.touch(a, admin)).toBe(false);
    const t = store.create(as("acme"));
    expect(store.delete(t, as("acme"))).toBe(true);
    expect(store.sizeOf("acme")).toBe(0);
    const u = store.create(as("acme"));
    now = 5_000;
    expect(store.touch(u, as("acme"))).toBe(false); // idle past the timeout
    expect(store.sizeOf("acme")).toBe(0);
  });
});
