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
-- security.pg_tls(site, svc, scram) -> { sslmode=, channel_binding=, sslrootcert= } for the database pods:
--   the site's postgres table over the defaults; what weakens it is warned about
-- security.pg_hint(err) -> err with what to do when the policy refused a server
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

-- PostgreSQL connections to the database pods. Spilo always serves TLS, so pgr asks for it; over
-- TLS whose certificate is not checked (require), the password is only sent inside SCRAM with
-- channel binding, which a man in the middle cannot relay: no cleartext or md5 password goes out.
-- verify-ca / verify-full (with the site's sslrootcert) authenticate the server themselves.
local WEAK = { disable = true, allow = true, prefer = true }
local VERIFIED = { ["verify-ca"] = true, ["verify-full"] = true }

-- scram: whether the cluster keeps SCRAM verifiers (PostgreSQL 14+, or its password_encryption), as
-- its postgresql object says (false: md5, where no login can use channel binding; nil: unknown, taken
-- as SCRAM, the safe side).
function M.pg_tls(site, svc, scram)
  local p = (type(site) == "table" and type(site.postgres) == "table") and site.postgres or {}
  local sslmode = p.sslmode or (svc and svc.sslmode) or "require"
  local cb = p.channel_binding or ((sslmode == "require" and scram ~= false) and "require" or "prefer")
  local where = site and site.path or "the site file"
  if WEAK[sslmode] then
    M.insecure("pg sslmode " .. sslmode, ("PostgreSQL connections to the database pods may go without TLS "
      .. "(postgres.sslmode = %q in %s): a man in the middle can ask for the passwords in clear; Spilo "
      .. "always serves TLS (use \"require\", or \"verify-ca\" with postgres.sslrootcert)"):format(sslmode, where))
  elseif cb ~= "require" and not VERIFIED[sslmode] then
    local why = p.channel_binding and ("postgres.channel_binding = %q in %s"):format(cb, where)
      or "the cluster keeps md5 passwords (PostgreSQL 13 or older): SCRAM, and so channel binding, is not possible"
    M.insecure("pg channel_binding " .. cb, ("PostgreSQL logins to the database pods go without channel "
      .. "binding (%s) over TLS whose certificate is not checked: a man in the middle posing as the pod "
      .. "can take or relay them (give the pods' CA: postgres.sslmode = \"verify-ca\")"):format(why))
  end
  return { sslmode = sslmode, channel_binding = cb, sslrootcert = p.sslrootcert }
end

function M.pg_hint(err)
  if type(err) ~= "table" or type(err.message) ~= "string" then return err end
  local m = err.message
  if m:find("channel binding", 1, true) then
    err.message = m .. " -- the server did not offer SCRAM with channel binding (a role kept as md5, "
      .. "e.g. restored from an older dump?), so pgr sent no password: give the site the pods' CA (postgres = { "
      .. "sslmode = \"verify-ca\", sslrootcert = PATH }), or accept that a man in the middle could relay "
      .. "the login with postgres.channel_binding = \"prefer\""
  elseif m:find("does not support SSL", 1, true) then
    err.message = m .. " -- Spilo always serves TLS: this may not be the database pod (a man in the "
      .. "middle?), and pgr sent no password. A site whose databases have no TLS sets postgres.sslmode = "
      .. "\"prefer\""
  end
  return err
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
