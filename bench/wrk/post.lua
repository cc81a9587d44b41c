-- POST /sessions with a realistic body on a random event.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")
local headers

function init(args)
  common.init(args)
  -- A headers table of the script's own replaces wrk's (-H): copy those in.
  headers = common.with_wrk_headers({ ["Content-Type"] = "application/json" })
end

function request()
  local n = math.random(1000000000)
  local day = 1 + n % 28
  local body = string.format(
    '{"event_id": %d, "title": "New session %d", "subtitle": "Submitted by wrk",'
      .. ' "short_abstract": "A benchmark submission about keyset pagination and stamps.",'
      .. ' "level": "Intermediate", "language": "en",'
      .. ' "starts_at": "2027-05-%02dT10:00:00+02:00", "ends_at": "2027-05-%02dT10:45:00+02:00",'
      .. ' "track_id": %d, "slides_url": "https://slides.example.org/new/%d", "state": "pending"}',
    common.event_id(), n, day, day, 1 + n % 12, n
  )
  return wrk.format("POST", "/sessions", headers, body)
end
