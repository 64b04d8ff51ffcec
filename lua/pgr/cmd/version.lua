-- pgr version: pgr's own version and the library versions it runs with (read at run time).
local sys = require "pgr.sys"

local M = {
  summary = "print pgr's version and the versions of Lua, libcurl, libpq, libyaml, cJSON",
  usage = "Usage: pgr version",
}

function M.line()
  return "pgr " .. sys.versions().pgr
end

function M.run()
  local v = sys.versions()
  print(M.line())
  local rows = {
    { "Lua", v.lua }, { "libcurl", v.libcurl .. " (" .. v.tls .. ")" }, { "libpq", v.libpq },
    { "libyaml", v.libyaml }, { "cJSON", v.cjson }, { "expat", v.expat }, { "zlib", v.zlib },
    { "OpenSSL", v.openssl },
  }
  for _, r in ipairs(rows) do print(("  %-8s %s"):format(r[1], r[2])) end
  return 0
end

return M
