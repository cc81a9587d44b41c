-- GET /sessions?event_id=…&limit=50: the first page of a random event.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

function init(args)
  common.init(args)
end

function request()
  return wrk.format("GET", "/sessions?event_id=" .. common.event_id() .. "&limit=50")
end
