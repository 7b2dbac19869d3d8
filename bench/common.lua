-- Shared by the wrk scripts of reachd-bench (loaded with require "common": wrk runs with this
-- folder as its working directory).
--
-- Requests come from a file the bench writes, one per line: "METHOD PATH [AUTHORIZATION]".
-- They are formatted once in init; each thread starts its rotation at its own offset so that
-- the threads do not send the same request at the same moment.
local M = {}

local threads = 0

-- Numbers the threads (runs in the main state, once per thread).
function M.setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function M.load(file)
  local list = {}
  for line in io.lines(file) do
    local method, path, auth = line:match("^(%S+) (%S+) ?(.*)$")
    if method then
      local headers = {}
      if auth ~= "" then headers["Authorization"] = auth end
      if method == "POST" then headers["Content-Length"] = "0" end
      list[#list + 1] = wrk.format(method, path, headers)
    end
  end
  assert(#list > 0, "no requests in " .. file)
  return list
end

-- One machine-readable line: reachd-bench parses it (latencies in microseconds).
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-result requests=%d errors=%d status_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end

return M
