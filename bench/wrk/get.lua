-- GET /sessions/{id} of a random live session.
package.path = debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

function init(args)
  common.init(args)
end

function request()
  return wrk.format("GET", "/sessions/" .. common.live_id())
end
