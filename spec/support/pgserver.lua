-- spec/support/pgserver.lua: a throwaway PostgreSQL server for specs (through tests/lib/pgserver.sh):
-- runs as the postgres OS user on a loopback address, scram auth over TCP, trust on its unix socket.
--   local pgserver = require "support.pgserver"
--   local srv = pgserver.start { addr = "127.21.3.1" }   -- port = free one unless given; tls = true:
--                                                         as Spilo runs (TLS only), srv.ca its CA
--   srv.host, srv.port, srv.dir, srv.password, srv.conninfo, srv.params (table for pg.connect)
--   srv.stop()                                            -- also safe to call twice
-- The initdb template is made once and cached, so a server starts in well under a second.
local M = {}

local ROOT = os.getenv("PGR_ROOT") or "."

local shell = require "support.shell"
local sh_quote, capture = shell.quote, shell.capture

M.PASSWORD = "pgr-test-secret"

function M.start(opts)
  opts = opts or {}
  local dir = opts.dir
  if not dir then
    dir = capture("mktemp -d /tmp/pgr-pgserver.XXXXXX"):gsub("%s+$", "")
  end
  local addr = opts.addr or "127.0.0.1"
  local password = opts.password or M.PASSWORD
  local out, code = capture(("PGSERVER_TLS=%d PGSERVER_PASSWORD=%s %s/tests/lib/pgserver.sh up %s %s %s"):format(
    opts.tls and 1 or 0, sh_quote(password), ROOT, sh_quote(dir), sh_quote(addr), tostring(opts.port or 0)))
  local port = out:match("port=(%d+)")
  if code ~= 0 or not port then
    capture(("%s/tests/lib/pgserver.sh down %s"):format(ROOT, sh_quote(dir)))
    error("pgserver: could not start PostgreSQL in " .. dir .. ":\n" .. out, 2)
  end
  local srv = {
    host = addr, port = tonumber(port), dir = dir, password = password,
    conninfo = ("host=%s port=%s user=postgres password=%s dbname=postgres"):format(addr, port, password),
  }
  srv.params = { host = addr, port = port, user = "postgres", password = password, dbname = "postgres" }
  -- opts.tls: Spilo's rules (TLS only, md5 in pg_hba) and the CA that signed the server's certificate
  if opts.tls then srv.ca = dir .. "/tls/ca.crt" end
  local stopped = false
  function srv.stop()
    if stopped then return end
    stopped = true
    capture(("%s/tests/lib/pgserver.sh down %s"):format(ROOT, sh_quote(dir)))
  end
  return srv
end

return M
