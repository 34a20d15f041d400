import { afterEach, describe, expect, it, vi } from "vitest";
import type { TenantryApp } from "../../src/server/app.js";
import { installSignalHandlers } from "../../src/server/signals.js";

/** A stand-in app whose close() takes `closeMs`, and the SIGTERM handler installSignalHandlers added. */
function setUp(toolTimeoutMs: number, closeMs: number, timeoutMs?: number) {
  const log = { info: vi.fn(), error: vi.fn() };
  const app = {
    log,
    config: { server: { tool_timeout_ms: toolTimeoutMs } },
    close: () => new Promise<void>((resolve) => setTimeout(resolve, closeMs)),
  } as unknown as TenantryApp;
  const onExit = vi.fn();
  const on = vi.spyOn(process, "on");
  installSignalHandlers(app, onExit, timeoutMs === undefined ? {} : { timeoutMs });
  const handlers = on.mock.calls.filter(([event]) => event === "SIGTERM" || event === "SIGINT");
  on.mockRestore();
  for (const [event, handler] of handlers) process.off(event as string, handler as () => void);
  const sigterm = handlers.find(([event]) => event === "SIGTERM")?.[1] as (s: NodeJS.Signals) => void;
  return { sigterm, onExit };
}

describe("installSignalHandlers", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("by default waits as long as a tool call may run, so calls in flight finish and are audited", async () => {
    vi.useFakeTimers();
    // tool_timeout_ms 60 s (the default): a call started just before SIGTERM may run ~60 s.
    const { sigterm, onExit } = setUp(60_000, 55_000);
    sigterm("SIGTERM");
    await vi.advanceTimersByTimeAsync(54_000);
    expect(onExit).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(onExit).toHaveBeenCalledWith(0);
  });

  it("still gives up, exiting 1, when the drain takes longer than that", async () => {
    vi.useFakeTimers();
    const { sigterm, onExit } = setUp(1_000, 3_600_000);
    sigterm("SIGTERM");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(onExit).toHaveBeenCalledWith(1);
  });

  it("an explicit timeoutMs wins; a second signal exits at once", async () => {
    vi.useFakeTimers();
    const { sigterm, onExit } = setUp(60_000, 10_000, 5_000);
    sigterm("SIGTERM");
    sigterm("SIGTERM");
    expect(onExit).toHaveBeenCalledWith(143); // 128 + SIGTERM's 15
    await vi.advanceTimersByTimeAsync(5_000);
    expect(onExit).toHaveBeenLastCalledWith(1);
  });

  it("a second SIGINT (Ctrl-C twice) exits 130", () => {
    vi.useFakeTimers();
    const { sigterm: stop, onExit } = setUp(60_000, 10_000);
    stop("SIGINT");
    stop("SIGINT");
    expect(onExit).toHaveBeenCalledWith(130);
  });
});
