import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** s3rver's fixed credentials: it verifies request signatures against them. */
export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } as const;

export interface TestS3 {
  endpoint: string;
  bucket: string;
  close(): Promise<void>;
}

/*
 * s3rver runs in a child process because it signs ListObjectsV2 continuation tokens with DES,
 * which Node 20's OpenSSL 3 only offers behind --openssl-legacy-provider: in-process, every
 * truncated listing (the pagination we most need to test) fails with InternalError. The child
 * exits when its stdin closes, so a crashed test run leaves no server behind.
 */
const CHILD = `
const S3rver = require(process.argv[1]);
const server = new S3rver(JSON.parse(process.argv[2]));
server.run().then(({ port }) => process.stdout.write(JSON.stringify({ port }) + "\\n"), (e) => {
  console.error(e);
  process.exit(1);
});
const stop = () => server.close().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.stdin.on("close", stop).resume();
`;

/** Starts s3rver on 127.0.0.1 (random port) over a temporary directory, with one empty bucket. */
export async function startS3(bucket = "tenantry-test"): Promise<TestS3> {
  const directory = await mkdtemp(join(tmpdir(), "tenantry-s3-"));
  const options = {
    address: "127.0.0.1",
    port: 0,
    directory,
    silent: true,
    configureBuckets: [{ name: bucket }],
  };
  const child = spawn(
    process.execPath,
    [
      "--openssl-legacy-provider",
      "-e",
      CHILD,
      createRequire(import.meta.url).resolve("s3rver"),
      JSON.stringify(options),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  try {
    const port = await readPort(child);
    return {
      endpoint: `http://127.0.0.1:${port}`,
      bucket,
      async close() {
        await stopChild(child);
        await rm(directory, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await stopChild(child);
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}

async function readPort(child: ChildProcess): Promise<number> {
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const exited = once(child, "exit").then(([code]) => {
    throw new Error(`s3rver exited before listening (code ${code})`);
  });
  const first = (async () => {
    for await (const line of lines) return (JSON.parse(line) as { port: number }).port;
    throw new Error("s3rver closed its output before listening");
  })();
  return Promise.race([first, exited]);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  await exited;
}

/** A `[storage]` table (before schema defaults) pointing at a test s3rver. */
export function s3StorageTable(s3: TestS3): Record<string, unknown> {
  return {
    backend: "s3",
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: "us-east-1",
    force_path_style: true,
    access_key_id: S3RVER_CREDENTIALS.accessKeyId,
    secret_access_key: S3RVER_CREDENTIALS.secretAccessKey,
  };
}
