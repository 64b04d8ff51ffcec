-- spec/support/rb_shell.lua: process and file helpers for the runbook specs: run pgr with an
-- environment and collect output and exit status; start one in the background; wait with a deadline.
local sys = require "pgr.sys"

local M = {}

M.PGR = os.getenv("PGR") or "./pgr"
M.PROC = "spec/support/rb_proc.lua"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.quote = q

local function envs(env)
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  table.sort(parts)
  return table.concat(parts, " ")
end

-- Runs a shell command line with env; returns stdout, stderr, exit status (128+N for signal N).
function M.run(cmdline, env, stdin)
  local d = M.tmpdir()
  local input = stdin and (" < " .. q(d .. "/in")) or " < /dev/null"
  if stdin then M.write(d .. "/in", stdin) end
  local full = ("env %s %s > %s 2> %s%s; echo $?"):format(envs(env), cmdline, q(d .. "/out"), q(d .. "/err"), input)
  local p = io.popen(full)
  local rc = tonumber(p:read("a"):match("%d+"))
  p:close()
  local out, err = M.read(d .. "/out"), M.read(d .. "/err")
  M.rmrf(d)
  return out, err, rc
end

-- `pgr ARGS...` with env
function M.pgr(args, env, stdin)
  local parts = { q(M.PGR) }
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  return M.run(table.concat(parts, " "), env, stdin)
end

-- Starts pgr in the background; returns a handle with pid (of pgr itself), wait(), kill(sig).
function M.spawn(args, env, dir)
  local parts = { q(M.PGR) }
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local rcfile, pidfile = dir .. "/bg.rc", dir .. "/bg.pid"
  os.remove(rcfile)
  -- the subshell records pgr's exit status; $! of the inner background job is pgr's own pid
  local line = ("(env %s %s > %s 2>&1 < /dev/null & echo $! > %s; wait $!; echo $? > %s) > /dev/null 2>&1 &")
    :format(envs(env), table.concat(parts, " "), q(dir .. "/bg.out"), q(pidfile), q(rcfile))
  os.execute(line)
  local h = {}
  assert(M.wait_for(function() return M.read(pidfile) and M.read(pidfile):match("%d+\n") end, 10), "no pid")
  h.pid = tonumber(M.read(pidfile):match("%d+"))
  function h.wait(timeout)
    assert(M.wait_for(function() return M.read(rcfile) and M.read(rcfile):match("%d+") end, timeout or 30),
      "background pgr did not finish")
    return tonumber(M.read(rcfile):match("%d+")), M.read(dir .. "/bg.out")
  end
  function h.kill(sig)
    if sys.pid_alive(h.pid) then os.execute(("kill -%s %d 2>/dev/null"):format(sig or "KILL", h.pid)) end
  end
  return h
end

function M.wait_for(pred, timeout)
  local deadline = sys.now() + (timeout or 10)
  while sys.now() < deadline do
    local v = pred()
    if v then return v end
    sys.sleep(0.02)
  end
  return nil
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/pgr-rb.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

function M.rmrf(d)
  if d and d:match("^/tmp/pgr%-rb%.") then os.execute("rm -rf " .. q(d)) end
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

function M.exists(path) return M.read(path) ~= nil or sys.stat(path) ~= nil end

function M.lines(path)
  local t = {}
  local s = M.read(path)
  if not s then return t end
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The run directories under a state directory, oldest first.
function M.run_dirs(state)
  local names = sys.listdir(state .. "/runs") or {}
  local t = {}
  for _, n in ipairs(names) do t[#t + 1] = state .. "/runs/" .. n end
  return t
end

function M.journal(run_dir)
  local json = require "pgr.json"
  local t = {}
  for _, l in ipairs(M.lines(run_dir .. "/journal.jsonl")) do t[#t + 1] = assert(json.decode(l)) end
  return t
end

-- All files under a directory (recursive), with contents.
function M.files(dir)
  local p = io.popen("find " .. q(dir) .. " -type f")
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

return M
