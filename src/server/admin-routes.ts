import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "pino";
import type { Actor } from "../admin/admin-audit.js";
import type { ImpersonationService } from "../admin/impersonation.js";
import { purgeResultToJson, type TenantService } from "../admin/tenant-service.js";
import { type AuditReader, parseSince } from "../audit/audit-query.js";
import { auditEventToJson } from "../audit/sinks.js";
import type { TokenVerifier } from "../auth/verifier.js";
import type { ResolvedAuth } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import { type NewTenant, type TenantStatus, type TenantUpdate, tenantToJson } from "../tenancy/tenant.js";
import { isJsonContentType, readBody } from "./body.js";
import { sameSecret } from "./control-file.js";
import { type MapperContext, toHttpError } from "./error-mapper.js";
import { bearerToken } from "./pipeline.js";
import type { RequestIds } from "./request-id.js";
import { sendHttpError, sendJson } from "./respond.js";

export interface AdminRoutesDeps {
  auth: ResolvedAuth;
  verifier: TokenVerifier;
  tenants: TenantService;
  impersonations: ImpersonationService;
  auditLog: AuditReader;
  mapper: MapperContext;
  ids: RequestIds;
  /** The local control secret (embedded database only). */
  controlSecret: string | undefined;
  /** Extra routes, after the built-in ones. */
  extra?: AdminRoute[];
  /** Where failures answered with 500 are logged (with the request id the caller was given). */
  log?: Logger;
}

export interface AdminRequest {
  readonly actor: Actor;
  readonly params: Record<string, string>;
  readonly query: URLSearchParams;
  readonly body: Record<string, unknown>;
}

export interface AdminRoute {
  method: string;
  pattern: RegExp;
  handle(req: AdminRequest): Promise<{ status?: number; body: unknown }>;
}

const ID = "([A-Za-z0-9._:-]{1,64})";

/**
 * `/admin/api`: a scope of its own with its own authentication. Only a token carrying the admin
 * scope (or the local control secret the CLI reads from the data dir) gets past the gate; any
 * other valid token is 403 `insufficient_scope` on every path, known or not.
 *
 * | method | path | does |
 * |---|---|---|
 * | GET | /tenants[?status=&limit=] | list |
 * | POST | /tenants | create (`{id, name, rate_limit?, allowed_tools?, feature_flags?, trial_days?}`) |
 * | GET, PATCH | /tenants/:id | show, update (`convert_trial: true` ends a trial) |
 * | POST | /tenants/:id/suspend, /resume, /deprovision | lifecycle |
 * | POST | /purge (`{now?}`) | purge deprovisioned tenants past retention (all with `now`) |
 * | POST | /restore (`{archive}`) | restore from an archive inside `lifecycle.archive_dir` |
 * | GET | /audit[?tenant=&since=&action=&limit=] | read the audit log |
 * | POST | /impersonations (`{tenant_id, reason, ttl_s?}`) | a grant to act as a tenant (admin tokens only) |
 */
export class AdminRoutes {
  readonly #d: AdminRoutesDeps;
  readonly #routes: AdminRoute[];

  constructor(deps: AdminRoutesDeps) {
    this.#d = deps;
    const t = deps.tenants;
    const json = (body: unknown, status = 200) => ({ status, body });
    this.#routes = [
      {
        method: "GET",
        pattern: /^\/admin\/api\/tenants$/,
        handle: async ({ query }) => {
          const status = query.get("status") ?? undefined;
          const limit = query.has("limit") ? Number(query.get("limit")) : undefined;
          const list = await t.list({
            ...(status ? { status: status as TenantStatus } : {}),
            ...(limit !== undefined && Number.isSafeInteger(limit) && limit > 0 ? { limit } : {}),
          });
          return json({ tenants: list.map(tenantToJson) });
        },
      },
      {
        method: "POST",
        pattern: /^\/admin\/api\/tenants$/,
        handle: async ({ actor, body }) => {
          const record = await t.create(actor, newTenantFromJson(body));
          return json(tenantToJson(record), 201);
        },
      },
      {
        method: "GET",
        pattern: new RegExp(`^/admin/api/tenants/${ID}$`),
        handle: async ({ params }) => json(tenantToJson(await t.show(params.id!))),
      },
      {
        method: "PATCH",
        pattern: new RegExp(`^/admin/api/tenants/${ID}$`),
        handle: async ({ actor, params, body }) => {
          const record = await t.update(actor, params.id!, tenantUpdateFromJson(body));
          return json(tenantToJson(record));
        },
      },
      {
        method: "POST",
        pattern: new RegExp(`^/admin/api/tenants/${ID}/suspend$`),
        handle: async ({ actor, params, body }) =>
          json(tenantToJson(await t.suspend(actor, params.id!, optStr(body.reason)))),
      },
      {
        method: "POST",
        pattern: new RegExp(`^/admin/api/tenants/${ID}/resume$`),
        handle: async ({ actor, params }) => json(tenantToJson(await t.resume(actor, params.id!))),
      },
      {
        method: "POST",
        pattern: new RegExp(`^/admin/api/tenants/${ID}/deprovision$`),
        handle: async ({ actor, params }) => json(tenantToJson(await t.deprovision(actor, params.id!))),
      },
      {
        method: "POST",
        pattern: /^\/admin\/api\/purge$/,
        handle: async ({ actor, body }) => {
          const withoutArchive =
            body.without_archive === undefined ? [] : strList(body.without_archive, "without_archive");
          return json(purgeResultToJson(await t.purge(actor, { now: body.now === true, withoutArchive })));
        },
      },
      {
        method: "POST",
        pattern: /^\/admin\/api\/restore$/,
        handle: async ({ actor, body }) =>
          json(tenantToJson(await t.restore(actor, str(body.archive, "archive"), { confine: true }))),
      },
      {
        method: "GET",
        pattern: /^\/admin\/api\/audit$/,
        handle: async ({ query }) => {
          const tenant = query.get("tenant");
          const since = query.get("since");
          const action = query.get("action");
          const limit = query.get("limit");
          const events = await deps.auditLog.query({
            ...(tenant ? { tenant } : {}),
            ...(since ? { since: parseSince(since) } : {}),
            ...(action ? { action } : {}),
            ...(limit ? { limit: /^[0-9]{1,6}$/.test(limit) ? Number(limit) : Number.NaN } : {}),
          });
          return json({ events: events.map(auditEventToJson) });
        },
      },
      {
        method: "POST",
        pattern: /^\/admin\/api\/impersonations$/,
        handle: async ({ actor, body }) => {
          if (!actor.admin) {
            throw new TenantryError(
              "forbidden",
              "impersonation needs an admin token: the grant is bound to it",
            );
          }
          const issued = await deps.impersonations.grant(
            { ...actor.admin, ...(actor.requestId ? { requestId: actor.requestId } : {}) },
            str(body.tenant_id, "tenant_id"),
            body.reason,
            body.ttl_s !== undefined ? { ttlSeconds: body.ttl_s as number } : {},
          );
          return json(
            {
              grant: issued.grant,
              tenant_id: issued.tenantId,
              reason: issued.reason,
              expires_at: issued.expiresAt.toISOString(),
              header: "X-Tenantry-Impersonate",
            },
            201,
          );
        },
      },
      ...(deps.extra ?? []),
    ];
  }

  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const requestId = this.#d.ids.next(req.headers["x-request-id"]);
    res.setHeader("X-Request-Id", requestId);
    try {
      // Authenticate first: a caller without the admin scope learns nothing, not even which paths exist.
      const actor = await this.#authenticate(req, requestId);
      const route = this.#routes.find((r) => r.pattern.test(url.pathname));
      if (!route) throw new TenantryError("not_found", "no such admin endpoint");
      const matching = this.#routes.find((r) => r.method === req.method && r.pattern.test(url.pathname));
      if (!matching) throw new TenantryError("method_not_allowed", `${req.method} is not allowed here`);
      const m = matching.pattern.exec(url.pathname)!;
      let body: Record<string, unknown> = {};
      if (req.method === "POST" || req.method === "PATCH") {
        const raw = await readBody(req, 1_048_576);
        if (raw.length > 0) {
          if (!isJsonContentType(req.headers["content-type"])) {
            throw new TenantryError("unsupported_media_type", "Content-Type must be application/json");
          }
          body = parseObject(raw);
        }
      }
      const out = await matching.handle({ actor, params: { id: m[1] ?? "" }, query: url.searchParams, body });
      sendJson(res, out.status ?? 200, out.body);
    } catch (error) {
      const mapped = toHttpError(error, this.#d.mapper);
      if (mapped.status === 500)
        this.#d.log?.error({ err: error, request_id: requestId }, "admin request failed");
      sendHttpError(res, mapped);
    }
  }

  async #authenticate(req: IncomingMessage, requestId: string): Promise<Actor> {
    const header = req.headers.authorization ?? "";
    const secret = this.#d.controlSecret;
    if (header.startsWith("Tenantry-Control ")) {
      if (secret && sameSecret(header.slice(17).trim(), secret)) return { id: "cli", requestId };
      throw new TenantryError("invalid_token", "invalid control credential");
    }
    const token = await this.#d.verifier.verify(bearerToken(header));
    if (!token.scopes.includes(this.#d.auth.adminScope)) {
      throw new TenantryError("insufficient_scope", "the admin API needs the admin scope", {
        details: { scope: this.#d.auth.adminScope },
      });
    }
    return { id: `admin:${token.userId}`, requestId, admin: { adminId: token.userId, issuer: token.issuer } };
  }
}

/** The JSON form of `tenants create` (admin API and CLI) → what TenantService takes. */
export function newTenantFromJson(body: Record<string, unknown>): NewTenant {
  return {
    id: str(body.id, "id"),
    name: str(body.name, "name"),
    ...(body.rate_limit !== undefined ? { rateLimit: body.rate_limit as number | null } : {}),
    ...(body.allowed_tools !== undefined
      ? { allowedTools: strList(body.allowed_tools, "allowed_tools") }
      : {}),
    ...(body.feature_flags !== undefined ? { featureFlags: flags(body.feature_flags) } : {}),
    ...(body.trial_days !== undefined ? { trialDays: body.trial_days as number } : {}),
  };
}

/** The JSON form of `tenants update` (admin API and CLI) → what TenantService takes. */
export function tenantUpdateFromJson(
  body: Record<string, unknown>,
): TenantUpdate & { convertTrial?: boolean } {
  return {
    ...(body.name !== undefined ? { name: str(body.name, "name") } : {}),
    ...(body.rate_limit !== undefined ? { rateLimit: body.rate_limit as number | null } : {}),
    ...(body.allowed_tools !== undefined
      ? { allowedTools: strList(body.allowed_tools, "allowed_tools") }
      : {}),
    ...(body.feature_flags !== undefined
      ? { featureFlags: flags(body.feature_flags), replaceFlags: body.replace_flags === true }
      : {}),
    ...(body.convert_trial === true ? { convertTrial: true } : {}),
  };
}

function parseObject(raw: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new TenantryError("bad_request", "the body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TenantryError("bad_request", "the body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw new TenantryError("invalid_argument", `${what} must be a string`);
  return v;
}

function optStr(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function strList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new TenantryError("invalid_argument", `${what} must be a list of strings`);
  }
  return v as string[];
}

function flags(v: unknown): Record<string, boolean | string | number> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new TenantryError("invalid_argument", "feature_flags must be an object");
  }
  for (const x of Object.values(v)) {
    if (!["boolean", "string", "number"].includes(typeof x)) {
      throw new TenantryError("invalid_argument", "feature flag values must be booleans, strings or numbers");
    }
  }
  return v as Record<string, boolean | string | number>;
}
