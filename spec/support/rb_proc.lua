-- spec/support/rb_proc.lua: a synthetic procedure for spec/runbook_spec.lua — five steps that record
-- into files, steered by environment variables (kill -9 itself, fail, block, handle a secret).
--   RB_DIR      directory for its files: record (one line per step run), effects/<n> (the "writes")
--   RB_KILL_IN  step number that kills its own process (SIGKILL) as it starts, before any work
--   RB_KILL_AFTER  step number that kills itself after its work, before the step is journaled done
--   RB_FAIL     step number that fails (nil, err); RB_FAIL_ONCE=1: only if effects/fail-seen is absent
--   RB_BLOCK    step number that waits until $RB_DIR/unblock exists (writes $RB_DIR/blocked first)
--   RB_SECRET   a password the steps handle: registered with ctx:secret, printed, saved, errored on
--   RB_WAY_BACK a backup name step 2 records as the run's way back (state way_back = --backup NAME)
--   RB_MARK     how plan marks step 2
local runbook = require "pgr.runbook"
local sys = require "pgr.sys"

local dir = assert(os.getenv("RB_DIR"), "RB_DIR")
local function num(name) return tonumber(os.getenv(name) or "") end

local function record(line)
  assert(sys.append_line(dir .. "/record", line))
end

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function step(n, name, extra)
  local s = {
    name = name,
    touches = n > 1 and ("file effects/" .. n) or "nothing (a check)",
    run = function(ctx)
      if num("RB_KILL_IN") == n then os.execute("kill -9 " .. sys.getpid()) sys.sleep(10) end
      if num("RB_BLOCK") == n then
        assert(sys.write_file(dir .. "/blocked", tostring(sys.getpid())))
        while not exists(dir .. "/unblock") do sys.sleep(0.05) end
      end
      record((ctx.dry_run and "dry " or "") .. n)
      -- step 1 is a check: checks read, they never write
      if n > 1 then
        ctx:write("create effects/" .. n, function()
          assert(sys.write_file(dir .. "/effects/" .. n, "done"))
        end)
      end
      if extra then
        local ok, err = extra(ctx)
        if not ok then return nil, err end
      end
      if num("RB_KILL_AFTER") == n then os.execute("kill -9 " .. sys.getpid()) sys.sleep(10) end
      if num("RB_FAIL") == n and not (os.getenv("RB_FAIL_ONCE") and exists(dir .. "/fail-seen")) then
        sys.write_file(dir .. "/fail-seen", "1")
        return nil, require("pgr.errors").new("synthetic", "step " .. n .. " failed on purpose")
      end
    end,
  }
  return s
end

sys.mkdir(dir .. "/effects")

local steps = {
  step(1, "Check the synthetic backup is complete", function(ctx)
    local secret = os.getenv("RB_SECRET")
    if secret then
      ctx:secret(secret)
      ctx:say("the password is " .. secret)
      ctx:save("secret.json", { password = secret })
    end
    return true
  end),
  step(2, "Record the original replica count", function(ctx)
    ctx:remember("replicas", tonumber(os.getenv("RB_REPLICAS") or "3"))
    if os.getenv("RB_WAY_BACK") then ctx:set("way_back", { "--backup", os.getenv("RB_WAY_BACK") }) end
    return true
  end),
  step(3, "Delete the synthetic cluster", function(ctx)
    ctx:save("original.json", { kind = "postgresql", spec = { numberOfInstances = 3 } })
    return true
  end),
  step(4, "Stream the synthetic dump", function(ctx)
    local secret = os.getenv("RB_SECRET")
    if secret and os.getenv("RB_SECRET_ERROR") then
      return nil, "authentication failed for password " .. secret
    end
    return true
  end),
  step(5, "Scale back to the recorded replica count", function(ctx)
    assert(sys.write_file(dir .. "/replicas", tostring(ctx.state.replicas)))
    assert(ctx.saved["original.json"].spec.numberOfInstances == 3)
    return true
  end),
}
steps[1].preflight = true
steps[3].destructive = true
steps[2].mark = os.getenv("RB_MARK")
steps[3].touches = "the synthetic cluster (deleted, saved first)"

return runbook.procedure {
  name = "synthetic",
  title = "A synthetic procedure for the runbook specs",
  cluster = os.getenv("RB_CLUSTER") or "test/synthetic-postgres",
  steps = steps,
}
