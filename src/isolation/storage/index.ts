export { createObjectStore, type StorageConfig } from "./create-object-store.js";
export { FsObjectStore } from "./fs-store.js";
export {
  compareStorageKeys,
  MAX_STORAGE_KEY_BYTES,
  type StorageKeyOptions,
  validateStorageKey,
  validateStoragePrefix,
} from "./keys.js";
export type {
  ObjectGetOptions,
  ObjectListOptions,
  ObjectListPage,
  ObjectPutStreamOptions,
  ObjectStore,
} from "./object-store.js";
export { S3ObjectStore, type S3ObjectStoreOptions } from "./s3-store.js";
export {
  type StorageLogger,
  type TenantListOptions,
  type TenantListResult,
  TenantStorage,
  type TenantStorageOptions,
} from "./tenant-storage.js";
