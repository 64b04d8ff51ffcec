-- Specs of how pgr connects to the database pods (pgr.security.pg_tls through restore.conn_params):
-- against men in the middle posing as PostgreSQL (spec/support/fakepg.py) no password ever leaves;
-- against real servers run as Spilo runs them (TLS only, md5 rules in pg_hba) the login works with
-- require + channel binding, verify-ca and verify-full with the site's CA; a role kept as md5 and a
-- server without TLS are refused with what to do, and let in only when the site says so, warned.
local pg = require "pgr.pg"
local restore = require "pgr.restore"
local security = require "pgr.security"
local sys = require "pgr.sys"
local pgserver = require "support.pgserver"
local shell = require "support.shell"

local ROOT = os.getenv("PGR_ROOT") or "."
local SECRET = "Pw-that-must-not-leak-42"

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- a ctx as the runbook gives restore.conn_params: the site, the service, a pod with an IP; the
-- cluster's postgresql object (opts.version: its PostgreSQL major, 15 unless given)
local function params(site, host, port, opts)
  opts = opts or {}
  local ctx = { site = site, svc = { port = port }, saved = {
    ["postgresql.json"] = { spec = { postgresql = { version = tostring(opts.version or 15) } } } } }
  opts.version = nil
  local pod = { status = { podIP = host } }
  opts = opts or {}
  opts.password = opts.password or SECRET
  return restore.conn_params(ctx, pod, opts)
end

local function connect(site, host, port, opts)
  local c, err = pg.connect(params(site, host, port, opts))
  if not c then return nil, security.pg_hint(err) end
  return c
end

describe("connections to the database pods", function()
  local dir, fakes, tls, plain = nil, {}, nil, nil

  local function fake(mode, addr)
    local log = ("%s/%s-%s.log"):format(dir, mode, addr)
    local out = ("%s/%s-%s.out"):format(dir, mode, addr)
    local pid = shell.capture(("python3 %s/spec/support/fakepg.py %s %d %s %s %s/fake.crt %s/fake.key > %s 2>&1 & echo $!")
      :format(ROOT, addr, sys.getpid(), mode, log, dir, dir, out)):match("%d+")
    local port
    for _ = 1, 600 do -- 30 s
      port = read(out):match("port=(%d+)")
      if port then break end
      sys.sleep(0.05)
    end
    assert(port, "fakepg " .. mode .. " did not start: " .. read(out))
    fakes[#fakes + 1] = pid
    return { port = port, log = log, addr = addr }
  end

  setup(function()
    dir = shell.capture("mktemp -d /tmp/pgr-pgtls.XXXXXX"):gsub("%s+$", "")
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s/fake.key "
      .. "-out %s/fake.crt -days 1 -subj /CN=127.21.7.3 >/dev/null 2>&1"):format(dir, dir)))
    tls = pgserver.start { addr = "127.21.7.1", tls = true }
    plain = pgserver.start { addr = "127.21.7.2" }
    -- a role whose password is kept as md5, as on PostgreSQL 13 and older (md5 rules in pg_hba)
    assert(os.execute(("psql -X -q -h %s -p %d -U postgres -d postgres -c \"SET password_encryption = 'md5'; "
      .. "CREATE ROLE md5user LOGIN PASSWORD 'md5-Pw'\" >/dev/null"):format(tls.dir, tls.port)))
  end)

  teardown(function()
    for _, pid in ipairs(fakes) do os.execute("kill " .. pid .. " 2>/dev/null") end
    if tls then tls.stop() end
    if plain then plain.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  before_each(function() security.reset() end)

  it("a man in the middle that refuses TLS and asks for the password in clear never receives it", function()
    local m = fake("notls", "127.21.7.3")
    local c, err = connect({ postgres = { sslmode = "require" } }, m.addr, m.port)
    assert.is_nil(c)
    assert.matches("does not support SSL", err.message, 1, true)
    assert.matches("pgr sent no password", err.message, 1, true)
    assert.matches("ssl-request", read(m.log), 1, true)
    assert.is_nil(read(m.log):find("password", 1, true))
    assert.is_nil(read(m.log):find(SECRET, 1, true))
    -- the fallback a site may ask for is what the man in the middle waits for: it is warned about
    c = connect({ postgres = { sslmode = "prefer" } }, m.addr, m.port, { password = "fallback-pw" })
    assert.is_nil(c)
    assert.matches("password fallback-pw", read(m.log), 1, true)
    assert.matches("PostgreSQL connections to the database pods may go without TLS (postgres.sslmode = \"prefer\"",
      security.notices()[1], 1, true)
    assert.is_nil(read(m.log):find(SECRET, 1, true))
  end)

  it("with the default settings (no postgres table in the site file), no man in the middle gets a password",
    function()
      local defaults = assert(require("pgr.site").load("/dev/null"))
      for _, mode in ipairs { "notls", "tls-cleartext", "tls-md5" } do
        local m = fake(mode, "127.21.7.5")
        local c = connect(defaults, m.addr, m.port)
        assert.is_nil(c)
        assert.is_nil(read(m.log):find("password", 1, true), mode .. ": " .. read(m.log))
      end
      local p = params(defaults, tls.host, tls.port)
      assert.equals("require", p.sslmode)
      assert.equals("require", p.channel_binding)
      local c = assert(connect(defaults, tls.host, tls.port, { password = tls.password }))
      c:close()
      assert.same({}, security.notices())
    end)

  it("over TLS it cannot check, a cleartext or md5 request gets no password: only SCRAM with channel binding",
    function()
      for _, mode in ipairs { "tls-cleartext", "tls-md5" } do
        local m = fake(mode, "127.21.7.3")
        local c, err = connect({ postgres = { sslmode = "require" } }, m.addr, m.port)
        assert.is_nil(c)
        assert.matches("channel binding", err.message, 1, true)
        assert.matches('postgres.channel_binding = "prefer"', err.message, 1, true)
        local log = read(m.log)
        assert.matches("tls\nstartup user=postgres\n", log, 1, true)
        assert.is_nil(log:find("password", 1, true), mode .. ": " .. log)
      end
    end)

  it("logs in to Spilo's TLS-only server with require and channel binding, warning of nothing", function()
    local c = assert(connect({ postgres = { sslmode = "require" } }, tls.host, tls.port, { password = tls.password }))
    local rows = assert(c:query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    assert.is_true(rows[1].ssl)
    c:close()
    local p = params({ postgres = { sslmode = "require" } }, tls.host, tls.port)
    assert.equals("require", p.sslmode)
    assert.equals("require", p.channel_binding)
    assert.same({}, security.notices())
  end)

  it("verifies the server with the CA the site names: verify-ca and verify-full; another CA is refused", function()
    for _, mode in ipairs { "verify-ca", "verify-full" } do
      local c = assert(connect({ postgres = { sslmode = mode, sslrootcert = tls.ca } }, tls.host, tls.port,
        { password = tls.password }))
      c:close()
    end
    local c, err = connect({ postgres = { sslmode = "verify-ca", sslrootcert = dir .. "/fake.crt" } }, tls.host,
      tls.port, { password = tls.password })
    assert.is_nil(c)
    assert.matches("certificate verify failed", err.message, 1, true)
    assert.same({}, security.notices())
  end)

  it("refuses a role kept as md5 over unchecked TLS, saying what to do; the site's prefer lets it in, warned", function()
    local c, err = connect({ postgres = { sslmode = "require" } }, tls.host, tls.port, { user = "md5user", password = "md5-Pw" })
    assert.is_nil(c)
    assert.matches("channel binding", err.message, 1, true)
    assert.matches("verify-ca", err.message, 1, true)
    -- with the pods' CA, channel binding is not needed: the server is authenticated by TLS
    c = assert(connect({ postgres = { sslmode = "verify-ca", sslrootcert = tls.ca } }, tls.host, tls.port,
      { user = "md5user", password = "md5-Pw" }))
    c:close()
    assert.same({}, security.notices())
    c = assert(connect({ postgres = { sslmode = "require", channel_binding = "prefer" } }, tls.host, tls.port,
      { user = "md5user", password = "md5-Pw" }))
    c:close()
    assert.matches('go without channel binding (postgres.channel_binding = "prefer" in the site file)',
      security.notices()[1], 1, true)
  end)

  it("asks for channel binding only where the cluster keeps SCRAM verifiers (PostgreSQL 14+)", function()
    local site = { postgres = { sslmode = "require" } }
    assert.equals("require", params(site, tls.host, tls.port, { version = 14 }).channel_binding)
    assert.same({}, security.notices())
    -- a PostgreSQL 13 cluster keeps md5 passwords: no SCRAM, so no channel binding, said on every run
    assert.equals("prefer", params(site, tls.host, tls.port, { version = 13 }).channel_binding)
    local c = assert(connect(site, tls.host, tls.port, { user = "md5user", password = "md5-Pw", version = 13 }))
    c:close()
    assert.matches("the cluster keeps md5 passwords (PostgreSQL 13 or older)", security.notices()[1], 1, true)
    -- TLS still required there: the man in the middle without TLS gets nothing
    local m = fake("notls", "127.21.7.6")
    assert.is_nil(connect(site, m.addr, m.port, { version = 13 }))
    assert.is_nil(read(m.log):find("password", 1, true))
  end)

  it("refuses a server without TLS unless the site says so", function()
    local c, err = connect({ postgres = { sslmode = "require" } }, plain.host, plain.port, { password = plain.password })
    assert.is_nil(c)
    assert.matches("does not support SSL", err.message, 1, true)
    c = assert(connect({ postgres = { sslmode = "prefer" } }, plain.host, plain.port, { password = plain.password }))
    c:close()
    assert.equals(1, #security.notices())
  end)

  it("a dump's \\connect may change the database, never where the loader's password goes", function()
    local m = fake("notls", "127.21.7.4")
    local path = dir .. "/moved.sql"
    local f = assert(io.open(path, "w"))
    f:write(("SELECT 1;\n\\connect -reuse-previous=on \"dbname='postgres' host=%s port=%s sslmode=disable\"\n"
      .. "SELECT 2;\n--\n-- PostgreSQL database cluster dump complete\n--\n"):format(m.addr, m.port))
    f:close()
    local p = params({ postgres = { sslmode = "require" } }, tls.host, tls.port, { password = tls.password })
    local r, err = pg.restore(p, path)
    assert.is_nil(r)
    assert.equals("connect", err.code)
    assert.matches("\\connect at line 2 sets host: a dump may change the database or the user, never the server",
      err.message, 1, true)
    assert.equals("", read(m.log))
    f = assert(io.open(path, "w"))
    f:write(("\\connect postgres postgres %s %s\n"):format(m.addr, m.port))
    f:close()
    r, err = pg.restore(p, path, { allow_truncated = true })
    assert.is_nil(r)
    assert.matches("names the host " .. m.addr, err.message, 1, true)
    assert.equals("", read(m.log))
  end)
end)
