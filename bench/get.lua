-- An unauthenticated GET of one path (/healthz, the bare actix-web hello server).
-- Usage: wrk -s get.lua URL -- REQUESTS_FILE   (run from this folder)
local common = require "common"
local request_text

setup = common.setup

function init(args)
  request_text = common.load(args[1])[1]
end

function request()
  return request_text
end

done = common.done
