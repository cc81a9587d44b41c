-- PATCH /sessions/{id} of a random live session with a merge patch that really changes it.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")
local levels = { "Beginner", "Intermediate", "Advanced", "Expert" }
local headers

function init(args)
  common.init(args)
  -- A headers table of the script's own replaces wrk's (-H): copy those in.
  headers = common.with_wrk_headers({ ["Content-Type"] = "application/merge-patch+json" })
end

function request()
  -- A random revision number: the subtitle differs from the stored one (all but never equal).
  local body = string.format(
    '{"subtitle": "Revision %d", "level": "%s"}',
    math.random(1000000000),
    levels[math.random(#levels)]
  )
  return wrk.format("PATCH", "/sessions/" .. common.live_id(), headers, body)
end
