-- Specs of pgr.runbook through `pgr plan` and `pgr run` on a synthetic procedure whose steps record
-- into files: plan, dry run, consent, journal and file modes, redaction, kill -9 + --resume, locks.
local sh = require "support.rb_shell"
local sys = require "pgr.sys"
local json = require "pgr.json"

local PROC = sh.PROC

local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do if x == v then n = n + 1 end end
  return n
end

local function events_of(journal, name)
  local t = {}
  for _, ev in ipairs(journal) do if ev.event == name then t[#t + 1] = ev end end
  return t
end

describe("pgr plan", function()
  local dir
  before_each(function() dir = sh.tmpdir() end)
  after_each(function() sh.rmrf(dir) end)

  it("prints the numbered steps, marks checks and destructive steps, touches nothing", function()
    local out, err, rc = sh.pgr({ "plan", PROC }, { RB_DIR = dir, PGR_STATE_DIR = dir .. "/state" })
    assert.equals(0, rc, err)
    assert.matches("^synthetic — A synthetic procedure for the runbook specs %(test/synthetic%-postgres%), 5 steps\n", out)
    assert.matches("\n1%. Check the synthetic backup is complete  %[check%]\n   touches: nothing %(a check%)\n", out)
    assert.matches("\n3%. Delete the synthetic cluster  %[destructive%]\n   touches: the synthetic cluster", out)
    assert.matches("\n5%. Scale back to the recorded replica count\n", out)
    assert.is_nil(sh.read(dir .. "/record"))
    assert.same({}, sys.listdir(dir .. "/effects"))
    assert.is_nil(sys.stat(dir .. "/state"))
  end)

  it("marks a step its own way when it says how (a backup)", function()
    local out, err, rc = sh.pgr({ "plan", PROC }, { RB_DIR = dir, RB_MARK = "backup" })
    assert.equals(0, rc, err)
    assert.matches("\n2%. Record the original replica count  %[backup%]\n", out)
  end)

  it("emits one JSON event per step with --json", function()
    local out, _, rc = sh.pgr({ "plan", PROC, "--json" }, { RB_DIR = dir })
    assert.equals(0, rc)
    local evs = {}
    for l in out:gmatch("[^\n]+") do evs[#evs + 1] = assert(json.decode(l)) end
    assert.equals(6, #evs)
    assert.equals("plan", evs[1].event)
    assert.equals("plan_step", evs[4].event)
    assert.equals("Delete the synthetic cluster", evs[4].name)
    assert.is_true(evs[4].destructive)
    assert.is_false(evs[3].destructive)
  end)

  it("rejects a file that is not a procedure, and a missing one", function()
    sh.write(dir .. "/x.lua", "return 42\n")
    local _, err, rc = sh.pgr({ "plan", dir .. "/x.lua" })
    assert.equals(1, rc)
    assert.matches("does not return a procedure", err)
    _, err, rc = sh.pgr({ "plan", dir .. "/none.lua" })
    assert.equals(2, rc)
    assert.matches("no procedure file", err)
  end)
end)

describe("pgr run", function()
  local dir, state, env
  before_each(function()
    dir = sh.tmpdir()
    state = dir .. "/state"
    env = { RB_DIR = dir }
  end)
  after_each(function() sh.rmrf(dir) end)

  local function run(extra, more_env, stdin)
    local args = { "run", PROC, "--state-dir", state }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(more_env or {}) do e[k] = v end
    return sh.pgr(args, e, stdin)
  end

  it("--dry-run runs the steps' reads, prints each write, makes none", function()
    local out, err, rc = run({ "--dry-run" })
    assert.equals(0, rc, err)
    assert.same({}, sys.listdir(dir .. "/effects"))
    assert.same({ "dry 1", "dry 2", "dry 3", "dry 4", "dry 5" }, sh.lines(dir .. "/record"))
    for i = 2, 5 do assert.matches("would create effects/" .. i, out, 1, true) end
    assert.matches("4 changes would be made; nothing was changed", out)
    -- no journal, no lock: a dry run leaves nothing behind
    assert.is_nil(sys.stat(state))
  end)

  it("refuses destructive steps without a terminal and without --yes, before any step", function()
    local _, err, rc = run({})
    assert.equals(2, rc)
    assert.matches("no terminal to ask on: pass %-%-yes", err)
    assert.is_nil(sh.read(dir .. "/record"))
    assert.same({}, sh.run_dirs(state))
  end)

  it("asks once on a terminal before the first destructive step; 'n' stops there", function()
    local cmd = ("%s run %s --state-dir %s"):format(sh.PGR, PROC, state)
    local out, _, rc = sh.run("script -qec " .. sh.quote(cmd) .. " /dev/null", env, "n\n")
    assert.equals(1, rc)
    assert.matches("the destructive steps come next:", out)
    assert.matches("3%. Delete the synthetic cluster", out)
    assert.matches("not confirmed", out)
    assert.same({ "1", "2" }, sh.lines(dir .. "/record"))
    local j = sh.journal(sh.run_dirs(state)[1])
    assert.equals("declined", j[#j].status)
    -- 'y' runs everything, asking only once
    out, _, rc = sh.run("script -qec " .. sh.quote(cmd .. " --new") .. " /dev/null", env, "y\n")
    assert.equals(0, rc, out)
    local _, asked = out:gsub("Continue%?", "")
    assert.equals(1, asked)
    assert.equals(4, #sys.listdir(dir .. "/effects"))
  end)

  it("refuses a state directory, runs/ or locks/ that others may enter, that is not ours, or a link", function()
    local function refused(why)
      local _, err, rc = run({ "--yes" })
      assert.equals(1, rc)
      assert.matches("cannot use the state directory " .. state .. ": ", err, 1, true)
      assert.matches(why, err, 1, true)
      assert.is_nil(sh.read(dir .. "/record"), "a step ran")
      assert.same({}, sys.listdir(state .. "/runs"))
    end
    assert(sys.mkdir(state .. "/runs"))
    assert(sys.mkdir(state .. "/locks"))
    os.execute("chmod 0777 " .. state .. "/runs")
    refused(state .. "/runs is open to others (mode 0777): chmod 0700 " .. state .. "/runs")
    os.execute("chmod 0700 " .. state .. "/runs; chmod 0755 " .. state)
    refused(state .. " is open to others (mode 0755)")
    os.execute("chmod 0700 " .. state .. "; chmod 0770 " .. state .. "/locks")
    refused(state .. "/locks is open to its group (mode 0770)")
    os.execute("chmod 0700 " .. state .. "/locks")
    -- a link in place of locks/, to a directory someone else controls
    assert(sys.mkdir(dir .. "/elsewhere"))
    os.execute(("rmdir %s/locks && ln -s %s/elsewhere %s/locks"):format(state, dir, state))
    refused(state .. "/locks is a symbolic link")
    assert.same({}, sys.listdir(dir .. "/elsewhere"))
    os.execute(("rm %s/locks && mkdir -m 0700 %s/locks"):format(state, state))
    if sh.run("id -u") == "0\n" then
      os.execute("chown 65534 " .. state .. "/runs")
      refused(state .. "/runs is owned by uid 65534, not by you")
      os.execute("chown 0 " .. state .. "/runs")
    end
    local _, err, rc = run({ "--yes" })
    assert.equals(0, rc, err)
  end)

  it("prints the way back a step recorded: with a failure (after --new) and as the last line", function()
    local out, _, rc = run({ "--yes" }, { RB_WAY_BACK = "pgr/synthetic-2025-01-02T03:04:05", RB_FAIL = "4" })
    assert.equals(1, rc)
    assert.matches("continue with: pgr run " .. PROC:gsub("%p", "%%%0") .. " %-%-state%-dir ", out)
    assert.matches("or go back to the data as it was before this run: pgr run " .. PROC:gsub("%p", "%%%0")
      .. " %-%-state%-dir " .. state:gsub("%p", "%%%0") .. " %-%-new %-%-backup pgr/synthetic%-2025%-01%-02T03:04:05\n", out)
    out, _, rc = run({ "--yes", "--resume", "--json" }, { RB_WAY_BACK = "pgr/synthetic-2025-01-02T03:04:05" })
    assert.equals(0, rc)
    local last
    for l in out:gmatch("[^\n]+") do last = json.decode(l) or last end
    assert.equals("run_finished", last.event)
    assert.equals("pgr run " .. PROC .. " --state-dir " .. state .. " --backup pgr/synthetic-2025-01-02T03:04:05", last.way_back)
    out, _, rc = run({ "--yes", "--new" }, { RB_WAY_BACK = "pgr/x y" })
    assert.equals(0, rc)
    assert.matches("\nthe data as it was before this run can be restored with: pgr run .* %-%-backup 'pgr/x y'\n$", out)
  end)

  it("journals every step with times; the run directory is 0700, its files 0600", function()
    local out, err, rc = run({ "--yes" })
    assert.equals(0, rc, err)
    assert.matches("%[5/5%] ok   Scale back to the recorded replica count", out)
    assert.matches("synthetic: all 5 steps done in", out)
    local runs = sh.run_dirs(state)
    assert.equals(1, #runs)
    local rd = runs[1]
    assert.matches("/runs/test_synthetic%-postgres%-%d+T%d+%.%d%d%d%-%d+$", rd)
    assert.equals(448, sys.stat(rd).mode)
    assert.equals(448, sys.stat(rd .. "/saved").mode)
    for _, f in ipairs({ "journal.jsonl", "log", "state.json", "saved/original.json" }) do
      assert.equals(384, sys.stat(rd .. "/" .. f).mode, f)
    end
    local j = sh.journal(rd)
    assert.equals("run_started", j[1].event)
    assert.equals("synthetic", j[1].procedure)
    assert.equals(5, #j[1].steps)
    local started, done = events_of(j, "step_started"), events_of(j, "step_done")
    assert.equals(5, #started)
    assert.equals(5, #done)
    for i = 1, 5 do
      assert.equals(i, done[i].step)
      assert.is_number(done[i].seconds)
      assert.is_true(done[i].time >= started[i].time)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", done[i].at)
    end
    assert.equals(4, #events_of(j, "write"))
    assert.equals("run_finished", j[#j].event)
    assert.equals("ok", j[#j].status)
    assert.equals(3, json.decode(sh.read(rd .. "/state.json")).replicas)
    assert.matches("%[3/5%] ok   Delete the synthetic cluster", sh.read(rd .. "/log"))
    assert.equals("3", sh.read(dir .. "/replicas"))
  end)

  -- (a secret with " or \ is escaped in JSON: redaction must not look only for its raw bytes)
  for _, secret in ipairs { "s3cr3t-Pa55/w0rd", [[q"uo\te-Pa55\\w0rd"]] } do
    it("never shows a registered secret: not in output, journal, log or state; only in saved files: " .. secret, function()
      local escaped = json.encode(secret):sub(2, -2)
      local out, err, rc = run({ "--yes" }, { RB_SECRET = secret, RB_SECRET_ERROR = "1" })
      assert.equals(1, rc)
      assert.matches("the password is ‹redacted›", out, 1, true)
      assert.matches("authentication failed for password ‹redacted›", out, 1, true)
      assert.is_nil(out:find(secret, 1, true))
      assert.is_nil(err:find(secret, 1, true))
      local rd = sh.run_dirs(state)[1]
      for _, f in ipairs(sh.files(rd)) do
        local body = sh.read(f)
        if f:match("/saved/") then
          assert.equals(384, sys.stat(f).mode)
        else
          assert.is_nil(body:find(secret, 1, true), f .. " holds the secret")
          assert.is_nil(body:find(escaped, 1, true), f .. " holds the secret, JSON-escaped")
        end
      end
      assert.equals(secret, json.decode(sh.read(rd .. "/saved/secret.json")).password)
      local failed = events_of(sh.journal(rd), "step_failed")
      assert.equals(1, #failed)
      assert.equals("authentication failed for password ‹redacted›", failed[1].error)
      -- and in --json events
      out, err = run({ "--yes", "--new", "--json" }, { RB_SECRET = secret, RB_SECRET_ERROR = "1" })
      assert.matches("‹redacted›", out, 1, true)
      assert.is_nil(out:find(secret, 1, true))
      assert.is_nil(out:find(escaped, 1, true))
      assert.is_nil(err:find(secret, 1, true))
    end)
  end

  it("a failed check exits 3, says nothing changed, and leaves nothing to resume", function()
    local out, _, rc = run({ "--yes" }, { RB_FAIL = "1" })
    assert.equals(3, rc)
    assert.matches("preflight failed: nothing was changed", out)
    local j = sh.journal(sh.run_dirs(state)[1])
    assert.equals("preflight_failed", j[#j].status)
    local _, err
    _, err, rc = run({ "--yes", "--resume" })
    assert.equals(2, rc)
    assert.matches("no unfinished run of synthetic", err)
  end)

  it("a failed step exits 1 with the exact --resume command, which finishes the run", function()
    local out, _, rc = run({ "--yes" }, { RB_FAIL = "4", RB_FAIL_ONCE = "1" })
    assert.equals(1, rc)
    local hint = ("pgr run %s --state-dir %s --resume"):format(PROC, state)
    assert.matches(hint, out, 1, true)
    assert.matches("step 4 failed on purpose", out)
    -- a new run is refused while this one is unfinished
    local _, err
    _, err, rc = run({ "--yes" })
    assert.equals(2, rc)
    assert.matches("did not finish", err)
    assert.matches(hint, err, 1, true)
    out, err, rc = run({ "--yes", "--resume" }, { RB_FAIL = "4", RB_FAIL_ONCE = "1" })
    assert.equals(0, rc, err)
    assert.matches("%[3/5%] skip Delete the synthetic cluster  %(done in an earlier run%)", out)
    assert.same({ "1", "2", "3", "4", "4", "5" }, sh.lines(dir .. "/record"))
    assert.equals(1, #sh.run_dirs(state))
  end)

  it("--new closes the unfinished run as abandoned, so --resume never goes back to it", function()
    local _, _, rc = run({ "--yes" }, { RB_FAIL = "4" })
    assert.equals(1, rc)
    local out, err
    out, err, rc = run({ "--yes", "--new" })
    assert.equals(0, rc, err)
    assert.matches("closed as abandoned", err)
    local dirs = sh.run_dirs(state)
    assert.equals(2, #dirs)
    local first = sh.journal(dirs[1])
    assert.equals("abandoned", first[#first].status)
    _, err, rc = run({ "--yes", "--resume" })
    assert.equals(2, rc)
    assert.matches("no unfinished run", err)
  end)

  it("--json writes only JSON events on stdout", function()
    local out, err, rc = run({ "--yes", "--json" })
    assert.equals(0, rc, err)
    local kinds = {}
    for l in out:gmatch("[^\n]+") do
      local ev = assert(json.decode(l), l)
      kinds[#kinds + 1] = ev.event
    end
    assert.equals("run_started", kinds[1])
    assert.equals(5, count(kinds, "step_done"))
    assert.equals("run_finished", kinds[#kinds])
    assert.matches("%[5/5%] ok", err) -- the human lines moved to stderr
  end)

  for k = 1, 5 do
    it("kill -9 as step " .. k .. " starts, then --resume runs exactly steps " .. k .. "..5", function()
      local _, _, rc = run({ "--yes" }, { RB_KILL_IN = tostring(k) })
      assert.equals(137, rc)
      local before = sh.lines(dir .. "/record")
      assert.equals(k - 1, #before)
      local rd = sh.run_dirs(state)[1]
      local j = sh.journal(rd)
      assert.equals(k - 1, #events_of(j, "step_done"))
      assert.equals(k, j[#j].step)
      assert.equals("step_started", j[#j].event)
      -- the resumed run is given another replica count: the recorded one must win
      local out, err
      out, err, rc = run({ "--yes", "--resume" }, { RB_REPLICAS = "0" })
      assert.equals(0, rc, err)
      assert.matches("stale", err)
      local after = sh.lines(dir .. "/record")
      local expected = {}
      for i = 1, 5 do expected[i] = tostring(i) end
      assert.same(expected, after)
      for i = 1, k - 1 do
        assert.matches(("%%[%d/5%%] skip"):format(i), out)
      end
      assert.equals(4, #sys.listdir(dir .. "/effects"))
      assert.equals(k <= 2 and "0" or "3", sh.read(dir .. "/replicas"))
      j = sh.journal(rd)
      assert.equals(1, #events_of(j, "run_resumed"))
      assert.equals(5, #events_of(j, "step_done"))
      assert.equals("ok", j[#j].status)
      assert.equals(1, #sh.run_dirs(state))
    end)

    it("kill -9 after step " .. k .. "'s work, before it is journaled: --resume re-runs only it", function()
      local _, _, rc = run({ "--yes" }, { RB_KILL_AFTER = tostring(k) })
      assert.equals(137, rc)
      local out, err
      out, err, rc = run({ "--yes", "--resume" }, { RB_REPLICAS = "0" })
      assert.equals(0, rc, err)
      local rec = sh.lines(dir .. "/record")
      assert.equals(6, #rec)
      for i = 1, 5 do assert.equals(i == k and 2 or 1, count(rec, tostring(i))) end
      -- ctx:remember persisted the first count even though step 2 was cut short
      assert.equals(k == 1 and "0" or "3", sh.read(dir .. "/replicas"))
    end)
  end

  describe("lock", function()
    local bg
    after_each(function()
      if bg then bg.kill("KILL") bg = nil end
    end)

    it("a second run on the same cluster is refused with the holder's pid (exit 3)", function()
      bg = sh.spawn({ "run", PROC, "--state-dir", state, "--yes" }, { RB_DIR = dir, RB_BLOCK = "2" }, dir)
      assert.truthy(sh.wait_for(function() return sh.read(dir .. "/blocked") end, 20), "first run never blocked")
      local other = sh.tmpdir()
      local _, err, rc = sh.pgr({ "run", PROC, "--state-dir", state, "--yes", "--new" }, { RB_DIR = other })
      sh.rmrf(other)
      assert.equals(3, rc)
      assert.matches(("another pgr %%(pid %d%%) is running on test/synthetic%%-postgres"):format(bg.pid), err)
      -- another cluster is not affected
      other = sh.tmpdir()
      _, err, rc = sh.pgr({ "run", PROC, "--state-dir", state, "--yes" }, { RB_DIR = other, RB_CLUSTER = "x/y" })
      sh.rmrf(other)
      assert.equals(0, rc, err)
      sh.write(dir .. "/unblock", "")
      local code = bg.wait(30)
      bg = nil
      assert.equals(0, code)
    end)

    it("a lock left by a killed run is reported as stale and the run resumes", function()
      bg = sh.spawn({ "run", PROC, "--state-dir", state, "--yes" }, { RB_DIR = dir, RB_BLOCK = "3" }, dir)
      assert.truthy(sh.wait_for(function() return sh.read(dir .. "/blocked") end, 20))
      local pid = bg.pid
      bg.kill("KILL")
      assert.equals(137, bg.wait(10))
      bg = nil
      local out, err, rc = run({ "--yes", "--resume" })
      assert.equals(0, rc, err)
      assert.matches(("the last run on test/synthetic%%-postgres %%(pid %d%%) ended without releasing its lock"):format(pid), err)
      assert.same({ "1", "2", "3", "4", "5" }, sh.lines(dir .. "/record"))
      assert.matches("%[2/5%] skip", out)
    end)

    it("SIGINT stops the run with exit 130 and the --resume command", function()
      bg = sh.spawn({ "run", PROC, "--state-dir", state, "--yes" }, { RB_DIR = dir, RB_BLOCK = "4" }, dir)
      assert.truthy(sh.wait_for(function() return sh.read(dir .. "/blocked") end, 20))
      bg.kill("INT")
      local code, out = bg.wait(20)
      bg = nil
      assert.equals(130, code)
      assert.matches("interrupted; continue with: pgr run", out)
      local j = sh.journal(sh.run_dirs(state)[1])
      assert.equals("run_interrupted", j[#j].event)
      assert.equals(1, #events_of(j, "step_interrupted"))
      local _, err, rc = run({ "--yes", "--resume" })
      assert.equals(0, rc, err)
      assert.same({ "1", "2", "3", "4", "5" }, sh.lines(dir .. "/record"))
    end)
  end)
end)
