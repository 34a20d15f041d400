// The load generator, in its own process: autocannon against one target, result sent to the parent.
import autocannon from "autocannon";

process.once("message", async (job) => {
  const run = (duration) =>
    autocannon({
      url: job.url,
      method: "POST",
      connections: job.connections,
      duration,
      pipelining: 1,
      requests: job.requests,
    });
  if (job.warmup > 0) await run(job.warmup);
  const r = await run(job.duration);
  process.send({
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    total: r.requests.total,
    statusCodes: r.statusCodeStats,
  });
});
