-- pgr version: pgr's own version, whether the binary is static, and the library versions it runs
-- with (read at run time; for the static binary also the Debian sources they were built from).
local sys = require "pgr.sys"

local M = {
  summary = "print pgr's version, whether it is static, and the versions of its libraries",
  usage = "Usage: pgr version",
  help = [[
The first line says whether this binary is static (one file, musl, runs on any x86_64 Linux:
SUSE, RHEL, Debian) or linked against this system's shared libraries (glibc). Then one line per
library, as each reports itself at run time; a static binary also names the Debian 12 source
packages its libraries were built from.]],
}

function M.line()
  local v = sys.versions()
  return ("pgr %s (%s, %s)"):format(v.pgr, v.static and "static" or "dynamic", v.libc)
end

function M.run()
  local v = sys.versions()
  print(M.line())
  local rows = {
    { "Lua", v.lua }, { "libcurl", v.libcurl .. " (" .. v.tls .. ")" }, { "libpq", v.libpq },
    { "libyaml", v.libyaml }, { "cJSON", v.cjson }, { "expat", v.expat }, { "zlib", v.zlib },
    { "OpenSSL", v.openssl }, { "readline", v.readline },
  }
  if v.ncurses then rows[#rows + 1] = { "ncurses", v.ncurses } end
  for _, r in ipairs(rows) do print(("  %-9s %s"):format(r[1], r[2])) end
  if v.sources then
    print("  built from Debian 12 source packages:")
    -- one package per line, as build.sh lists them
    for src in v.sources:gmatch("[^,]+") do print("    " .. src:gsub("^%s+", "")) end
  end
  return 0
end

return M
