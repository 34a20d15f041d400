import { hash } from "node:crypto";

/** No verified token is trusted from memory for longer than this, whatever its `exp`. */
export const TOKEN_CACHE_MAX_AGE_MS = 5 * 60 * 1000;

interface Entry<T> {
  value: T;
  /** Epoch milliseconds after which the entry must not be used. */
  until: number;
}

/**
 * A bounded map from a token's SHA-256 to its verification result. Keys are hashes so that the
 * cache never holds bearer tokens in memory; eviction is by insertion order (a Map iterates
 * oldest first), which keeps both hit and insert O(1) without LRU bookkeeping on the hot path.
 * Only successes are stored: a failure must be re-examined every time (a key may have rotated in).
 */
export class TokenCache<T> {
  readonly #entries = new Map<string, Entry<T>>();
  readonly #maxEntries: number;

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  get enabled(): boolean {
    return this.#maxEntries > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cache key of a token. */
  static keyOf(token: string): string {
    // The one-shot form: no Hash object per request.
    return hash("sha256", token, "base64url");
  }

  /** The cached value, unless it has expired at `now` (epoch ms); expired entries are dropped. */
  get(key: string, now: number): T | undefined {
    return this.entry(key, now)?.value;
  }

  /** {@link get} with the time (epoch ms) until which the value may be used. */
  entry(key: string, now: number): { readonly value: T; readonly until: number } | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (now >= entry.until) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Stores `value` until `expiresAtMs`, capped at {@link TOKEN_CACHE_MAX_AGE_MS} from `now`. */
  set(key: string, value: T, expiresAtMs: number, now: number): void {
    if (this.#maxEntries <= 0) return;
    const until = Math.min(expiresAtMs, now + TOKEN_CACHE_MAX_AGE_MS);
    if (until <= now) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, until });
  }
}
