// A throwaway PostgreSQL database with an owner and a runtime role, as in production.
import { randomBytes } from "node:crypto";
import pg from "pg";

const SUPER = process.env.BENCH_PG_SUPER_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export async function createBenchDatabase() {
  const id = randomBytes(4).toString("hex");
  const owner = `bench_owner_${id}`;
  const runtime = `bench_rt_${id}`;
  const name = `bench_db_${id}`;
  const su = new pg.Client({ connectionString: SUPER, connectionTimeoutMillis: 1500 });
  try {
    await su.connect();
  } catch {
    return undefined;
  }
  await su.query(`CREATE ROLE ${owner} LOGIN NOSUPERUSER NOBYPASSRLS`);
  await su.query(`CREATE ROLE ${runtime} LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT`);
  await su.query(`CREATE DATABASE ${name} OWNER ${owner}`);
  await su.query(`GRANT CONNECT ON DATABASE ${name} TO ${runtime}`);
  await su.end();
  const inDb = new pg.Client({ connectionString: SUPER.replace(/\/[^/]*$/, `/${name}`) });
  await inDb.connect();
  await inDb.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO ${owner}`);
  await inDb.end();
  const url = (role) => `postgres://${role}@127.0.0.1:5432/${name}`;
  return {
    url: url(runtime),
    adminUrl: url(owner),
    async drop() {
      const c = new pg.Client({ connectionString: SUPER });
      await c.connect();
      await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
      await c.query(`DROP DATABASE IF EXISTS ${name}`);
      await c.query(`DROP ROLE IF EXISTS ${runtime}`);
      await c.query(`DROP ROLE IF EXISTS ${owner}`);
      await c.end();
    },
  };
}
