-- Specs of pg.connect_all against a real PostgreSQL server: logins side by side, each failure with its
-- own error, a deadline that cuts a silent server, misuse raised, connections usable and closable.
local pg = require "pgr.pg"
local pgserver = require "support.pgserver"

describe("pg.connect_all", function()
  local srv
  setup(function() srv = pgserver.start { addr = "127.21.4.1" } end)
  teardown(function() if srv then srv.stop() end end)

  local function params(over)
    local p = {}
    for k, v in pairs(srv.params) do p[k] = v end
    for k, v in pairs(over or {}) do p[k] = v end
    return p
  end

  it("opens every connection of the list and keeps the order", function()
    local conns, errs = pg.connect_all({ params(), params { application_name = "second" }, srv.conninfo })
    assert.are.equal(3, #conns)
    for i = 1, 3 do assert.is_nil(errs[i]) end
    local rows = assert(conns[2]:query("SELECT current_setting('application_name') AS a"))
    assert.are.equal("second", rows[1].a)
    for _, c in ipairs(conns) do c:close() end
  end)

  it("gives false and the server's reason for each login that fails, never the password", function()
    local conns, errs = pg.connect_all({ params { password = "wrong-one" }, params(), params { user = "nobody" } })
    assert.is_false(conns[1])
    assert.are.equal("connect", errs[1].code)
    assert.truthy(tostring(errs[1]):find("password authentication failed", 1, true))
    assert.falsy(tostring(errs[1]):find("wrong-one", 1, true))
    assert.truthy(conns[2])
    assert.is_nil(errs[2])
    assert.are.equal(1, conns[2]:query("SELECT 1 AS one")[1].one)
    assert.is_false(conns[3])
    conns[2]:close()
  end)

  it("cuts a server that never answers at the deadline, the others unaffected", function()
    -- a listener that accepts TCP but never speaks: python holds it open while we connect
    local port_file = os.tmpname()
    local h = io.popen(("python3 -c 'import socket,time,sys\ns=socket.socket();s.bind((\"127.21.4.2\",0));s.listen(5)\n"
      .. "open(sys.argv[1],\"w\").write(str(s.getsockname()[1]));time.sleep(30)' %s & echo $!"):format(port_file))
    local pid = h:read("l")
    h:close()
    local port
    for _ = 1, 300 do
      local f = io.open(port_file)
      port = f and f:read("a")
      if f then f:close() end
      if port and port ~= "" then break end
      require("pgr.sys").sleep(0.05)
    end
    local conns, errs = pg.connect_all({ params { host = "127.21.4.2", port = port }, params() }, { timeout = 1 })
    os.execute("kill " .. pid)
    os.remove(port_file)
    assert.is_false(conns[1])
    assert.are.equal("timeout", errs[1].code)
    assert.truthy(conns[2])
    conns[2]:close()
  end)

  it("an empty list is no work; bad arguments are misuse", function()
    local conns, errs = pg.connect_all({})
    assert.are.same({}, conns)
    assert.are.same({}, errs)
    assert.has_error(function() pg.connect_all("host=x") end)
    assert.has_error(function() pg.connect_all({ 42 }) end)
    assert.has_error(function() pg.connect_all({}, { timeout = -1 }) end)
  end)
end)
