import type { z } from "zod";
import type { storageSchema } from "../../config/schema.js";
import { TenantryError } from "../../errors.js";
import { FsObjectStore } from "./fs-store.js";
import type { ObjectStore } from "./object-store.js";
import { S3ObjectStore } from "./s3-store.js";

/** The parsed `[storage]` table of `tenantry.toml`. */
export type StorageConfig = z.infer<typeof storageSchema>;

/**
 * Builds the raw backend named by `[storage] backend`. A relative `root` resolves against the
 * working directory. Fails with `config_invalid` on an incomplete s3 table: half a credential pair
 * must not quietly fall back to whatever the default chain finds.
 */
export function createObjectStore(config: StorageConfig): ObjectStore {
  if (config.backend === "fs") return new FsObjectStore(config.root);
  if (config.bucket === undefined) {
    throw new TenantryError("config_invalid", '[storage] backend = "s3" needs bucket');
  }
  const { access_key_id: accessKeyId, secret_access_key: secretAccessKey } = config;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new TenantryError(
      "config_invalid",
      "[storage] needs both access_key_id and secret_access_key, or neither",
    );
  }
  return new S3ObjectStore({
    bucket: config.bucket,
    ...(config.region !== undefined ? { region: config.region } : {}),
    ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.force_path_style,
    requestTimeoutMs: config.request_timeout_ms,
    ...(accessKeyId !== undefined && secretAccessKey !== undefined
      ? { credentials: { accessKeyId, secretAccessKey } }
      : {}),
  });
}
