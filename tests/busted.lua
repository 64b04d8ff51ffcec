-- tests/busted.lua: runs busted inside pgr, so the specs exercise the real embedded library and
-- native bindings (`pgr tests/busted.lua [busted options] spec/...`).
package.path = "spec/?.lua;" .. package.path
-- A static pgr cannot load C modules (package.loadlib says "absent"), and busted needs three small
-- ones: system.core (clocks, sleep), term.core (isatty) and lfs (file attributes). Here they are
-- stand-ins over pgr.sys, for the test runner only: the code under test is the binary's own.
if select(3, package.loadlib("/nonexistent", "luaopen_x")) == "absent" then
  local sys = require "pgr.sys"
  package.preload["system.core"] = function()
    return { gettime = sys.time, monotime = sys.now, sleep = sys.sleep }
  end
  package.preload["term.core"] = function()
    return { isatty = function(f) return f == io.stdout and sys.isatty("stdout") or false end }
  end
  package.preload["lfs"] = function()
    local function attributes(path, field)
      local st, err = sys.stat(path)
      if not st then return nil, tostring(err) end
      local a = { mode = st.type, size = st.size, modification = st.mtime, permissions = st.mode }
      if field then return a[field] end
      return a
    end
    local function currentdir()
      local p = io.popen("pwd")
      local d = p:read("l")
      p:close()
      return d
    end
    local function dir(path)
      local names = assert(sys.listdir(path))
      local i = 0
      names[#names + 1], names[#names + 2] = ".", ".."
      return function() i = i + 1 return names[i] end
    end
    -- busted "changes" to its --directory, "./" by default: only that is possible without C
    local function chdir(path)
      if path == "." or path == "./" or path == currentdir() then return true end
      return nil, "the static pgr's test stand-in for lfs cannot change directory to " .. path
    end
    return { attributes = attributes, symlinkattributes = attributes, currentdir = currentdir,
             dir = dir, chdir = chdir, _VERSION = "pgr test stand-in" }
  end
end
require("busted.runner")({ standalone = false })
