-- spec/support/shell.lua: the two shell helpers every spec support module needs: quoting a word
-- for /bin/sh, and running a command line for its output and exit status.
local M = {}

-- quote(s) -> 's' with embedded quotes escaped, safe as one shell word
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- capture(cmd) -> combined stdout+stderr, exit status (0 on success)
function M.capture(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

return M
