-- GET /chat/v2/Services/{IS}/Users/{identity} with HTTP Basic auth (the account's SID and
-- auth token), rotating over the users listed in the requests file.
-- Usage: wrk -s user-fetch.lua URL -- REQUESTS_FILE THREADS  (run from this folder)
local common = require "common"
local requests, next_index

setup = common.setup

function init(args)
  requests = common.load(args[1])
  local threads = tonumber(args[2]) or 1
  next_index = (thread_index or 0) * math.floor(#requests / threads)
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

done = common.done
