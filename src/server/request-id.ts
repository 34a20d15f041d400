import { randomBytes } from "node:crypto";

const SAFE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Request ids: a caller's `X-Request-Id` if it is safe to log, else replica id + counter (cheap, unique). */
export class RequestIds {
  readonly replica: string;
  #n = 0;

  constructor(replica?: string) {
    this.replica = replica ?? randomBytes(4).toString("hex");
  }

  next(incoming: string | string[] | undefined): string {
    if (typeof incoming === "string" && SAFE.test(incoming)) return incoming;
    this.#n = (this.#n + 1) % Number.MAX_SAFE_INTEGER;
    return `${this.replica}-${this.#n.toString(36)}`;
  }
}
