// The load generator, in its own process: autocannon against one target, result sent to the parent.
// `requests` lists the clients: connection i sends requests[i % requests.length] again and again,
// as an MCP client holds one token for its connection (the same for every server measured).
// `rate` (requests/s over all connections) turns a saturating run into a fixed-load one.
// Latencies are taken from each response (µs resolution), not autocannon's millisecond histogram.
import autocannon from "autocannon";

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

process.once("message", async (job) => {
  let next = 0;
  const run = (duration, record) =>
    new Promise((resolve, reject) => {
      const latencies = [];
      const instance = autocannon(
        {
          url: job.url,
          method: "POST",
          connections: job.connections,
          duration,
          pipelining: 1,
          ...(job.rate ? { overallRate: job.rate } : {}),
          ...job.requests[0],
          // setRequests, not setRequest: the latter changes only the client's next request, after
          // which autocannon goes back to its default one (every client would send requests[0]).
          setupClient: (client) => client.setRequests([{ ...job.requests[next++ % job.requests.length] }]),
        },
        (error, result) => (error ? reject(error) : resolve({ result, latencies })),
      );
      if (record) instance.on("response", (_client, _status, _bytes, ms) => latencies.push(ms));
    });
  if (job.warmup > 0) await run(job.warmup, false);
  process.send("measuring"); // the parent samples CPU time from here
  const started = Date.now();
  const { result: r, latencies } = await run(job.duration, true);
  const ended = Date.now();
  latencies.sort((x, y) => x - y);
  process.send({
    rps: r.requests.total / job.duration,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    total: r.requests.total,
    statusCodes: r.statusCodeStats,
    // When the counted run began and ended (epoch ms): several generators started one after the
    // other span more than `duration` together.
    started,
    ended,
  });
});
