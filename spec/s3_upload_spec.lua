-- Specs of the streamed S3 upload (host/s3upload.c through pgr.s3.core's client:upload) against a real
-- S3 server (Ceph RADOS Gateway on loopback): parts in order whatever the write sizes, bytes equal,
-- parts retried through cut connections, and no object left behind by an abort, a failure, a
-- collected uploader or a kill -9.
local core = require "pgr.s3.core"
local sys = require "pgr.sys"
local s3server = require "support.s3server"

local BUCKET = "postgres-backup"
local MiB = 1024 * 1024

local function blob(n, seed)
  local parts, x, chunk = {}, seed or 7, {}
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    chunk[#chunk + 1] = string.char((x >> 16) & 255)
    if #chunk == 4096 or i == n then
      parts[#parts + 1] = table.concat(chunk)
      chunk = {}
    end
  end
  return table.concat(parts)
end

local function read_object(c, key)
  local r = assert(c:open(BUCKET, key))
  local parts = {}
  while true do
    local chunk, err = r:read(1 << 20)
    assert.is_nil(err)
    if not chunk then break end
    parts[#parts + 1] = chunk
  end
  r:close()
  return table.concat(parts)
end

local function keys(c, prefix)
  local list = assert(c:list(BUCKET, { prefix = prefix }))
  local out = {}
  for _, o in ipairs(list) do out[#out + 1] = o.key end
  return out
end

describe("pgr.s3 streamed upload against radosgw", function()
  local srv, c, data
  setup(function()
    srv = s3server.start()
    c = assert(core.client { endpoint = srv.endpoint, access_key = srv.access_key,
                             secret_key = srv.secret_key, region = srv.region })
    assert(c:create_bucket(BUCKET))
    -- 3 KiB of pseudo-random bytes repeated with a counter: every 64 KiB block differs
    local base = blob(3000, 11)
    local parts = {}
    for i = 1, 6000 do parts[i] = ("%08d"):format(i) .. base end
    data = table.concat(parts) -- 18.05 MB: three 5 MiB parts and a short last one
  end)
  teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  local function client(over)
    local o = { endpoint = srv.endpoint, access_key = srv.access_key, secret_key = srv.secret_key,
                region = srv.region }
    for k, v in pairs(over or {}) do o[k] = v end
    return assert(core.client(o))
  end

  it("streams writes of any size into parts and completes one object with exactly those bytes", function()
    local u = assert(c:upload(BUCKET, "pgr/stream.psql", { part_size = 5 * MiB }))
    assert.matches("%S", u.id)
    local pos = 1
    while pos <= #data do
      local n = math.random(1, 3 * MiB)
      assert(u:write(data:sub(pos, pos + n - 1)))
      pos = pos + n
    end
    assert.equal(#data, u.bytes)
    assert.same({}, keys(c, "pgr/stream")) -- nothing visible before it completes
    local res = assert(u:finish())
    assert.equal(#data, res.size)
    assert.equal(4, res.parts)
    assert.matches("^%x+%-4$", res.etag)
    local h = assert(c:head(BUCKET, "pgr/stream.psql"))
    assert.equal(#data, h.size)
    assert.is_true(read_object(c, "pgr/stream.psql") == data)
    local ok, err = u:write("more")
    assert.is_nil(ok)
    assert.equal("usage", err.code)
  end)

  it("uploads an empty object and a one-part object", function()
    local u = assert(c:upload(BUCKET, "pgr/empty"))
    assert.equal(0, assert(u:finish()).size)
    assert.equal(0, assert(c:head(BUCKET, "pgr/empty")).size)
    u = assert(c:upload(BUCKET, "pgr/small"))
    assert(u:write("select 1;\n"))
    assert.equal(1, assert(u:finish()).parts)
    assert.equal("select 1;\n", read_object(c, "pgr/small"))
  end)

  it("retries a part whose connection is cut mid-body; the object is whole", function()
    local proxy = srv.cutting_proxy(2 * MiB, 2, "upload")
    local cut = client { endpoint = proxy.endpoint }
    local u = assert(cut:upload(BUCKET, "pgr/retried.psql", { part_size = 5 * MiB }))
    for i = 1, #data, 1 << 20 do assert(u:write(data:sub(i, i + (1 << 20) - 1))) end
    local res = assert(u:finish())
    assert.equal(#data, res.size)
    assert.is_true(read_object(c, "pgr/retried.psql") == data)
    cut:close()
    proxy.stop()
  end)

  it("an upload that cannot get its parts through fails, aborted, and leaves no object", function()
    local proxy = srv.cutting_proxy(1 * MiB, 1000, "upload")
    local cut = client { endpoint = proxy.endpoint }
    local u = assert(cut:upload(BUCKET, "pgr/failed.psql", { part_size = 5 * MiB, attempts = 2 }))
    local ok, err
    for i = 1, #data, 1 << 20 do
      ok, err = u:write(data:sub(i, i + (1 << 20) - 1))
      if not ok then break end
    end
    if ok then ok, err = u:finish() end
    assert.is_nil(ok)
    assert.equal("transfer", err.code)
    assert(u:abort())
    assert.same({}, keys(c, "pgr/failed"))
    -- its parts are gone with it: the upload id is unknown now
    local gone, gerr = c:abort_upload(BUCKET, "pgr/failed.psql", u.id or "x")
    assert.is_nil(gone)
    assert.equal("NoSuchUpload", gerr.code)
    cut:close()
    proxy.stop()
  end)

  it("abort, and an uploader collected unfinished, leave no object", function()
    local u = assert(c:upload(BUCKET, "pgr/aborted.psql", { part_size = 5 * MiB }))
    assert(u:write(data))
    local id = u.id
    assert(u:abort())
    assert(u:abort()) -- twice is fine
    assert.same({}, keys(c, "pgr/aborted"))
    local gone, err = c:abort_upload(BUCKET, "pgr/aborted.psql", id)
    assert.is_nil(gone)
    assert.equal("NoSuchUpload", err.code)
    do
      local lost = assert(c:upload(BUCKET, "pgr/collected.psql"))
      assert(lost:write(data:sub(1, 6 * MiB)))
    end
    collectgarbage()
    collectgarbage()
    assert.same({}, keys(c, "pgr/collected"))
  end)

  it("a process killed -9 in the middle of an upload leaves no object in the bucket", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local c = assert(require("pgr.s3.core").client { endpoint = %q, access_key = %q, secret_key = %q, region = %q })
      local u = assert(c:upload(%q, "pgr/killed.psql", { part_size = 5 << 20 }))
      io.stdout:write(u.id, "\n") io.stdout:flush()
      local chunk = ("x"):rep(1 << 20)
      while true do assert(u:write(chunk)) if u.parts >= 2 then io.stdout:write("parts\n") io.stdout:flush() end end
    ]]):format(srv.endpoint, srv.access_key, srv.secret_key, srv.region, BUCKET))
    f:close()
    local out = os.tmpname()
    local pid = io.popen(("%s %s > %s 2>&1 & echo $!"):format(os.getenv("PGR") or "./pgr", script, out)):read("l")
    local deadline, text = sys.now() + 60, ""
    repeat
      sys.sleep(0.1)
      text = io.open(out):read("a")
    until text:find("parts\n", 1, true) or sys.now() > deadline
    assert.truthy(text:find("parts\n", 1, true), text)
    os.execute("kill -9 " .. pid)
    sys.sleep(0.5)
    assert.same({}, keys(c, "pgr/killed"))
    -- the parts it sent stay in an unfinished upload (invisible) until that upload is aborted
    assert(c:abort_upload(BUCKET, "pgr/killed.psql", text:match("^(%S+)\n")))
    os.remove(script)
    os.remove(out)
  end)
end)
