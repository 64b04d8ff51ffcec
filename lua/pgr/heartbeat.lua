-- pgr.heartbeat: work that must go on while a long call runs in this single-threaded process (the
-- cluster lease's renewal), done at the ticks the long calls already have — each second of a
-- Kubernetes wait or a site command, each progress report of a restore, each step of a run.
--
--   local remove = heartbeat.add(fn)   fn() is called on every beat; it keeps its own pace (it is
--                                      called often: it must return at once when nothing is due)
--   heartbeat.beat()                   calls every fn; an error one raises goes to the caller (a
--                                      lease that was lost stops the wait or step that beat)
local M = {}

local beats = {}
local busy = false

function M.add(fn)
  assert(type(fn) == "function", "heartbeat.add(fn)")
  beats[#beats + 1] = fn
  return function()
    for i, f in ipairs(beats) do
      if f == fn then table.remove(beats, i) return end
    end
  end
end

function M.beat()
  -- a beat's own requests may tick again (a renewal that waits): one beat at a time
  if busy or #beats == 0 then return end
  busy = true
  local list = table.move(beats, 1, #beats, 1, {})
  for _, fn in ipairs(list) do
    local ok, err = pcall(fn)
    if not ok then
      busy = false
      error(err, 0)
    end
  end
  busy = false
end

-- How many beats are registered (for tests and for the runbook's checks).
function M.count() return #beats end

return M
