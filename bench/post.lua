-- wrk script for the listener benchmark: POSTs one JSON body and prints a machine-readable summary.
--   BENCH_BODY      file holding the request body (default bench/data/order.json)
--   BENCH_HEADERS   extra request headers, "Name: value" pairs separated by ";"
--   BENCH_DELAY_MS  mean pause of each connection before each request (paced runs; 0 = closed loop)
local path = os.getenv("BENCH_BODY") or "bench/data/order.json"
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
for pair in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^;]+") do
    local name, value = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
end

-- The pause is drawn from an exponential distribution around the mean, so connections do not fall
-- into step and arrive in bursts (an approximation of independent clients).
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
    math.randomseed(os.time())
    function delay()
        return math.floor(-math.log(1 - math.random()) * pause + 0.5)
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max))
end
