import { Readable } from "node:stream";
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { isTenantryError, TenantryError } from "../../errors.js";
import { validateStorageKey, validateStoragePrefix } from "./keys.js";
import {
  clampListLimit,
  type ObjectGetOptions,
  type ObjectListOptions,
  type ObjectListPage,
  type ObjectPutStreamOptions,
  type ObjectStore,
  objectTooLarge,
  readFailures,
} from "./object-store.js";

export interface S3ObjectStoreOptions {
  bucket: string;
  /** Defaults to the SDK's chain (`AWS_REGION`, profile), or `us-east-1` with a custom endpoint. */
  region?: string;
  /** An S3-compatible endpoint (MinIO, R2, s3rver); absent means AWS. */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** Static credentials; absent means the SDK's default chain (env, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /**
   * The longest one request may take, connecting at most 3 s of it (default 30 s). The SDK has no
   * limit of its own: an endpoint that accepts and never answers would hold a tool call forever.
   */
  requestTimeoutMs?: number;
}

/** The longest a connection to S3 may take to open. */
const CONNECT_TIMEOUT_MS = 3000;

type S3Error = { name?: string; $metadata?: { httpStatusCode?: number } };

function isNotFound(error: unknown): boolean {
  const { name, $metadata } = (error ?? {}) as S3Error;
  // A missing bucket is a deployment fault, not a missing object: let it surface as an error.
  if (name === "NoSuchBucket") return false;
  return name === "NoSuchKey" || name === "NotFound" || $metadata?.httpStatusCode === 404;
}

/**
 * Collects a body stream, counting as it comes: an answer without a length, or one longer than it
 * said, is cut off one chunk past `maxBytes` and never buffered whole.
 */
async function readBounded(body: Readable, maxBytes: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    for await (const chunk of body) {
      const bytes = chunk as Uint8Array;
      length += bytes.byteLength;
      if (length > maxBytes) throw objectTooLarge(maxBytes);
      chunks.push(bytes);
    }
  } finally {
    body.destroy();
  }
  // One copy into memory of its own: chunks may be views of larger (pooled) buffers, and tool
  // code can reach a Uint8Array's `.buffer`.
  const whole = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return whole;
}

/** Objects in one S3 bucket. Keys are stored as given; ordering is S3's (UTF-8 bytes). */
export class S3ObjectStore implements ObjectStore {
  readonly #client: S3Client;
  readonly #bucket: string;

  constructor(options: S3ObjectStoreOptions) {
    this.#bucket = options.bucket;
    this.#client = new S3Client({
      ...(options.region !== undefined
        ? { region: options.region }
        : options.endpoint !== undefined
          ? { region: "us-east-1" }
          : {}),
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? false,
      ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
      requestHandler: {
        connectionTimeout: Math.min(CONNECT_TIMEOUT_MS, options.requestTimeoutMs ?? 30_000),
        requestTimeout: options.requestTimeoutMs ?? 30_000,
        throwOnRequestTimeout: true,
      },
    });
  }

  /** Runs one S3 call: "not found" yields `onNotFound()` when given; other failures `backend_unavailable`. */
  async #call<T>(operation: string, run: () => Promise<T>, onNotFound?: () => T): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (onNotFound !== undefined && isNotFound(error)) return onNotFound();
      if (isTenantryError(error)) throw error;
      throw new TenantryError("backend_unavailable", `object store ${operation} failed`, { cause: error });
    }
  }

  async put(fullKey: string, body: Uint8Array, contentType?: string): Promise<void> {
    const Key = validateStorageKey(fullKey);
    await this.#call("put", () =>
      this.#client.send(
        new PutObjectCommand({ Bucket: this.#bucket, Key, Body: body, ContentType: contentType }),
      ),
    );
  }

  async get(fullKey: string, options: ObjectGetOptions = {}): Promise<Uint8Array | undefined> {
    const Key = validateStorageKey(fullKey);
    const max = options.maxBytes;
    return this.#call(
      "get",
      async (): Promise<Uint8Array | undefined> => {
        const out = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key }));
        if (out.Body === undefined) return new Uint8Array();
        if (max === undefined) return await out.Body.transformToByteArray();
        // In Node the body is the response stream itself: destroying it reads no more of it.
        const body = out.Body as unknown as Readable;
        if (out.ContentLength !== undefined && out.ContentLength > max) {
          body.destroy();
          throw objectTooLarge(max, out.ContentLength);
        }
        return readBounded(body, max);
      },
      () => undefined,
    );
  }

  async putStream(
    fullKey: string,
    body: AsyncIterable<Uint8Array>,
    options: ObjectPutStreamOptions = {},
  ): Promise<void> {
    const Key = validateStorageKey(fullKey);
    const { size, sha256, contentType } = options;
    // The SDK does not listen for errors of the body it sends (it pipes it, through streams of its
    // own): a body that fails part-way (an unreadable archive file, a failed checksum) was an
    // uncaught exception, and the request waited for the rest of its ContentLength until the
    // request timeout. The body's error is caught here instead: it aborts the request (before the
    // body ends, so what was sent is never a complete PUT) and is what the put fails with.
    const abort = new AbortController();
    let failed: { error: unknown } | undefined;
    const guarded = async function* () {
      try {
        yield* body;
      } catch (error) {
        failed = { error };
        abort.abort();
      }
    };
    const stream = Readable.from(guarded(), { objectMode: false });
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.#bucket,
          Key,
          Body: stream,
          // A stream of known length goes as one PUT; S3 refuses a PUT over 5 GiB.
          ...(size !== undefined ? { ContentLength: size } : {}),
          ...(sha256 !== undefined ? { ChecksumSHA256: Buffer.from(sha256, "hex").toString("base64") } : {}),
          ContentType: contentType,
        }),
        { abortSignal: abort.signal },
      );
      if (failed !== undefined) throw failed.error; // the request beat the abort: still a failed put
    } catch (error) {
      const cause = failed !== undefined ? failed.error : error;
      if (isTenantryError(cause)) throw cause;
      throw new TenantryError("backend_unavailable", "object store put failed", { cause });
    } finally {
      stream.destroy();
    }
  }

  async getStream(fullKey: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const Key = validateStorageKey(fullKey);
    return this.#call(
      "get",
      async (): Promise<AsyncIterable<Uint8Array>> => {
        const out = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key }));
        // In Node the body is the response stream itself, read as the caller reads it.
        return readFailures((out.Body as unknown as Readable | undefined) ?? Readable.from([]));
      },
      () => undefined,
    );
  }

  async delete(fullKey: string): Promise<boolean> {
    const Key = validateStorageKey(fullKey);
    // S3 deletes idempotently and does not say whether the object existed: ask first.
    const exists = await this.#call(
      "delete",
      async () => Boolean(await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key }))),
      () => false,
    );
    if (!exists) {
      // A HEAD answer has no body, so a missing bucket looks like a missing key (404 NotFound):
      // make sure the bucket is there, so a misconfigured one fails here as on every other call.
      await this.#call("delete", () => this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket })));
      return false;
    }
    await this.#call("delete", () =>
      this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key })),
    );
    return true;
  }

  async list(fullPrefix: string, options: ObjectListOptions): Promise<ObjectListPage> {
    const Prefix = validateStoragePrefix(fullPrefix);
    const StartAfter = options.cursor === undefined ? undefined : validateStorageKey(options.cursor);
    const out = await this.#call("list", () =>
      this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          Prefix,
          StartAfter,
          MaxKeys: clampListLimit(options.limit),
        }),
      ),
    );
    const keys = (out.Contents ?? []).flatMap((object) => (object.Key === undefined ? [] : [object.Key]));
    const last = keys.at(-1);
    return out.IsTruncated && last !== undefined ? { keys, nextCursor: last } : { keys };
  }

  async deletePrefix(fullPrefix: string): Promise<number> {
    const Prefix = validateStoragePrefix(fullPrefix);
    let deleted = 0;
    let ContinuationToken: string | undefined;
    do {
      const page = await this.#call("deletePrefix", () =>
        this.#client.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix, ContinuationToken })),
      );
      const objects = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
      if (objects.length > 0) {
        // A page holds at most 1000 keys, DeleteObjects' own limit.
        const result = await this.#call("deletePrefix", () =>
          this.#client.send(
            new DeleteObjectsCommand({ Bucket: this.#bucket, Delete: { Objects: objects, Quiet: true } }),
          ),
        );
        if (result.Errors !== undefined && result.Errors.length > 0) {
          const first = result.Errors[0];
          throw new TenantryError(
            "backend_unavailable",
            `object store deletePrefix failed for ${result.Errors.length} objects (${first?.Code}: ${first?.Message})`,
          );
        }
        deleted += objects.length;
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken !== undefined);
    return deleted;
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }
}
