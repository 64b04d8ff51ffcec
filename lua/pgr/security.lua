-- pgr.security: what pgr refuses to do silently. Every connection whose TLS verification is off, or
-- that goes over plain HTTP, is said once per process as a warning (pgr.ui) and kept in a list that
-- `pgr status` and the REPL can show.
--
-- security.insecure(key, text)          warns once for key; recorded in security.notices()
-- security.check_endpoint(url, what, opts) -> warns for http:// URLs and opts.insecure; returns url
--   opts: { insecure = bool, where = "s3.insecure in /etc/pgr/site.lua", secret = "what goes in clear" }
-- security.notices() -> { text, ... }   what was warned about in this process, in order
-- security.CHILD_ENV_DROP                 words of variable names a child process (ssh, a site command)
--   never inherits: pgr's own credentials stay with pgr
-- security.secret_file(path, what) -> true | nil, err   a file of secrets pgr reads: root's or yours,
--   readable and writable by no one else (0600 or less), as libpq asks of ~/.pgpass
local errors = require "pgr.errors"

local M = {}

M.CHILD_ENV_DROP = { "PASSWORD", "PASSWD", "PGPASS", "SECRET", "TOKEN", "CREDENTIAL", "ACCESS_KEY",
                     "API_KEY", "PRIVATE_KEY" }

local seen, list = {}, {}

function M.insecure(key, text)
  if seen[key] then return end
  seen[key] = true
  list[#list + 1] = text
  local ok, ui = pcall(require, "pgr.ui")
  if ok then ui.warn(text) else io.stderr:write("warning: ", text, "\n") end
end

function M.check_endpoint(url, what, opts)
  opts = opts or {}
  if type(url) ~= "string" then return url end
  local origin = url:match("^(%a[%w+.-]*://[^/?#]+)") or url
  -- never the path or the query of a URL (a token may be there); user info neither
  origin = origin:gsub("//[^/@]*@", "//")
  if url:lower():match("^http://") then
    M.insecure("http " .. what .. " " .. origin, ("%s %s is plain HTTP: what goes over it (%s) is not encrypted and "
      .. "the server is not authenticated (use an https:// URL)"):format(what, origin, opts.secret or "everything"))
  end
  if opts.insecure then
    M.insecure("insecure " .. what .. " " .. origin, ("TLS verification of %s %s is OFF (%s): anyone on the path "
      .. "can pose as it; give its CA instead"):format(what, origin, opts.where or "insecure"))
  end
  return url
end

function M.secret_file(path, what)
  local st, err = require("pgr.sys").stat(path)
  if not st then return nil, errors.new("io", ("cannot read %s %s: %s"):format(what, path, err.message)) end
  local uid = require("pgr.sys").geteuid()
  if st.uid ~= 0 and st.uid ~= uid then
    return nil, errors.new("untrusted", ("refusing %s %s: it is owned by uid %d, neither root nor you (chown root %s)")
      :format(what, path, st.uid, path))
  end
  if st.mode & 63 ~= 0 then -- 0077
    return nil, errors.new("untrusted", ("refusing %s %s: it holds secrets but is open to %s (mode %04o): chmod 0600 %s")
      :format(what, path, st.mode & 7 ~= 0 and "others" or "its group", st.mode, path))
  end
  return true
end

function M.notices()
  local out = {}
  for i, t in ipairs(list) do out[i] = t end
  return out
end

-- for the specs: forget what was said
function M.reset()
  seen, list = {}, {}
end

return M
