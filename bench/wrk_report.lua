-- wrk script for bench/compare.py: a machine-readable summary at the end of the run,
-- with the latency at many percentiles (enough to draw the distribution).
-- WRK_BODY set: every request is a POST with that body (fork mode: `cat` echoes it).
local body = os.getenv("WRK_BODY")
if body then
  wrk.method = "POST"
  wrk.body = body
end

local percentiles = {
  1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 97.5, 98,
  98.5, 99, 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999
}

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("REPORT requests %d\n", summary.requests))
  io.write(string.format("REPORT duration_us %d\n", summary.duration))
  io.write(string.format("REPORT errors %d %d %d %d %d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("REPORT latency_us %d %d %.2f %.2f\n",
    latency.min, latency.max, latency.mean, latency.stdev))
  for _, p in ipairs(percentiles) do
    io.write(string.format("REPORT p %g %d\n", p, latency:percentile(p)))
  end
end
