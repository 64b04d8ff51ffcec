-- spec/support/kubesim.lua: starts and stops a tests/kubesim simulator for a spec file, runs kubectl
-- against it, and calls its admin API (faults, denies, compaction) — shared by the k8s specs.
local json = require "pgr.json"

local M = {}

local ROOT = os.getenv("PGR_ROOT") or "."
M.KUBESIM = ROOT .. "/tests/kubesim/kubesim"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = sh_quote

-- Runs a shell command line; returns its output (stdout and stderr) and exit status.
function M.run(cmdline)
  local p = io.popen(cmdline .. " 2>&1; echo \"<rc=$?>\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)<rc=(%d+)>\n$")
  return body, tonumber(rc)
end

local Sim = {}
Sim.__index = Sim

-- up{fixture="none"|"csm"} -> sim. Raises when the simulator does not start.
function M.up(opts)
  opts = opts or {}
  local p = io.popen("mktemp -d /tmp/pgr-kubesim-spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  local out, rc = M.run(("%s up %s --fixture %s"):format(M.KUBESIM, sh_quote(dir .. "/sim"), opts.fixture or "none"))
  if rc ~= 0 then
    M.run("rm -rf " .. sh_quote(dir))
    error("kubesim up failed: " .. out)
  end
  -- a watchdog stops the simulator should this process die before its teardown runs (a crash)
  local sys = require "pgr.sys"
  os.execute(("sh -c 'while kill -0 %d 2>/dev/null; do sleep 1; done; \"%s\" down \"%s/sim\"; rm -rf \"%s\"' </dev/null >/dev/null 2>&1 &")
    :format(sys.getpid(), M.KUBESIM, dir, dir))
  local self = setmetatable({ root = dir, dir = dir .. "/sim", kubeconfig = dir .. "/sim/kubeconfig" }, Sim)
  local f = assert(io.open(self.dir .. "/admin.json"))
  self.info = json.decode(f:read("a"))
  f:close()
  return self
end

function Sim:down()
  if self.dir then
    M.run(("%s down %s"):format(M.KUBESIM, sh_quote(self.dir)))
    M.run("rm -rf " .. sh_quote(self.root))
    self.dir = nil
  end
end

-- admin{op=..., ...} -> decoded answer (raises on failure)
function Sim:admin(body)
  local out, rc = M.run(("%s admin %s %s"):format(M.KUBESIM, sh_quote(self.dir), sh_quote(json.encode(body))))
  assert(rc == 0, "kubesim admin failed: " .. out)
  return json.decode(out)
end

function Sim:fault(rule)
  rule.op = "fault"
  return self:admin(rule)
end

-- kubectl ARGS against the simulator -> output, exit status
function Sim:kubectl(args)
  return M.run(("kubectl --kubeconfig %s %s"):format(sh_quote(self.kubeconfig), args))
end

return M
