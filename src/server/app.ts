import { mkdir } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type Logger, pino } from "pino";
import { type AdminStage, createAdminStage } from "../admin/admin-stage.js";
import { runDoctor } from "../admin/doctor.js";
import type { TenantService } from "../admin/tenant-service.js";
import type { AuditSink } from "../audit/audit-event.js";
import { createAuditSink } from "../audit/sinks.js";
import { type DevKeys, loadOrCreateDevKeys } from "../auth/dev-issuer.js";
import type { KeyInput } from "../auth/key-source.js";
import { protectedResourceMetadata, wwwAuthenticate } from "../auth/metadata.js";
import { createTokenVerifier, type TokenVerifier } from "../auth/verifier.js";
import { loadConfig, parseConfig } from "../config/load.js";
import type { TenantryConfig } from "../config/resolve.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../db/core-migrations.js";
import type { Databases } from "../db/database.js";
import { openDatabases } from "../db/open.js";
import { CONNECTION_WAIT_MS } from "../db/postgres.js";
import { type AppMigration, DataIsolation } from "../isolation/data-isolation.js";
import { storagePrefixForKey } from "../isolation/names.js";
import { createObjectStore } from "../isolation/storage/create-object-store.js";
import type { ObjectStore } from "../isolation/storage/object-store.js";
import { TenantStorage, type TenantStorageOptions } from "../isolation/storage/tenant-storage.js";
import type { TenantStatements, TenantTransaction } from "../isolation/tenant-db.js";
import { InFlightLimiter } from "../limits/concurrency.js";
import { createRateLimiter, type RateLimiter } from "../limits/rate-limiter.js";
import { TenantRegistry } from "../tenancy/registry.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import type { ToolDefinition } from "../tools/define-tool.js";
import { ToolRegistry } from "../tools/tool-registry.js";
import { type AdminRoute, AdminRoutes } from "./admin-routes.js";
import { newControlSecret, removeControlFile, sameSecret, writeControlFile } from "./control-file.js";
import type { MapperContext } from "./error-mapper.js";
import { type CallResources, McpDispatcher, type ResourceFactory } from "./mcp-dispatcher.js";
import { McpEndpoint } from "./mcp-endpoint.js";
import { ServerMetrics } from "./metrics.js";
import { AdmissionPipeline } from "./pipeline.js";
import { RequestIds } from "./request-id.js";
import { sendJson, sendText } from "./respond.js";
import { SessionStore } from "./sessions.js";

export const VERSION = "0.1.0";

/**
 * The longest `/readyz` waits for the database. A server that holds the connection open and never
 * answers (a partition, a hung primary) would otherwise hold the probe until TCP gives up.
 */
const READY_CHECK_TIMEOUT_MS = 2000;

/** Whether `check` resolves within `ms`; a rejection or a late answer is `false`. */
async function within(ms: number, check: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([check.then(() => true), late]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

export interface CreateTenantryOptions {
  /** Path of `tenantry.toml` (default `./tenantry.toml` when `config` is not given). */
  configPath?: string;
  /** A config object shaped like `tenantry.toml`, instead of a file. */
  config?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** A pino logger, or `false` for silence. Default: pino JSON to stdout at `info`. */
  logger?: Logger | false;
  /** Keep the embedded database in memory (tests). */
  memoryDatabase?: boolean;
  /** Keys tokens are verified with, instead of a remote JWKS (tests, the dev issuer). */
  verifierKeys?: KeyInput;
  /** Replica name in logs and audit events. */
  replicaId?: string;
  /** Write the control file so CLI commands can reach this server (embedded database only). Default true. */
  controlFile?: boolean;
  /** Extra admin REST routes (registered by the admin stage). */
  adminRoutes?: AdminRoute[];
}

/**
 * A Tenantry server: tools, migrations, and the pipeline around them.
 *
 * @example
 * const app = await createTenantry({ configPath: "tenantry.toml" });
 * app.tool(whoami);
 * await app.listen();
 */
export class TenantryApp {
  readonly config: TenantryConfig;
  readonly log: Logger;
  readonly metrics = new ServerMetrics();
  readonly tools = new ToolRegistry();
  readonly ids: RequestIds;
  #options: CreateTenantryOptions;
  #appMigrations: AppMigration[] = [];
  #started = false;
  #server: Server | undefined;
  #closers: (() => Promise<void>)[] = [];
  /** Requests being handled, and what `close` runs once there are none. */
  #active = 0;
  #idle: (() => void) | undefined;
  #controlSecret: string | undefined;
  #closing: Promise<void> | undefined;
  dbs!: Databases;
  registry!: TenantRegistry;
  isolation!: DataIsolation;
  objects!: ObjectStore;
  audit!: AuditSink;
  limiter!: RateLimiter;
  verifier!: TokenVerifier;
  tenants!: TenantService;
  /** Impersonation, the audit log reader, the purge job and the admin tools. */
  adminServices!: AdminStage;
  devKeys: DevKeys | undefined;
  #mcp!: McpEndpoint;
  #admin!: AdminRoutes;

  constructor(config: TenantryConfig, options: CreateTenantryOptions) {
    this.config = config;
    this.#options = options;
    this.log =
      options.logger === false
        ? pino({ level: "silent" })
        : (options.logger ?? pino({ level: process.env.TENANTRY_LOG_LEVEL ?? "info" }));
    this.ids = new RequestIds(options.replicaId);
  }

  /** Registers a tool. Call before `start()`/`listen()`. */
  tool(definition: ToolDefinition): this {
    this.tools.add(definition as ToolDefinition);
    return this;
  }

  /** Registers app migrations for tenant tables, applied per the isolation strategy. */
  migrations(migrations: readonly AppMigration[]): this {
    this.#appMigrations.push(...migrations);
    if (this.#started) this.isolation.add(migrations);
    return this;
  }

  /**
   * Opens databases, migrates, checks that the runtime role cannot bypass RLS, and builds the
   * pipeline. `listen()` calls it. `safetyCheck: false` is for `tenantry migrate`, which repairs
   * what the check would refuse and checks afterwards.
   */
  async start(options: { safetyCheck?: boolean } = {}): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const c = this.config;
    const embedded = !c.database.url;
    if (embedded && !this.#options.memoryDatabase) await mkdir(c.database.data_dir, { recursive: true });
    this.dbs = await openDatabases(c, { memory: this.#options.memoryDatabase ?? false });
    this.#closers.push(() => this.dbs.close());
    if (this.dbs.runtimeRole) await ensurePgliteRuntimeRole(this.dbs.admin, this.dbs.runtimeRole);
    await runCoreMigrations(this.dbs.admin, this.dbs.runtimeRoleName);

    this.isolation = new DataIsolation(this.dbs, c.auth.multi_tenant.isolation, {
      max: c.database.max_connections_per_tenant ?? Math.ceil(c.database.pool_size / 2),
      waitMs: CONNECTION_WAIT_MS,
    });
    this.isolation.add(this.#appMigrations);
    await this.isolation.migrateShared();
    if (options.safetyCheck !== false) await this.isolation.checkSafety();

    this.registry = new TenantRegistry(this.dbs.admin, { ttlMs: c.auth.multi_tenant.registry_cache_ttl_ms });
    await this.registry.start();
    this.#closers.push(() => this.registry.stop());

    this.objects = createObjectStore(c.storage);
    this.#closers.push(async () => this.objects.close?.());

    this.audit = createAuditSink(c.audit.sink, {
      db: this.dbs.admin,
      path: c.audit.path,
      batching: {
        queueSize: c.audit.queue_size,
        batchSize: c.audit.batch_size,
        flushIntervalMs: c.audit.flush_interval_ms,
        replica: this.ids.replica,
        onError: (err) => this.log.error({ err }, "audit batch write failed; will retry"),
      },
    });
    this.#closers.push(() => this.audit.close());

    this.limiter = createRateLimiter(c.rate_limit, { log: this.log });
    this.#closers.push(() => this.limiter.close());

    const auth = c.resolvedAuth;
    let keys = this.#options.verifierKeys;
    if (auth.provider === "dev" && !keys) {
      this.devKeys = await loadOrCreateDevKeys(c.database.data_dir);
      keys = this.devKeys.keySet;
    }
    this.verifier = createTokenVerifier(auth, keys ? { keys } : {});

    const adminStage = createAdminStage({
      config: c,
      dbs: this.dbs,
      registry: this.registry,
      isolation: this.isolation,
      objects: this.objects,
      audit: this.audit,
      replica: this.ids.replica,
      log: this.log,
    });
    this.adminServices = adminStage;
    this.tenants = adminStage.tenants;
    for (const tool of adminStage.tools) if (!this.tools.names().includes(tool.name)) this.tools.add(tool);
    adminStage.purgeJob.start();
    this.#closers.push(() => adminStage.purgeJob.stop());

    const mapper: MapperContext = { wwwAuthenticate: (p) => wwwAuthenticate(c, p) };
    const isolation = this.isolation;
    const objects = this.objects;
    const storageOptions = { maxObjectBytes: c.storage.max_object_bytes, log: this.log };
    const resources: ResourceFactory = {
      open: (_scope, record, transaction) =>
        new LazyCallResources(isolation, objects, storageOptions, record, transaction),
    };
    const dispatcher = new McpDispatcher(this.tools, resources, {
      name: "tenantry",
      version: VERSION,
      adminContext: adminStage.adminContext,
      toolTimeoutMs: c.server.tool_timeout_ms,
    });
    this.#mcp = new McpEndpoint({
      pipeline: new AdmissionPipeline(auth, this.verifier, this.registry, adminStage.impersonations),
      dispatcher,
      limiter: this.limiter,
      inFlight: new InFlightLimiter(c.rate_limit.max_in_flight_per_tenant),
      defaultRateLimit: c.auth.multi_tenant.default_rate_limit,
      sessions:
        c.server.sessions === "stateful"
          ? new SessionStore(
              c.server.max_sessions,
              c.server.session_idle_timeout_s * 1000,
              Date.now,
              c.server.max_sessions_per_tenant ?? Math.ceil(c.server.max_sessions / 2),
            )
          : undefined,
      maxBodyBytes: c.server.max_body_bytes,
      allowedOrigins: new Set([new URL(c.baseUrl).origin, ...c.server.allowed_origins]),
      mapper,
      audit: this.audit,
      metrics: this.metrics,
      ids: this.ids,
      log: this.log,
    });
    this.#controlSecret = embedded && this.#options.controlFile !== false ? newControlSecret() : undefined;
    this.#admin = new AdminRoutes({
      auth,
      verifier: this.verifier,
      tenants: this.tenants,
      impersonations: adminStage.impersonations,
      auditLog: adminStage.auditLog,
      mapper,
      ids: this.ids,
      controlSecret: this.#controlSecret,
      log: this.log,
      extra: [
        {
          // `tenantry doctor` next to a running server on the embedded database (one process owns it).
          method: "GET",
          pattern: /^\/admin\/api\/doctor$/,
          handle: async () => ({
            body: await runDoctor(c, { databases: this.dbs, migrations: this.isolation.migrations }),
          }),
        },
        ...(this.#options.adminRoutes ?? []),
      ],
    });
  }

  /** The request handler, for mounting in an existing node:http server. */
  readonly handler = (req: IncomingMessage, res: ServerResponse): void => {
    this.#active++;
    void this.#route(req, res).then(this.#handled, (error: unknown) => {
      this.log.error({ err: error }, "unhandled request error");
      if (!res.headersSent) sendJson(res, 500, { error: "internal", message: "internal error" });
      else res.destroy();
      this.#handled();
    });
  };

  readonly #handled = (): void => {
    if (--this.#active === 0) this.#idle?.();
  };

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    if (path === "/mcp") return this.#mcp.handle(req, res);
    if (req.method === "GET" || req.method === "HEAD") {
      switch (path) {
        case "/.well-known/oauth-protected-resource":
        case "/.well-known/oauth-protected-resource/mcp":
          return sendJson(res, 200, protectedResourceMetadata(this.config), {
            "Access-Control-Allow-Origin": "*",
          });
        case "/healthz":
          return sendJson(res, 200, { status: "ok" });
        case "/readyz":
          return this.#ready(res);
        case "/metrics":
          if (!this.#mayScrape(req)) {
            return sendJson(
              res,
              401,
              { error: "invalid_token", message: "/metrics needs the metrics token" },
              { "WWW-Authenticate": 'Bearer realm="metrics", error="invalid_token"' },
            );
          }
          return sendText(res, 200, await this.metrics.text(), this.metrics.registry.contentType);
        case "/dev-issuer/.well-known/jwks.json":
          if (this.devKeys) return sendJson(res, 200, this.devKeys.jwks());
          break;
        case "/dev-issuer/.well-known/openid-configuration":
          if (this.devKeys) {
            const issuer = this.config.resolvedAuth.issuers[0];
            return sendJson(res, 200, { issuer, jwks_uri: `${issuer}/.well-known/jwks.json` });
          }
          break;
      }
    }
    if (path.startsWith("/admin/api/")) return this.#admin.handle(req, res, new URL(url, "http://x"));
    sendJson(res, 404, { error: "not_found", message: "no such endpoint" });
  }

  /** With `[server] metrics_token`, a scrape must present it as a bearer token. */
  #mayScrape(req: IncomingMessage): boolean {
    const token = this.config.server.metrics_token;
    if (token === undefined) return true;
    const header = req.headers.authorization;
    return typeof header === "string" && sameSecret(header, `Bearer ${token}`);
  }

  async #ready(res: ServerResponse): Promise<void> {
    const checks: Record<string, string> = {};
    checks.database = (await within(READY_CHECK_TIMEOUT_MS, this.dbs.admin.query("SELECT 1")))
      ? "ok"
      : "unavailable";
    if (this.limiter.backend === "redis") {
      // Redis down with on_backend_error = "deny" denies every request; with "local" the replica
      // still serves, limited per replica: ready, but the check shows it.
      checks.rate_limit = (await this.limiter.reachable())
        ? "ok"
        : this.config.rate_limit.on_backend_error === "local"
          ? "degraded"
          : "unavailable";
    }
    const ok = Object.values(checks).every((v) => v === "ok" || v === "degraded");
    sendJson(res, ok ? 200 : 503, { status: ok ? "ready" : "not_ready", checks });
  }

  /** Starts the HTTP server; resolves with its URL. */
  async listen(options: { port?: number; host?: string } = {}): Promise<{ url: string; port: number }> {
    await this.start();
    // Headers large enough that an oversized token reaches the verifier and gets a proper 401
    // (Node's default 16 KiB would answer 431 with no challenge); the verifier caps token size.
    const maxHeaderSize = Math.max(65_536, this.config.resolvedAuth.maxTokenBytes + 16_384);
    // A client that sends its request slowly, or stops half-way (headers or body), is answered 408
    // and its socket closed once request_timeout_ms has passed since the request began; Node checks
    // every connection's progress once per second (its default: every 30 s).
    const requestTimeout = this.config.server.request_timeout_ms;
    const server = createServer(
      {
        keepAliveTimeout: 65_000,
        maxHeaderSize,
        requestTimeout,
        headersTimeout: requestTimeout,
        connectionsCheckingInterval: Math.min(1000, requestTimeout),
      },
      this.handler,
    );
    this.#server = server;
    const port = options.port ?? this.config.server.port;
    const host = options.host ?? this.config.server.host;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const actual = (server.address() as AddressInfo).port;
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${actual}`;
    if (this.#controlSecret && !this.#options.memoryDatabase) {
      const secret = this.#controlSecret;
      await writeControlFile(this.config.database.data_dir, {
        url,
        baseUrl: this.config.baseUrl,
        pid: process.pid,
        secret,
      });
      this.#closers.push(() => removeControlFile(this.config.database.data_dir, secret));
    }
    this.log.info({ url, replica: this.ids.replica }, "tenantry listening");
    return { url, port: actual };
  }

  /**
   * Stops accepting requests, waits for those in flight, flushes the audit log and closes everything.
   * Later calls share the first one's outcome.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      await new Promise<void>((resolve) => {
        // A keep-alive connection whose request ends after close() would otherwise stay open until
        // keepAliveTimeout (and hold the audit flush back): close each one as soon as it is idle.
        const sweep = setInterval(() => server.closeIdleConnections(), 25);
        server.close(() => {
          clearInterval(sweep);
          resolve();
        });
        server.closeIdleConnections();
      });
    }
    // A request whose client went away holds no connection open, yet it may still be running (a
    // tool, then its audit event): wait for it too before closing what it uses.
    if (this.#active > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
      this.#idle = undefined;
    }
    const closers = this.#closers.reverse();
    this.#closers = [];
    for (const close of closers) {
      try {
        await close();
      } catch (error) {
        this.log.error({ err: error }, "error while closing");
      }
    }
  }
}

/** Loads `tenantry.toml` (or takes `options.config`) and builds an app. Nothing is opened until `listen()`. */
export async function createTenantry(options: CreateTenantryOptions = {}): Promise<TenantryApp> {
  const config = options.config
    ? parseConfig(options.config, options.configPath ?? "config", options.env ?? process.env)
    : await loadConfig(options.configPath ?? "tenantry.toml", options.env ?? process.env);
  return new TenantryApp(config, options);
}

/**
 * A tool call's `ctx.db` and `ctx.storage`, each made on first use: a tool that touches neither
 * database nor storage pays for neither, and `finish` has nothing to do.
 */
class LazyCallResources implements CallResources {
  readonly #isolation: DataIsolation;
  readonly #objects: ObjectStore;
  readonly #storageOptions: TenantStorageOptions;
  readonly #record: TenantRecord;
  readonly #transaction: "call" | "statement";
  #db: TenantTransaction | TenantStatements | undefined;
  #storage: TenantStorage | undefined;
  #finished = false;

  constructor(
    isolation: DataIsolation,
    objects: ObjectStore,
    storageOptions: TenantStorageOptions,
    record: TenantRecord,
    transaction: "call" | "statement",
  ) {
    this.#transaction = transaction;
    this.#isolation = isolation;
    this.#objects = objects;
    this.#storageOptions = storageOptions;
    this.#record = record;
  }

  get db(): TenantTransaction | TenantStatements {
    if (this.#db === undefined) {
      this.#db =
        this.#transaction === "statement"
          ? this.#isolation.openStatements(this.#record)
          : this.#isolation.open(this.#record);
      // First used after the call ended (work the tool left running): refuses every query, so
      // nothing opens a transaction that no one would end.
      if (this.#finished) void this.#db.finish(false);
    }
    return this.#db;
  }

  get storage(): TenantStorage {
    if (this.#storage === undefined) {
      this.#storage = new TenantStorage(
        this.#objects,
        storagePrefixForKey(this.#record.key),
        this.#storageOptions,
      );
      if (this.#finished) this.#storage.end();
    }
    return this.#storage;
  }

  finish(ok: boolean): Promise<void> | undefined {
    this.#finished = true;
    this.#storage?.end();
    return this.#db?.finish(ok);
  }
}
