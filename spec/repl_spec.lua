-- Specs of `pgr repl`, driven as a user drives it: a real pseudo-terminal (tmux), keys typed,
-- the screen read back. Multi-line chunks, expressions, errors, completion, history.
local sys = require "pgr.sys"

local PGR = os.getenv("PGR") or "./pgr"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local Term = {}
Term.__index = Term

local function open_term()
  local home = sh("mktemp -d"):gsub("%s+$", "")
  local sock = "pgr-repl-" .. sys.getpid() .. "-" .. math.random(1e9)
  local t = setmetatable({ sock = sock, home = home }, Term)
  t:tmux("new-session -d -s r -x 120 -y 50 " ..
    q("env HOME=" .. home .. " XDG_STATE_HOME= NO_COLOR=1 " .. PGR .. " repl; sleep 30"))
  assert(t:wait_for(">$", 10), "no prompt:\n" .. t:screen())
  return t
end

function Term:tmux(args) return sh("tmux -L " .. self.sock .. " " .. args) end
function Term:screen() return self:tmux("capture-pane -p -t r -S -100") end
function Term:type(text) self:tmux("send-keys -t r -l " .. q(text)) end
function Term:key(name) self:tmux("send-keys -t r " .. name) end
function Term:line(text) self:type(text) self:key("Enter") end
function Term:close() self:tmux("kill-server") sh("rm -rf " .. q(self.home)) end

-- Waits until the screen (trailing blank lines removed) matches pattern.
function Term:wait_for(pattern, timeout)
  local deadline = sys.now() + (timeout or 30)
  repeat
    local s = self:screen():gsub("%s+$", "")
    if s:find(pattern) then return s end
    sys.sleep(0.05)
  until sys.now() > deadline
  return nil
end

describe("pgr repl", function()
  local t
  before_each(function() t = open_term() end)
  after_each(function() t:close() end)

  it("prints an expression's value without '='", function()
    t:line("1 + 41")
    assert.truthy(t:wait_for("> 1 %+ 41\n42\n>"), t:screen())
  end)

  it("continues an unfinished chunk on the next line", function()
    t:line("function double(x)")
    assert.truthy(t:wait_for(">> ?$"), t:screen())
    t:line("return x * 2")
    t:line("end")
    t:line("double(21)")
    assert.truthy(t:wait_for(">> end\n> double%(21%)\n42\n>"), t:screen())
  end)

  it("pretty-prints tables with sorted keys and marks cycles", function()
    t:line("t = {b = 2, a = {1, 2}} t.self = t")
    t:line("t")
    assert.truthy(t:wait_for("{ a = { 1, 2 }, b = 2, self = <cycle: <top>> }"), t:screen())
  end)

  it("reports an error with its line and carries on", function()
    t:line("error('boom')")
    assert.truthy(t:wait_for("stdin:1: boom\nstack traceback:"), t:screen())
    t:line("2 * 3")
    assert.truthy(t:wait_for("\n6\n>"), t:screen())
  end)

  it("has every pgr module preloaded as a global", function()
    t:line("type(pretty.format), type(args.parse)")
    assert.truthy(t:wait_for("function%s+function"), t:screen())
  end)

  it("completes globals and table fields with Tab", function()
    t:type("pretty.for")
    t:key("Tab")
    assert.truthy(t:wait_for("> pretty%.format$"), t:screen())
    t:type("(nil)")
    t:key("Enter")
    assert.truthy(t:wait_for("\nnil\n>"), t:screen())
  end)

  it("keeps history in a private file", function()
    t:line("x = 12345")
    t:key("C-d")
    local path = t.home .. "/.local/state/pgr/repl_history"
    local deadline = sys.now() + 30
    local st
    repeat
      st = sys.stat(path)
      if st and st.size > 0 then break end
      sys.sleep(0.05)
    until sys.now() > deadline
    assert.truthy(st, "no history file")
    assert.equals(tonumber("600", 8), st.mode)
    local f = assert(io.open(path))
    assert.matches("x = 12345", f:read("a"))
    f:close()
  end)
end)
