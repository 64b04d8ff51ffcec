-- Specs of the host and pgr.cli: the lua-like behaviour (arg, -e, -, exit codes, tracebacks),
-- commands and their help, and module search order (PGR_PATH over the embedded copy).
local sys = require "pgr.sys"

local PGR = os.getenv("PGR") or "./pgr"

local function run(cmdline)
  local p = io.popen(cmdline .. " 2>&1; echo \"<rc=$?>\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)<rc=(%d+)>\n$")
  return body, tonumber(rc)
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("l")
  p:close()
  return d
end

describe("pgr host", function()
  it("runs -e chunks with the arg table", function()
    local out, rc = run(PGR .. [[ -e 'print(#arg, arg[0])']])
    assert.equals(0, rc)
    assert.equals("0\tnil\n", out)
  end)

  it("runs a script with arguments in arg and ...", function()
    local d = tmpdir()
    local f = io.open(d .. "/s.lua", "w")
    f:write("print(arg[0], arg[1], arg[2], select('#', ...))\n")
    f:close()
    local out, rc = run(PGR .. " " .. d .. "/s.lua x y")
    assert.equals(0, rc)
    assert.equals(d .. "/s.lua\tx\ty\t2\n", out)
  end)

  it("runs standard input with -", function()
    local out, rc = run("echo 'print(1 + 1)' | " .. PGR .. " -")
    assert.equals(0, rc)
    assert.equals("2\n", out)
  end)

  it("reports a script error with the script line and a traceback, exit 1", function()
    local d = tmpdir()
    local f = io.open(d .. "/bad.lua", "w")
    f:write("local x = 1\nerror('boom')\n")
    f:close()
    local out, rc = run(PGR .. " " .. d .. "/bad.lua")
    assert.equals(1, rc)
    assert.matches("^pgr: " .. d:gsub("%p", "%%%0") .. "/bad.lua:2: boom\nstack traceback:", out)
  end)

  it("passes os.exit codes through", function()
    local _, rc = run(PGR .. [[ -e 'os.exit(7)']])
    assert.equals(7, rc)
  end)

  it("rejects an unknown command with exit 2 and a hint", function()
    local out, rc = run(PGR .. " no-such-command")
    assert.equals(2, rc)
    assert.matches("pgr help", out)
  end)

  it("answers a command line a command cannot use with the reason, its usage and exit 2", function()
    local out, rc = run(PGR .. " restore")
    assert.equals(2, rc)
    assert.equals("pgr restore: needs exactly one SOURCE\n", out:match("^[^\n]*\n"))
    assert.matches("\nUsage: pgr restore ", out)
    assert.matches("Run 'pgr restore %-%-help' for more%.", out)
    out, rc = run(PGR .. " plan a b")
    assert.equals(2, rc)
    assert.matches("^pgr plan: needs exactly one procedure FILE\n", out)
  end)

  it("lists commands in help, one line each", function()
    local out, rc = run(PGR .. " --help")
    assert.equals(0, rc)
    assert.matches("\n  version  print pgr's version", out)
    assert.matches("\n  help ", out)
    assert.matches("Exit codes:", out)
  end)

  it("prints every command's help (the man page is made of it)", function()
    for _, name in ipairs(require("pgr.cli").commands()) do
      local out, rc = run(PGR .. " help " .. name)
      assert.equals(0, rc, name .. ": " .. out)
      assert.matches("^Usage: pgr " .. name:gsub("%p", "%%%0"), out)
    end
  end)

  it("prints the library versions", function()
    local out, rc = run(PGR .. " version")
    assert.equals(0, rc)
    for _, lib in ipairs { "Lua 5.4", "libcurl", "libpq", "libyaml", "cJSON", "readline" } do
      assert.matches(lib, out, 1, true)
    end
    -- the first line says which build this is: static with musl, or dynamic with glibc
    local kind, libc = out:match("^pgr [%d.]+ %((%a+), (%a+) [%d.]+%)\n")
    assert.is_truthy(kind == "static" and libc == "musl" or kind == "dynamic" and libc == "glibc", out)
    if kind == "static" then assert.matches("built from Debian 12 source packages", out, 1, true) end
  end)

  it("loads a module from PGR_PATH before the embedded copy", function()
    local d = tmpdir()
    assert(sys.mkdir(d .. "/pgr/cmd"))
    local f = io.open(d .. "/pgr/cmd/version.lua", "w")
    f:write("return { summary = 'site override', run = function() print('overridden') return 0 end }\n")
    f:close()
    local out, rc = run("PGR_PATH=" .. d .. " " .. PGR .. " version")
    assert.equals(0, rc)
    assert.equals("overridden\n", out)
  end)

  it("never runs code from the current directory: a bare service name, a mistyped command", function()
    local d = tmpdir()
    local marker = d .. "/ran"
    local evil = ("io.open(%q, 'a'):write('%%s\\n') return require('pgr.runbook').procedure{name='evil', "
      .. "steps={{name='evil', run=function() end}}}"):format(marker)
    assert(sys.mkdir(d .. "/services"))
    assert(sys.mkdir(d .. "/pgr/cmd"))
    for path, tag in pairs { ["/spire"] = "spire", ["/services/spire.lua"] = "services/spire.lua",
                             ["/pgr/cmd/bakcups.lua"] = "bakcups.lua", ["/bakcups"] = "bakcups" } do
      local f = assert(io.open(d .. path, "w"))
      f:write(evil:format(tag))
      f:close()
    end
    local out, rc = run(("cd %s && %s plan spire"):format(d, PGR))
    -- the procedure installed with the binary (or none, for a binary outside a build tree)
    if rc == 0 then
      assert.matches("^spire — Restore Postgres for Spire", out)
    else
      assert.equals(2, rc)
      assert.matches("no procedure spire in /etc/pgr/services", out, 1, true)
    end
    assert.is_nil(out:find("evil", 1, true))
    out, rc = run(("cd %s && %s bakcups"):format(d, PGR))
    assert.equals(2, rc)
    assert.matches("neither a command nor a readable script", out, 1, true)
    out, rc = run(("cd %s && %s -e 'require \"pgr.cmd.bakcups\"'"):format(d, PGR))
    assert.equals(1, rc)
    assert.matches("module 'pgr.cmd.bakcups' not found", out, 1, true)
    assert.is_nil(io.open(marker), "a file of the current directory ran")
    -- a path names a file of the user's choosing: that one loads
    out, rc = run(("cd %s && %s plan ./services/spire.lua"):format(d, PGR))
    assert.equals(0, rc)
    assert.matches("^evil", out)
    local f = assert(io.open(marker))
    assert.equals("services/spire.lua\n", f:read("a"))
    f:close()
  end)

  it("refuses code from places others may write: a PGR_PATH module, a procedure file", function()
    local d = tmpdir()
    assert(sys.mkdir(d .. "/pgr/cmd"))
    local f = io.open(d .. "/pgr/cmd/version.lua", "w")
    f:write("return { summary = 'site override', run = function() print('overridden') return 0 end }\n")
    f:close()
    os.execute("chmod 0777 " .. d .. "/pgr")
    local out, rc = run("PGR_PATH=" .. d .. " " .. PGR .. " version")
    assert.equals(1, rc)
    assert.matches(("refusing to load module 'pgr.cmd.version' from '%s/pgr/cmd/version.lua': directory %s/pgr "
      .. "is writable by others (mode 0777): chmod go-w %s/pgr"):format(d, d, d), out, 1, true)
    assert.is_nil(out:find("overridden", 1, true))
    os.execute("chmod 0755 " .. d .. "/pgr; chmod 0664 " .. d .. "/pgr/cmd/version.lua")
    out, rc = run("PGR_PATH=" .. d .. " " .. PGR .. " version")
    assert.equals(1, rc)
    assert.matches("is writable by its group (mode 0664)", out, 1, true)

    f = io.open(d .. "/p.lua", "w")
    f:write("return require('pgr.runbook').procedure{name='p', steps={{name='s', run=function() end}}}\n")
    f:close()
    out, rc = run(PGR .. " plan " .. d .. "/p.lua")
    assert.equals(0, rc, out)
    os.execute("chmod 0666 " .. d .. "/p.lua")
    out, rc = run(PGR .. " plan " .. d .. "/p.lua")
    assert.equals(2, rc)
    assert.matches(("refusing the procedure %s/p.lua: file %s/p.lua is writable by others (mode 0666)"):format(d, d),
      out, 1, true)
    if run("id -u") ~= "0\n" then return end -- (another owner needs root)
    os.execute("chmod 0644 " .. d .. "/p.lua; chown 65534 " .. d .. "/p.lua")
    out, rc = run(PGR .. " plan " .. d .. "/p.lua")
    assert.equals(2, rc)
    assert.matches("is owned by uid 65534, neither root nor you", out, 1, true)
  end)

  it("keeps the system Lua paths usable (busted is loaded from them)", function()
    local out, rc = run(PGR .. [[ -e 'print(require("say") ~= nil)']])
    assert.equals(0, rc)
    assert.equals("true\n", out)
  end)
end)

describe("pgr.sys", function()
  it("writes private files atomically with mode 0600", function()
    local d = tmpdir()
    assert(sys.write_file(d .. "/f", "hello"))
    local st = assert(sys.stat(d .. "/f"))
    assert.equals(tonumber("600", 8), st.mode)
    assert.equals(5, st.size)
  end)

  it("never writes through a link: a planted temporary name, a journal, a lock", function()
    local d = tmpdir()
    local target = d .. "/target"
    local f = io.open(target, "w")
    f:write("untouched")
    f:close()
    -- the temporary name write_file uses (path.tmp.PID), planted as a link to another file
    os.execute(("ln -s %s %s/f.tmp.%d"):format(target, d, sys.getpid()))
    assert(sys.write_file(d .. "/f", "hello"))
    assert.equals("untouched", io.open(target):read("a"))
    assert.equals("hello", io.open(d .. "/f"):read("a"))
    assert.equals("file", sys.stat(d .. "/f").type)
    os.execute(("ln -s %s %s/journal.jsonl; ln -s %s %s/x.lock"):format(target, d, target, d))
    local ok, err = sys.append_line(d .. "/journal.jsonl", "{}")
    assert.is_nil(ok)
    assert.matches("cannot open " .. d .. "/journal.jsonl", err.message, 1, true)
    ok, err = sys.lock(d .. "/x.lock")
    assert.is_nil(ok)
    assert.matches("cannot open lock", err.message, 1, true)
    assert.equals("untouched", io.open(target):read("a"))
  end)

  it("writes no core dump, whatever the limit it was started with: not dumpable, core limit 0", function()
    local out, rc = run("ulimit -c unlimited 2>/dev/null; " .. PGR .. [[ -e 'local s = require "pgr.sys"
      print(s.core_dumps())
      for l in io.lines("/proc/self/limits") do if l:find("^Max core file size") then print(l) end end']])
    assert.equals(0, rc)
    assert.matches("^false\t0\nMax core file size +0 +0 +bytes", out)
  end)

  it("creates directories 0700 with their parents", function()
    local d = tmpdir()
    assert(sys.mkdir(d .. "/a/b/c"))
    assert.equals(tonumber("700", 8), sys.stat(d .. "/a/b/c").mode)
  end)

  it("refuses a lock held by another process and names the holder", function()
    local d = tmpdir()
    local lk = assert(sys.lock(d .. "/lock"))
    local out, rc = run(PGR .. [[ -e 'local s=require"pgr.sys" local l,e=s.lock("]] .. d ..
      [[/lock") print(l, e.code, e.holder)']])
    assert.equals(0, rc)
    assert.equals("nil\tlocked\t" .. sys.getpid() .. "\n", out)
    lk:unlock()
    out = run(PGR .. [[ -e 'local s=require"pgr.sys" print(s.lock("]] .. d .. [[/lock") ~= nil)']])
    assert.equals("true\n", out)
  end)

  it("returns nil, err for ordinary failures", function()
    local st, err = sys.stat("/nonexistent/x")
    assert.is_nil(st)
    assert.equals("io", err.code)
    assert.matches("cannot stat /nonexistent/x", tostring(err))
  end)
end)
