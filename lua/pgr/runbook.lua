-- pgr.runbook: a procedure is an ordered list of named steps; this module plans it, dry-runs it,
-- asks once before the first destructive step, runs it with a journal, a lock and redaction, and resumes it.
--
-- runbook.procedure{name=, title=, cluster=, steps={...}, setup=fn(ctx)|nil} -> proc (validated; raises on misuse)
--   inherit = { "state key", ... }, inherit_saved = { "saved file", ... }: what a --new run takes over
--   from an unfinished run that had already changed something (its record of the world before that)
--   step = { name = "Scale spire-server to 0 and wait until its pods are gone",  -- the runbook's sentence
--            destructive = bool,      -- asks for confirmation before the first one
--            preflight = bool,        -- a check: failing here exits 3, nothing changed
--            mark = "word",           -- how plan marks it instead of [check]/[destructive] (e.g. backup)
--            touches = "text" | fn(opts) -> text,   -- what it reads or changes (plan)
--            check = fn(ctx) -> true if already done (optional idempotence probe; a read),
--            run = fn(ctx) -> nothing | note string | nil, err  (an error raised also fails the step) }
-- runbook.locate(name) -> path | nil, err       a path, or a service name (services/NAME.lua, else built in)
-- runbook.load(path) -> proc | nil, err          a procedure file returns a procedure
-- runbook.plan(proc [, opts]) -> lines           also printed through pgr.ui (and as --json events)
-- runbook.run(proc, opts) -> exit code           opts: dry_run, yes, resume, new, json, quiet,
--     state_dir, site (table), file (for the --resume hint), source = {backup=, dump=, manifest=},
--     confirm = fn(question) -> bool (default: a prompt on the terminal)
-- runbook.runs(state_dir, proc) -> list of {dir=, id=, finished=, status=, done={name=true}} newest first
-- runbook.lock_path(state_dir, proc) -> the lock file one run of proc.cluster holds in that state directory
-- runbook.context(proc, opts) -> a ctx without a run directory (kept in memory), for commands that run
--     a procedure's steps themselves (pgr drill)
-- proc.lock = fn{run_id=, site=, lock_path=, resume=} -> handle | nil, err (optional): the cluster-side
--     lock (pgr.lease) taken before the run directory is made; handle:release() at the end
--
-- The ctx a step receives:
--   ctx.dry_run, ctx.source, ctx.site, ctx.procedure, ctx.run_dir (nil in a dry run), ctx.step (number)
--   ctx.state                       table persisted (state.json) after every step and on ctx:set
--   ctx:set(key, value)             sets and persists at once
--   ctx:remember(key, value) -> v   sets only if unset (a resumed step keeps the first value) and persists
--   ctx:save(name, value) -> path   a file saved/<name>, 0600 (string, or table as JSON)
--   ctx.saved[name]                 what ctx:save stored (tables decoded), also in a resumed run
--   ctx:write(description, fn, ...) a change: done and journaled, or in a dry run printed, not done
--   ctx:wait(description, fn, ...)  a wait on a change's effect: skipped (printed) in a dry run
--   ctx:secret(value) -> value      never shown: replaced by ‹redacted› in output, journal and log
--   ctx:log(text) / ctx:say(text)   to the log / to the log and the terminal
--   ctx.state.way_back = { "--backup", NAME }   set by a step: the `pgr run FILE ...` arguments that
--                                   return to the data as it was before the run; printed with the run's
--                                   last lines and with any failure (and in run_finished's JSON)
--   ctx:status(text), ctx:progress{...}   pgr.ui's transient line and bar
local sys = require "pgr.sys"
local errors = require "pgr.errors"
local ui = require "pgr.ui"
local site_mod = require "pgr.site"
local heartbeat = require "pgr.heartbeat"

local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, preflight = 3, interrupted = 130 }
-- Test-only crash points, never set in production: PGR_TEST_KILL_AT=STEP[:INSTANT[:K]] makes the
-- process die of SIGKILL in step STEP at INSTANT: "start" (default: right after the step's start is
-- journaled, before its action), "write" (right after its K-th change to the world took effect;
-- K defaults to 1), "wait" (as its K-th wait on a change's effect begins), "done" (its action
-- finished, just before its completion is journaled). The crash tests resume from each.
local KILL_STEP, KILL_INSTANT, KILL_K
do
  local spec = os.getenv("PGR_TEST_KILL_AT") or ""
  local step, instant, k = spec:match("^(%d+):?(%a*):?(%d*)$")
  KILL_STEP, KILL_INSTANT, KILL_K = tonumber(step), (instant ~= "" and instant or "start"), tonumber(k) or 1
end
local function kill_point(step, instant, k)
  if KILL_STEP == step and KILL_INSTANT == instant and (k == nil or k == KILL_K) then
    sys.kill(sys.getpid(), "KILL")
  end
end
M.EXIT = EXIT

M.REDACTED = "‹redacted›"

-- JSON ---------------------------------------------------------------------------------------------

local json = require "pgr.json"

local function decode(s)
  return json.decode(s)
end

local function encode(v)
  return json.encode(v)
end

-- Procedures ---------------------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

function M.procedure(t)
  assert(type(t) == "table", "runbook.procedure{...}: a table")
  assert(type(t.name) == "string" and t.name:match("^[%w_.-]+$"),
    "runbook.procedure: name must be a word (letters, digits, _ . -)")
  assert(type(t.steps) == "table" and #t.steps > 0, "runbook.procedure: steps must be a non-empty list")
  local seen = {}
  for i, s in ipairs(t.steps) do
    assert(type(s) == "table" and type(s.name) == "string" and s.name ~= "",
      ("runbook.procedure %s: step %d needs a name"):format(t.name, i))
    assert(type(s.run) == "function", ("runbook.procedure %s: step %q needs run=function(ctx)"):format(t.name, s.name))
    assert(not seen[s.name], ("runbook.procedure %s: two steps named %q"):format(t.name, s.name))
    seen[s.name] = true
  end
  local p = setmetatable({}, Proc)
  for k, v in pairs(t) do p[k] = v end
  p.cluster = p.cluster or p.name
  p.title = p.title or p.name
  return p
end

function M.is_procedure(v) return getmetatable(v) == Proc end

-- Where `pgr run spire` finds its procedure. A bare name is looked up only where root put it, never
-- in the current directory: /etc/pgr/services (the site's own procedures), the services installed
-- with the binary (PREFIX/share/pgr/services beside PREFIX/bin/pgr, or services/ of the build tree
-- the binary sits in), then these. A path (services/spire.lua, ./x.lua) loads that file.
M.SERVICE_DIRS = { "/etc/pgr/services", "/usr/local/share/pgr/services", "/usr/share/pgr/services" }

function M.service_dirs()
  local dirs, seen = {}, {}
  local function add(d)
    if d and not seen[d] then seen[d] = true dirs[#dirs + 1] = d end
  end
  add(M.SERVICE_DIRS[1])
  local bin = (sys.executable() or ""):match("^(.*)/[^/]+$")
  if bin and bin ~= "" then
    add((bin:match("^(.*)/[^/]+$") or "") .. "/share/pgr/services")
    add(bin .. "/services")
  end
  for i = 2, #M.SERVICE_DIRS do add(M.SERVICE_DIRS[i]) end
  return dirs
end

-- A procedure runs as root: its file must be root's or yours and writable by no one else.
local function trusted(path)
  local ok, err = sys.trusted(path)
  if ok then return path end
  return nil, errors.new("procedure", ("refusing the procedure %s: %s"):format(path, err.message))
end

-- locate's name for a procedure built into the binary
M.BUILTIN = "(built in)/"

function M.locate(name)
  local function readable(p)
    local f = io.open(p, "r")
    if f then f:close() return true end
  end
  if name:match("^[%w_-]+$") then
    local dirs = M.service_dirs()
    for _, d in ipairs(dirs) do
      local p = d .. "/" .. name .. ".lua"
      if readable(p) then return trusted(p) end
    end
    -- last, the copy built into the binary: a lone static pgr still knows the five services
    if require("pgr.embedded").load("services." .. name) then return M.BUILTIN .. name end
    return nil, errors.new("procedure", ("no procedure %s in %s or built into pgr (give a path such as ./%s.lua "
      .. "to run a file of your own)"):format(name, table.concat(dirs, ", "), name))
  end
  if readable(name) then return trusted(name) end
  return nil, errors.new("procedure", ("no procedure file %s (give a path such as services/spire.lua, "
    .. "or a service name found in %s)"):format(name, table.concat(M.service_dirs(), ", ")))
end

function M.load(path)
  local chunk, err
  if path:sub(1, #M.BUILTIN) == M.BUILTIN then
    chunk, err = require("pgr.embedded").load("services." .. path:sub(#M.BUILTIN + 1))
  else
    chunk, err = loadfile(path)
  end
  if not chunk then return nil, errors.new("procedure", tostring(err), { path = path }) end
  local ok, p = pcall(chunk)
  if not ok then return nil, errors.new("procedure", ("%s: %s"):format(path, tostring(p)), { path = path }) end
  if not M.is_procedure(p) then
    return nil, errors.new("procedure", ("%s does not return a procedure (runbook.procedure{...} or "
      .. "restore.procedure{...})"):format(path), { path = path })
  end
  return p
end

local function touches(step, opts)
  local t = step.touches
  if type(t) == "function" then t = t(opts or {}) end
  return t
end

function M.plan(proc, opts)
  opts = opts or {}
  local lines = {}
  local n = #proc.steps
  local w = #tostring(n)
  lines[#lines + 1] = ("%s — %s (%s), %d steps"):format(proc.name, proc.title, proc.cluster, n)
  ui.json({ event = "plan", procedure = proc.name, title = proc.title, cluster = proc.cluster, steps = n })
  for i, s in ipairs(proc.steps) do
    local mark = s.mark and ("  [" .. s.mark .. "]") or s.destructive and "  [destructive]"
      or (s.preflight and "  [check]" or "")
    lines[#lines + 1] = ("%" .. w .. "d. %s%s"):format(i, s.name, mark)
    local t = touches(s, opts)
    if t then lines[#lines + 1] = (" "):rep(w + 2) .. "touches: " .. t end
    ui.json({ event = "plan_step", step = i, name = s.name, destructive = s.destructive and true or false,
              preflight = s.preflight and true or false, touches = t })
  end
  if not ui.options().json then
    for _, l in ipairs(lines) do ui.line(l) end
  end
  return lines
end

-- Redaction ----------------------------------------------------------------------------------------

local function new_redactor()
  local secrets = {}
  local r = {}
  function r.add(v)
    if type(v) ~= "string" or v == "" then return end
    secrets[v] = true
    local okb, b64 = pcall(require, "pgr.base64")
    if okb and b64.encode then secrets[b64.encode(v)] = true end
    -- as it reads inside JSON text (" and \ escaped): --json events are redacted once encoded
    local enc = encode(v)
    if type(enc) == "string" and #enc > 2 then secrets[enc:sub(2, -2)] = true end
  end
  function r.apply(text)
    if type(text) ~= "string" then return text end
    -- longest first, so a secret containing another is hidden whole
    local list = {}
    for v in pairs(secrets) do list[#list + 1] = v end
    table.sort(list, function(a, b) return #a > #b end)
    for _, v in ipairs(list) do
      local i = 1
      while true do
        local a, b = text:find(v, i, true)
        if not a then break end
        text = text:sub(1, a - 1) .. M.REDACTED .. text:sub(b + 1)
        i = a + #M.REDACTED
      end
    end
    return text
  end
  -- a table with every string in it (keys too) redacted, before it is encoded
  function r.apply_value(v)
    if type(v) == "string" then return r.apply(v) end
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[r.apply_value(k)] = r.apply_value(x) end
    return setmetatable(out, getmetatable(v))
  end
  return r
end

-- Run directories ----------------------------------------------------------------------------------

local function cluster_key(proc)
  return (proc.cluster:gsub("[^%w_.-]", "_"))
end

function M.lock_path(state_dir, proc)
  return state_dir .. "/locks/" .. cluster_key(proc) .. ".lock"
end

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. (".%03dZ"):format(math.floor((t % 1) * 1000))
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Reads a journal: the events, tolerating a torn last line (a kill -9 between write and fsync).
local function read_journal(path)
  local events = {}
  local f = io.open(path, "r")
  if not f then return events end
  for line in f:lines() do
    local ev = decode(line)
    if type(ev) == "table" then events[#events + 1] = ev end
  end
  f:close()
  return events
end

local function summarize(dir, id)
  local events = read_journal(dir .. "/journal.jsonl")
  local run = { dir = dir, id = id, done = {}, finished = false, events = events }
  for _, ev in ipairs(events) do
    if ev.event == "run_started" then
      run.procedure, run.cluster, run.source, run.started = ev.procedure, ev.cluster, ev.source, ev.time
    elseif ev.event == "step_done" then
      run.done[ev.name] = true
    elseif ev.event == "write" then
      run.wrote = true -- it changed the cluster
    elseif ev.event == "run_finished" then
      run.finished, run.status = true, ev.status
    end
  end
  return run
end

function M.runs(state_dir, proc)
  local base = state_dir .. "/runs"
  local names = sys.listdir(base) or {}
  local prefix = cluster_key(proc) .. "-"
  local list = {}
  for _, name in ipairs(names) do
    if name:sub(1, #prefix) == prefix then
      local run = summarize(base .. "/" .. name, name)
      if run.procedure == proc.name then list[#list + 1] = run end
    end
  end
  -- ids sort by their UTC timestamp; newest first
  table.sort(list, function(a, b) return a.id > b.id end)
  return list
end

-- A --new run after a run that changed the cluster: that run's record of the cluster before the change
-- (the state keys in proc.inherit, the saved files in proc.inherit_saved) becomes this run's.
local function take_over(proc, inherit, run_dir, state)
  local prev, kept = inherit.state, {}
  for _, k in ipairs(proc.inherit or {}) do
    if prev[k] ~= nil then
      state[k] = prev[k]
      kept[#kept + 1] = type(prev[k]) == "table" and k or ("%s = %s"):format(k, tostring(prev[k]))
    end
  end
  for _, name in ipairs(proc.inherit_saved or {}) do
    local kind = (prev._saved or {})[name]
    local data = kind and read_file(inherit.run.dir .. "/saved/" .. name)
    if data then
      local ok, err = sys.write_file(run_dir .. "/saved/" .. name, data, 384)
      if not ok then return nil, err end
      state._saved = state._saved or {}
      state._saved[name] = kind
      kept[#kept + 1] = name
    end
  end
  ui.warn(("run %s had already changed %s: this run keeps what it recorded before that (%s)")
    :format(inherit.run.id, proc.cluster, #kept > 0 and table.concat(kept, ", ") or "nothing"))
  return true
end

local function newest_unfinished(state_dir, proc)
  for _, run in ipairs(M.runs(state_dir, proc)) do
    if not run.finished then return run end
  end
end

-- The context ----------------------------------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:_journal(ev)
  ev.time = ev.time or sys.time()
  ev.at = iso(ev.time)
  if not self.run_dir then return end
  local line = self._redact.apply(assert(encode(self._redact.apply_value(ev))))
  local ok, err = sys.append_line(self.run_dir .. "/journal.jsonl", line)
  if not ok then error(errors.new("journal", "cannot write the journal: " .. tostring(err)), 0) end
end

function Ctx:log(text)
  if not self.run_dir then return end
  text = self._redact.apply(tostring(text))
  sys.append_line(self.run_dir .. "/log", iso(sys.time()) .. " " .. text)
end

function Ctx:say(text)
  ui.info(tostring(text)) -- ui's log hook puts it in the log too
end

function Ctx:status(text) ui.status(text) end

function Ctx:progress(opts) return ui.progress(opts) end

function Ctx:secret(v)
  self._redact.add(v)
  return v
end

function Ctx:_persist_state()
  if not self.run_dir then return true end
  local s = assert(encode(self.state))
  local ok, err = sys.write_file(self.run_dir .. "/state.json", s, 384)
  if not ok then error(errors.new("journal", "cannot save the run state: " .. tostring(err)), 0) end
  return true
end

function Ctx:set(key, value)
  self.state[key] = value
  return self:_persist_state()
end

function Ctx:remember(key, value)
  if self.state[key] == nil then
    self.state[key] = value
    self:_persist_state()
  end
  return self.state[key]
end

local function safe_name(name)
  assert(type(name) == "string" and name:match("^[%w_.-]+$") and name ~= "." and name ~= "..",
    "ctx:save: name must be a file name (letters, digits, _ . -)")
  return name
end

function Ctx:save(name, value)
  safe_name(name)
  local data, is_json = value, false
  if type(value) == "table" then data, is_json = assert(encode(value)), true end
  assert(type(data) == "string", "ctx:save: value must be a string or a table")
  self._saved_mem[name] = value
  if not self.run_dir then return nil end
  local path = self.run_dir .. "/saved/" .. name
  local ok, err = sys.write_file(path, data, 384)
  if not ok then error(errors.new("journal", "cannot save " .. name .. ": " .. tostring(err)), 0) end
  local index = self.state._saved or {}
  index[name] = is_json and "json" or "raw"
  self.state._saved = index
  self:_persist_state()
  self:_journal({ event = "saved", name = name, step = self.step })
  return path
end

local function saved_proxy(ctx)
  return setmetatable({}, { __index = function(_, name)
    local v = ctx._saved_mem[name]
    if v ~= nil or not ctx.run_dir then return v end
    local kind = (ctx.state._saved or {})[name]
    if not kind then return nil end
    local data = read_file(ctx.run_dir .. "/saved/" .. safe_name(name))
    if data and kind == "json" then data = decode(data) end
    ctx._saved_mem[name] = data
    return data
  end })
end

function Ctx:write(description, fn, ...)
  self.writes = self.writes + 1
  if self.dry_run then
    self:_journal({ event = "would_write", step = self.step, description = description })
    ui.json({ event = "would_write", step = self.step, description = description })
    ui.line("        would " .. description)
    return true
  end
  self:_journal({ event = "write", step = self.step, description = description })
  self:log("write: " .. description)
  self._step_writes = (self._step_writes or 0) + 1
  local n = self._step_writes
  if not fn then
    kill_point(self.step, "write", n)
    return true
  end
  local r = table.pack(fn(...))
  kill_point(self.step, "write", n)
  return table.unpack(r, 1, r.n)
end

function Ctx:wait(description, fn, ...)
  if self.dry_run then
    ui.json({ event = "would_wait", step = self.step, description = description })
    ui.line("        would wait " .. description)
    return true
  end
  self:_journal({ event = "wait", step = self.step, description = description })
  self:log("wait: " .. description)
  self._step_waits = (self._step_waits or 0) + 1
  kill_point(self.step, "wait", self._step_waits)
  if fn then return fn(...) end
  return true
end

local function new_ctx(proc, opts, run_dir, state)
  local ctx = setmetatable({
    procedure = proc, dry_run = opts.dry_run and true or false, source = opts.source or {},
    site = opts.site, options = opts, run_dir = run_dir, state = state or {}, writes = 0,
    _redact = opts._redactor or new_redactor(), _saved_mem = {},
  }, Ctx)
  ctx.saved = saved_proxy(ctx)
  return ctx
end

M.Context = Ctx

function M.context(proc, opts)
  return new_ctx(proc, opts or {}, nil, {})
end

-- Running ------------------------------------------------------------------------------------------

local function is_interrupt(err)
  return type(err) == "string" and err:find("interrupted!", 1, true) ~= nil
end

local function traceback(e)
  if type(e) == "string" and not e:find("interrupted!", 1, true) then return debug.traceback(e, 2) end
  return e
end

-- for the other commands that run steps (pgr drill): Ctrl-C's error, and the handler that keeps
-- a traceback for programming errors only
M.is_interrupt, M.traceback = is_interrupt, traceback

-- Runs one step function protected; returns ok, note_or_err.
local function call_step(fn, ctx)
  local res = table.pack(xpcall(fn, traceback, ctx))
  if not res[1] then return false, res[2] end
  local r1, r2 = res[2], res[3]
  if r1 == false or (r1 == nil and r2 ~= nil) then
    return false, r2 or errors.new("step", "the step reported failure")
  end
  if type(r1) == "string" then return true, r1 end
  return true, nil
end

local function default_confirm(question)
  io.stderr:write(question, " [y/N] ")
  io.stderr:flush()
  local answer = io.stdin:read("l")
  return answer ~= nil and (answer:lower() == "y" or answer:lower() == "yes")
end

local function resume_hint(opts)
  local parts = { "pgr", "run", opts.file or "FILE" }
  if opts.state_dir_flag then parts[#parts + 1] = "--state-dir " .. opts.state_dir_flag end
  if opts.site_flag then parts[#parts + 1] = "--site " .. opts.site_flag end
  parts[#parts + 1] = "--resume"
  return table.concat(parts, " ")
end

-- The command that returns to the data as it was before the run (state.way_back's arguments). After a
-- run that did not finish, that run must be set aside: --new (it keeps the run's record of the cluster).
local function way_back_hint(opts, args, unfinished)
  local parts = { "pgr", "run", opts.file or "FILE" }
  if opts.state_dir_flag then parts[#parts + 1] = "--state-dir " .. opts.state_dir_flag end
  if opts.site_flag then parts[#parts + 1] = "--site " .. opts.site_flag end
  if unfinished then parts[#parts + 1] = "--new" end
  for _, a in ipairs(args) do
    parts[#parts + 1] = a:match("^[%w%-_./:=@+,]+$") and a or ("'" .. a:gsub("'", "'\\''") .. "'")
  end
  return table.concat(parts, " ")
end

-- an error as one line: errors.new objects by their message, anything else by tostring
local function err_text(e)
  if type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring then return tostring(e) end
  if type(e) == "table" then return tostring(e.message or e) end
  return tostring(e)
end
M.err_text = err_text

-- Reads the lock file's previous holder (a pid), to tell a stale lock from a first one.
local function previous_holder(path)
  local s = read_file(path)
  return s and tonumber(s:match("%d+"))
end

-- Whether a step's check says it is already done (a check that errors counts as "not done").
local function already_done(step, ctx)
  if not step.check then return false end
  local ok, res = pcall(step.check, ctx)
  return ok and res == true
end

local function dry_run(proc, opts)
  local ctx = new_ctx(proc, opts, nil, {})
  local restore_redactor = ui.set_redactor(ctx._redact.apply)
  local n = #proc.steps
  ui.line(("dry run of %s (%s): reads and checks run, changes are only printed"):format(proc.name, proc.cluster))
  local code = EXIT.ok
  if proc.setup then
    local ok, e = call_step(proc.setup, ctx)
    if not ok then
      ui.error(err_text(e))
      ui.set_redactor(restore_redactor)
      return is_interrupt(e) and EXIT.interrupted or EXIT.preflight
    end
  end
  for i, s in ipairs(proc.steps) do
    ctx.step = i
    local t0 = sys.now()
    ui.step_start(i, n, s.name)
    if already_done(s, ctx) then
      ui.step_skipped(i, n, s.name, "already done")
    else
      local ok, res = call_step(s.run, ctx)
      if ok then
        ui.step_done(i, n, s.name, sys.now() - t0, res)
      else
        ui.step_failed(i, n, s.name, sys.now() - t0, err_text(res))
        code = is_interrupt(res) and EXIT.interrupted or (s.preflight and EXIT.preflight or EXIT.failed)
        break
      end
    end
  end
  ui.json({ event = "dry_run_finished", writes = ctx.writes, exit = code })
  if code == EXIT.ok then
    ui.line(("dry run done: %d change%s would be made; nothing was changed"):format(ctx.writes,
      ctx.writes == 1 and "" or "s"))
  end
  ui.set_redactor(restore_redactor)
  return code
end

function M.run(proc, opts)
  opts = opts or {}
  assert(M.is_procedure(proc), "runbook.run: a procedure")
  if opts.dry_run then return dry_run(proc, opts) end

  local site = opts.site or site_mod.defaults()
  local state_dir = opts.state_dir or site_mod.state_dir(site)
  local n = #proc.steps

  local ok, err = sys.mkdir(state_dir .. "/runs")
  if ok then ok, err = sys.mkdir(state_dir .. "/locks") end
  -- secrets are saved here: the directories must be ours alone, not links someone else placed
  for _, d in ipairs(ok and { state_dir, state_dir .. "/runs", state_dir .. "/locks" } or {}) do
    ok, err = sys.private_dir(d)
    if not ok then break end
  end
  if not ok then
    ui.error(("cannot use the state directory %s: %s (--state-dir or PGR_STATE_DIR chooses another)")
      :format(state_dir, err_text(err)))
    return EXIT.failed
  end

  -- One run per cluster at a time. flock dies with its holder, so a lock left by a killed run is
  -- free again; we still say so, because that run is unfinished.
  local lock_path = M.lock_path(state_dir, proc)
  local before = previous_holder(lock_path)
  local lock, lerr = sys.lock(lock_path)
  if not lock then
    if type(lerr) == "table" and lerr.code == "locked" then
      ui.error(("another pgr (pid %s) is running on %s; wait for it or stop it (lock %s)")
        :format(lerr.holder ~= "" and lerr.holder or "?", proc.cluster, lock_path))
      ui.json({ event = "locked", holder = tonumber(lerr.holder), cluster = proc.cluster })
      return EXIT.preflight
    end
    ui.error(err_text(lerr))
    return EXIT.failed
  end
  local held -- the cluster-side lock (proc.lock), once taken
  local function release()
    if held then
      local rok, rerr = held:release()
      if not rok then ui.warn("the cluster's lease was not released (it expires by itself): " .. err_text(rerr)) end
      held = nil
    end
    -- an empty lock file says "released cleanly"; a pid left behind says its holder died
    local f = io.open(lock_path, "w")
    if f then f:close() end
    lock:unlock()
  end
  if before and before ~= sys.getpid() then
    ui.warn(("the last run on %s (pid %d) ended without releasing its lock (killed?); its lock is stale "
      .. "and was freed by the system"):format(proc.cluster, before))
    ui.json({ event = "stale_lock", holder = before, cluster = proc.cluster })
  end

  -- Which run: a new one, or the newest unfinished one on --resume.
  local run = newest_unfinished(state_dir, proc)
  local run_dir, state, resumed = nil, {}, false
  local inherit, abandon
  if opts.resume then
    if not run then
      ui.error(("no unfinished run of %s to resume in %s/runs"):format(proc.name, state_dir))
      release()
      return EXIT.usage
    end
    local src = opts.source or {}
    for _, k in ipairs({ "backup", "dump", "manifest" }) do
      if src[k] and run.source and run.source[k] ~= src[k] then
        ui.error(("--resume continues run %s, which used --%s %s; give no source options, or start a new run")
          :format(run.id, k, tostring(run.source[k])))
        release()
        return EXIT.usage
      end
    end
    run_dir, resumed = run.dir, true
    for _, d in ipairs({ run_dir, run_dir .. "/saved" }) do
      local private, perr = sys.private_dir(d)
      if not private then
        ui.error(("cannot resume run %s: %s"):format(run.id, err_text(perr)))
        release()
        return EXIT.failed
      end
    end
    opts.source = run.source or {}
    -- how to load (not what) may change on resume
    if src.jobs then opts.source.jobs = src.jobs end
    local st = read_file(run_dir .. "/state.json")
    state = st and decode(st) or {}
  elseif run and not opts.new then
    ui.error(("run %s of %s did not finish (%s); continue it with: %s  (or start over with --new)")
      :format(run.id, proc.name, run.dir, resume_hint(opts)))
    release()
    return EXIT.usage
  elseif run then
    -- --new. A run that changed the cluster recorded what the cluster was before (proc.inherit: the
    -- counts to restore; proc.inherit_saved: the objects it saved): the cluster as it is now would be
    -- taken for the original, so the new run starts from that record.
    if run.wrote then
      local st = read_file(run.dir .. "/state.json")
      inherit = { run = run, state = st and decode(st) or {} }
    end
    -- The unfinished runs are closed, so a later --resume cannot fall back on one of them; only once
    -- this run's checks have passed, so that a failed check leaves them to --resume.
    abandon = function()
      for _, old in ipairs(M.runs(state_dir, proc)) do
        if not old.finished and old.dir ~= run_dir then
          local t = sys.time()
          sys.append_line(old.dir .. "/journal.jsonl", assert(encode({ event = "run_finished", status = "abandoned",
            time = t, at = iso(t), by_pid = sys.getpid() })))
          ui.warn(("run %s did not finish; it is closed as abandoned (its saved files stay in %s)"):format(old.id, old.dir))
        end
      end
    end
  end

  -- Without a terminal to ask on, --yes is the only consent; refuse before anything runs.
  local done = run and resumed and run.done or {}
  local confirm = opts.confirm
  local needs_consent = false
  for _, s in ipairs(proc.steps) do
    if s.destructive and not done[s.name] then needs_consent = true end
  end
  if needs_consent and not opts.yes and not confirm then
    if not (sys.isatty("stdin") and sys.isatty("stderr")) then
      ui.error(("%s has destructive steps and there is no terminal to ask on: pass --yes to run them "
        .. "(pgr plan shows them; --dry-run tries everything else)"):format(proc.name))
      release()
      return EXIT.usage
    end
    confirm = default_confirm
  end

  local id = run and resumed and run.id
  if not id then
    local now = sys.time()
    -- ids sort by time (milliseconds), then pid
    id = ("%s-%s%03d-%d"):format(cluster_key(proc), os.date("!%Y%m%dT%H%M%S.", math.floor(now)),
      math.floor((now % 1) * 1000), sys.getpid())
  end
  -- The cluster-side lock: another pgr, on any machine, that holds it refuses this run before it
  -- has written anything.
  if proc.lock then
    local h, herr = proc.lock({ run_id = id, site = site, lock_path = lock_path, resume = resumed })
    if not h then
      ui.error(err_text(herr))
      ui.json({ event = "locked", cluster = proc.cluster, holder = type(herr) == "table" and herr.holder or nil,
                error = err_text(herr) })
      ui.line("nothing was changed")
      release()
      return EXIT.preflight
    end
    held = h
    if h.took then
      ui.warn(("took over the lease of %s from %s: %s"):format(proc.cluster, h.took.identity, h.took.why))
      ui.json({ event = "lease_taken_over", cluster = proc.cluster, from = h.took.identity, why = h.took.why })
    end
  end

  if not run_dir then
    run_dir = state_dir .. "/runs/" .. id
    ok, err = sys.mkdir(run_dir .. "/saved", 448)
    if ok and inherit then ok, err = take_over(proc, inherit, run_dir, state) end
    if not ok then
      ui.error(err_text(err))
      release()
      return EXIT.failed
    end
  end

  local ctx = new_ctx(proc, opts, run_dir, state)
  local restore_redactor = ui.set_redactor(ctx._redact.apply)
  local restore_log = ui.set_log(function(line) ctx:log(line) end)
  local function finish(code)
    ui.set_redactor(restore_redactor)
    ui.set_log(restore_log)
    release()
    return code
  end

  local step_names = {}
  for i, s in ipairs(proc.steps) do step_names[i] = s.name end
  if resumed then
    ctx:_journal({ event = "run_resumed", pid = sys.getpid() })
    ui.line(("resuming %s in %s"):format(proc.name, run_dir))
  else
    ctx:_journal({ event = "run_started", procedure = proc.name, cluster = proc.cluster, pid = sys.getpid(),
                   source = opts.source or {}, steps = step_names, inherited_from = inherit and inherit.run.id })
    ctx:_persist_state()
  end
  ui.json({ event = resumed and "run_resumed" or "run_started", procedure = proc.name,
            cluster = proc.cluster, run_dir = run_dir, steps = n })

  local function stop(code, status, e)
    local back = type(ctx.state.way_back) == "table" and status ~= "preflight_failed" and status ~= "declined"
      and way_back_hint(opts, ctx.state.way_back, true) or nil
    if status == "preflight_failed" then
      ctx:_journal({ event = "run_finished", status = status, exit = code })
      ui.line("preflight failed: nothing was changed")
    elseif status == "interrupted" then
      ctx:_journal({ event = "run_interrupted", exit = code })
      ui.line("interrupted; continue with: " .. resume_hint(opts))
    elseif status == "declined" then
      ctx:_journal({ event = "run_finished", status = status, exit = code })
      ui.line("not confirmed: no destructive step was run")
    else
      ctx:_journal({ event = "run_failed", exit = code, error = e and err_text(e) or nil })
      ui.line("the run stopped; after fixing the cause, continue with: " .. resume_hint(opts))
    end
    if back then ui.line("or go back to the data as it was before this run: " .. back) end
    ui.json({ event = "run_finished", status = status, exit = code, run_dir = run_dir,
              resume = status ~= "preflight_failed" and status ~= "declined" and resume_hint(opts) or nil,
              way_back = back })
    return finish(code)
  end

  -- Whether anything may have changed: a preflight failure after that is an ordinary failure.
  local changed = false
  for _, s in ipairs(proc.steps) do
    if done[s.name] and not s.preflight then changed = true end
  end
  if proc.setup then
    local sok, e = call_step(proc.setup, ctx)
    if not sok then
      ui.error(err_text(e))
      if is_interrupt(e) then return stop(EXIT.interrupted, "interrupted") end
      if changed then return stop(EXIT.failed, "failed", e) end
      return stop(EXIT.preflight, "preflight_failed", e)
    end
  end

  local confirmed = opts.yes or false
  local t_run = sys.now()
  for i, s in ipairs(proc.steps) do
    ctx.step = i
    if abandon and not s.preflight then
      abandon()
      abandon = nil
    end
    if done[s.name] then
      ui.step_skipped(i, n, s.name, "done in an earlier run")
    else
      if s.destructive and not confirmed then
        local lines = { ("%s on %s: the destructive steps come next:"):format(proc.name, proc.cluster) }
        for j = i, n do
          local d = proc.steps[j]
          if d.destructive and not done[d.name] then
            local t = touches(d, opts)
            lines[#lines + 1] = ("  %d. %s%s"):format(j, d.name, t and ("  (" .. t .. ")") or "")
          end
        end
        lines[#lines + 1] = "Continue?"
        ui.clear_status()
        if not confirm(table.concat(lines, "\n")) then return stop(EXIT.failed, "declined") end
        confirmed = true
        ctx:_journal({ event = "confirmed", step = i })
      end
      -- the lease is renewed at every step (and at every tick of the waits inside one); one lost
      -- to another pgr stops the run here
      local bok, berr = pcall(heartbeat.beat)
      if bok and held and held.lost then bok, berr = false, held.lost end
      if not bok then
        if is_interrupt(berr) then return stop(EXIT.interrupted, "interrupted") end
        ui.error(err_text(berr))
        return stop(EXIT.failed, "failed", berr)
      end
      ctx:_journal({ event = "step_started", step = i, name = s.name })
      ctx._step_writes, ctx._step_waits = 0, 0
      kill_point(i, "start")
      local t0 = sys.now()
      ui.step_start(i, n, s.name)
      local sok, res
      if already_done(s, ctx) then
        sok, res = true, "already done"
      else
        sok, res = call_step(s.run, ctx)
      end
      local secs = sys.now() - t0
      if sok then
        kill_point(i, "done")
        ctx:_persist_state()
        ctx:_journal({ event = "step_done", step = i, name = s.name, seconds = secs, note = res })
        ui.step_done(i, n, s.name, secs, res)
      else
        local interrupted = is_interrupt(res)
        ctx:_journal({ event = interrupted and "step_interrupted" or "step_failed", step = i, name = s.name,
                       seconds = secs, error = err_text(res), code = type(res) == "table" and res.code or nil })
        ui.step_failed(i, n, s.name, secs, interrupted and "interrupted" or err_text(res))
        if interrupted then return stop(EXIT.interrupted, "interrupted") end
        if s.preflight and not changed and ctx.writes == 0 then return stop(EXIT.preflight, "preflight_failed", res) end
        return stop(EXIT.failed, "failed", res)
      end
      if not s.preflight then changed = true end
    end
  end
  ctx:_journal({ event = "run_finished", status = "ok", exit = EXIT.ok, seconds = sys.now() - t_run })
  local back = type(ctx.state.way_back) == "table" and way_back_hint(opts, ctx.state.way_back, false) or nil
  ui.json({ event = "run_finished", status = "ok", exit = EXIT.ok, run_dir = run_dir, way_back = back })
  ui.line(("%s: all %d steps done in %s (journal: %s)"):format(proc.name, n, ui.duration(sys.now() - t_run), run_dir))
  if back then ui.line("the data as it was before this run can be restored with: " .. back) end
  return finish(EXIT.ok)
end

return M
