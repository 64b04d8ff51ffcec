-- spec/support/s3server.lua: a real S3 server for specs — Ceph's RADOS Gateway, single node on
-- loopback (tests/s3/rgw.sh) — and TCP relays in front of it that cut connections mid-body.
--   local s3server = require "support.s3server"
--   local srv = s3server.start()          -- srv.endpoint, srv.access_key, srv.secret_key, srv.region
--   local p = srv.cutting_proxy(after, cuts)   -- p.endpoint: the first `cuts` connections die after
--                                              -- `after` bytes; p.stop()
--   srv.cutting_proxy(after, cuts, "unranged")  -- and after a cut, 206 answers arrive as 200 without
--                                              -- Content-Range (a proxy that mangles ranges)
--   local l = srv.link_proxy(rate)        -- l.endpoint: a link of `rate` bytes/s towards the client
--                                         -- (nil: unlimited, 0: stalled); l.set_rate(r);
--                                         -- l.stats() -> {down=bytes relayed, conns=, open=}; l.stop()
--   srv.stop()                            -- daemons gone, directory removed; safe twice
-- The cluster also dies with this process (rgw.sh watches our pid), so a crashed spec leaves nothing.
local sys = require "pgr.sys"

local M = {}

local ROOT = os.getenv("PGR_ROOT") or "."

local shell = require "support.shell"
local sh_quote, capture = shell.quote, shell.capture

M.ADDR = "127.22.0.1"

function M.start(opts)
  opts = opts or {}
  local dir = capture("mktemp -d /tmp/pgr-rgw.XXXXXX"):gsub("%s+$", "")
  local env = ("RGW_ADDR=%s RGW_MEMSTORE_BYTES=%d"):format(opts.addr or M.ADDR, opts.memstore_bytes or 1073741824)
  local out, code = capture(("%s %s/tests/s3/rgw.sh start %s %d"):format(env, ROOT, sh_quote(dir), sys.getpid()))
  local vars = {}
  for k, v in out:gmatch("(S3_[%w_]+)=(%S+)") do vars[k] = v end
  if code ~= 0 or not vars.S3_ENDPOINT then
    capture(("%s/tests/s3/rgw.sh stop %s"):format(ROOT, sh_quote(dir)))
    error("s3server: could not start radosgw:\n" .. out, 2)
  end
  local srv = {
    dir = dir, endpoint = vars.S3_ENDPOINT, access_key = vars.S3_ACCESS_KEY,
    secret_key = vars.S3_SECRET_KEY, region = vars.S3_REGION,
  }
  srv.host, srv.port = srv.endpoint:match("^http://([^:/]+):(%d+)")
  local proxies = {}
  function srv.cutting_proxy(after, cuts, mode)
    local pdir = capture("mktemp -d /tmp/pgr-cutproxy.XXXXXX"):gsub("%s+$", "")
    local pid = capture(("python3 %s/tests/s3/cutproxy.py %s %s %s %d %d %d %s > %s/out 2>&1 & echo $!"):format(
      ROOT, M.ADDR, srv.host, srv.port, after, cuts, sys.getpid(), mode or "", sh_quote(pdir))):match("%d+")
    local port
    for _ = 1, 600 do -- 30 s
      local f = io.open(pdir .. "/out")
      local text = f and f:read("a") or ""
      if f then f:close() end
      port = text:match("port=(%d+)")
      if port then break end
      sys.sleep(0.05)
    end
    local p = { pid = pid, endpoint = ("http://%s:%s"):format(M.ADDR, port or "0") }
    function p.stop()
      if p.stopped then return end
      p.stopped = true
      os.execute(("kill %s 2>/dev/null; rm -rf %s"):format(pid, sh_quote(pdir)))
    end
    proxies[#proxies + 1] = p
    if not port then
      p.stop()
      error("s3server: the cutting proxy did not start", 2)
    end
    return p
  end
  function srv.link_proxy(rate)
    local pdir = capture("mktemp -d /tmp/pgr-linkproxy.XXXXXX"):gsub("%s+$", "")
    local pid = capture(("python3 %s/tests/s3/linkproxy.py %s %s %s %d %s %s > %s/out 2>&1 & echo $!"):format(
      ROOT, M.ADDR, srv.host, srv.port, sys.getpid(), sh_quote(pdir), rate and tostring(rate) or "-",
      sh_quote(pdir))):match("%d+")
    local port
    for _ = 1, 100 do
      local f = io.open(pdir .. "/out")
      local text = f and f:read("a") or ""
      if f then f:close() end
      port = text:match("port=(%d+)")
      if port then break end
      sys.sleep(0.05)
    end
    local p = { pid = pid, port = tonumber(port), endpoint = ("http://%s:%s"):format(M.ADDR, port or "0") }
    function p.set_rate(r)
      local f = assert(io.open(pdir .. "/rate.tmp", "w"))
      f:write(r and tostring(r) or "")
      f:close()
      assert(os.rename(pdir .. "/rate.tmp", pdir .. "/rate"))
    end
    function p.stats()
      local f = io.open(pdir .. "/stats")
      local text = f and f:read("a") or ""
      if f then f:close() end
      return { down = tonumber(text:match("down=(%d+)")) or 0, conns = tonumber(text:match("conns=(%d+)")) or 0,
               open = tonumber(text:match("open=(%d+)")) or 0 }
    end
    function p.stop()
      if p.stopped then return end
      p.stopped = true
      os.execute(("kill %s 2>/dev/null; rm -rf %s"):format(pid, sh_quote(pdir)))
    end
    proxies[#proxies + 1] = p
    if not port then
      p.stop()
      error("s3server: the link proxy did not start", 2)
    end
    return p
  end
  local stopped = false
  function srv.stop()
    if stopped then return end
    stopped = true
    for _, p in ipairs(proxies) do p.stop() end
    capture(("%s/tests/s3/rgw.sh stop %s"):format(ROOT, sh_quote(dir)))
  end
  return srv
end

return M
