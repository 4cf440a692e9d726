-- The wrk script of bench/edge_bench.c: the user's bearer token comes from the environment
-- (never a command line, which other local users can read), and the figures come back as one
-- line that edge_bench parses (latency in microseconds, as wrk records it).
local token = os.getenv("EDGE_BENCH_TOKEN")
if token == nil or token == "" then
  error("EDGE_BENCH_TOKEN is not set")
end
wrk.headers["Authorization"] = "Bearer " .. token

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("edge_bench_wrk requests=%d duration_us=%d p50_us=%d p99_us=%d " ..
                         "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d " ..
                         "errors_timeout=%d\n",
                         summary.requests, summary.duration,
                         math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
                         e.connect, e.read, e.write, e.status, e.timeout))
end
