import { randomUUID } from "node:crypto";
import type { RegistryStore } from "../tenancy/registry-store.js";
import type { TenantRecord, TenantUpdate } from "../tenancy/tenant.js";

/**
 * A tenant held by a long operation (a restore, a purge) for as long as it runs. Replicas and the CLI share
 * only the database, so the hold is the registry row itself: the holder rewrites it every
 * tenth of the lease, which moves `updated_at` on by the database's clock, and another operation
 * may take the tenant over only once the row has gone unwritten for a whole lease (see
 * `RegistryStore.updateIf`'s `idleMs`), which only a holder that died lets happen.
 *
 * Each renewal is a compare-and-set on the version the holder wrote last, so it bumps the version
 * as any write does: the holder's own later writes must use the record {@link stop} returns, and
 * a takeover or any other write shows up as a renewal that fails ({@link lost}).
 *
 * A renewal whose reply is lost (the connection died after the database committed it) would
 * otherwise look like another's write at the next renewal. Each renewal therefore writes a nonce
 * of its own (`lease_nonce`); after one that failed, the holder reads the row before going on: its
 * nonce there means the renewal landed and the row is the holder's, the holder's last version
 * means it did not, anything else is another write.
 *
 * A holder cut off from the database cannot learn of a takeover, so it also counts its hold as
 * lost once no renewal has succeeded for a whole lease less one renewal period, timed by this
 * process's monotonic clock from when that renewal was sent: the database cannot have seen the
 * row unwritten for longer than that, so no takeover can have happened before the holder knows.
 */
/** Thrown by {@link RegistryLease.assertHeld} once the hold is gone, or may be. */
export class HoldLost extends Error {
  constructor() {
    super("the operation's hold on its tenant is gone");
  }
}

export class RegistryLease {
  readonly #store: RegistryStore;
  readonly #renewal: TenantUpdate;
  #record: TenantRecord;
  #timer: ReturnType<typeof setInterval> | undefined;
  #renewing: Promise<void> | undefined;
  #lost = false;
  /** A renewal that failed without an answer, which may have landed: its nonce and when it was sent. */
  #unsure: { nonce: string; sentAt: number } | undefined;
  /** When the last write of the hold that succeeded was sent (`performance.now()`). */
  #sentAt: number;
  /** How long after {@link #sentAt} the hold counts as lost without a successful renewal. */
  readonly #expiresAfterMs: number;

  /**
   * Starts renewing `record` (written by the holder, that write sent at `sentAt` by
   * `performance.now()`) with `renewal` every tenth of `leaseMs`; others may take it over once it
   * has gone unwritten for `leaseMs`.
   */
  constructor(
    store: RegistryStore,
    record: TenantRecord,
    renewal: TenantUpdate,
    leaseMs: number,
    sentAt: number,
  ) {
    const renewMs = Math.max(1, Math.floor(leaseMs / 10));
    this.#store = store;
    this.#record = record;
    this.#renewal = renewal;
    this.#sentAt = sentAt;
    this.#expiresAfterMs = Math.max(0, leaseMs - renewMs);
    this.#timer = setInterval(() => {
      // One renewal at a time: a slow one is not queued behind, the next tick tries again.
      this.#renewing ??= this.#renew().finally(() => {
        this.#renewing = undefined;
      });
    }, renewMs);
    this.#timer.unref();
  }

  /**
   * The hold is gone, or may be: another write changed the tenant since the holder's last one, or
   * no renewal has succeeded for long enough that another operation could have taken it over.
   */
  get lost(): boolean {
    return this.#lost || performance.now() - this.#sentAt >= this.#expiresAfterMs;
  }

  /** Throws {@link HoldLost} when the hold is {@link lost}: before each write made under it. */
  assertHeld(): void {
    if (this.lost) throw new HoldLost();
  }

  async #renew(): Promise<void> {
    if (this.#timer === undefined) return;
    if (!(await this.#settle()) || this.#timer === undefined) return;
    const sentAt = performance.now();
    const nonce = randomUUID();
    try {
      const renewed = await this.#store.updateIf(
        this.#record.id,
        { version: this.#record.version, status: this.#record.status },
        { ...this.#renewal, leaseNonce: nonce },
      );
      if (renewed) {
        this.#record = renewed;
        this.#sentAt = sentAt;
      } else {
        this.#lose();
      }
    } catch {
      // No answer: it may have landed. The lease lasts several renewals; the next one settles it.
      this.#unsure = { nonce, sentAt };
    }
  }

  /**
   * After a renewal that got no answer, reads the row to learn whether it landed: `false` when
   * the hold is lost, or when the row cannot be read yet (the next renewal tries again).
   */
  async #settle(): Promise<boolean> {
    const unsure = this.#unsure;
    if (unsure === undefined) return !this.#lost;
    let row: TenantRecord | undefined;
    try {
      row = await this.#store.get(this.#record.id);
    } catch {
      return false;
    }
    this.#unsure = undefined;
    const v = this.#record.version;
    if (row?.leaseNonce === unsure.nonce && row.version === v + 1 && row.status === this.#record.status) {
      this.#record = row; // it landed, and nothing has written the row since
      this.#sentAt = unsure.sentAt;
    } else if (row?.version !== v) {
      this.#lose(); // another write, whether or not ours landed before it
    }
    return !this.#lost;
  }

  #lose(): void {
    this.#lost = true;
    this.#clear();
  }

  #clear(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Stops renewing, once a renewal in flight has ended; returns the record as the holder's last write left it. */
  async stop(): Promise<TenantRecord> {
    this.#clear();
    await this.#renewing;
    await this.#settle(); // a last renewal without an answer may have moved the row on
    return this.#record;
  }
}
