-- Shared by the scripts: random live session ids and events. Arguments after `--`:
-- max_id events deleted_every (the seed deletes every deleted_every-th id).
local common = {}

function common.init(args)
  common.max_id = tonumber(args[1])
  common.events = tonumber(args[2])
  common.deleted_every = tonumber(args[3])
  -- A different sequence in every thread and run.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function common.live_id()
  local id = math.random(common.max_id)
  if id % common.deleted_every == 0 then
    id = id - 1
  end
  return id
end

function common.event_id()
  return math.random(common.events)
end

function common.with_wrk_headers(headers)
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  return headers
end

return common
