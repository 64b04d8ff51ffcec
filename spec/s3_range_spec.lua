-- Specs of client:read_range against radosgw: the bytes asked for and no more, pinned to the listed
-- object by its ETag, a range past the end refused, a cut connection resumed.
local core = require "pgr.s3.core"
local s3server = require "support.s3server"

local BUCKET = "range-spec"

describe("client:read_range against radosgw", function()
  local srv, c, body, etag
  setup(function()
    srv = s3server.start { addr = "127.22.0.3" }
    c = assert(core.client { endpoint = srv.endpoint, access_key = srv.access_key,
                             secret_key = srv.secret_key, region = srv.region })
    assert(c:create_bucket(BUCKET))
    local lines = {}
    for i = 1, 20000 do lines[i] = ("INSERT INTO t VALUES (%d);"):format(i) end
    lines[#lines + 1] = "--\n-- PostgreSQL database cluster dump complete\n--\n"
    body = table.concat(lines, "\n")
    assert(c:put(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", body))
    etag = assert(c:head(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql")).etag
  end)
  teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  it("reads the object's tail, exactly those bytes", function()
    local tail = assert(c:read_range(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", #body - 100, #body, { etag = etag }))
    assert.are.equal(100, #tail)
    assert.are.equal(body:sub(-100), tail)
    assert.truthy(tail:find("cluster dump complete", 1, true))
  end)

  it("reads a range in the middle, and an empty range without asking the server", function()
    assert.are.equal(body:sub(1001, 1500), assert(c:read_range(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", 1000, 1500)))
    assert.are.equal("", assert(c:read_range(BUCKET, "no-such-key", 5, 5)))
  end)

  it("refuses an object that is not the one listed (another ETag)", function()
    local s, err = c:read_range(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", 0, 10,
      { etag = "0123456789abcdef0123456789abcdef" })
    assert.is_nil(s)
    assert.are.equal(412, err.status)
  end)

  it("says so when the object is shorter than the range, or absent", function()
    local s, err = c:read_range(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", #body - 10, #body + 10)
    assert.is_nil(s)
    assert.truthy(err)
    s, err = c:read_range(BUCKET, "missing.psql", 0, 10)
    assert.is_nil(s)
    assert.are.equal("NoSuchKey", err.code)
  end)

  it("resumes a connection cut in the middle of the range", function()
    local p = srv.cutting_proxy(3000, 1)
    local pc = assert(core.client { endpoint = p.endpoint, access_key = srv.access_key,
                                    secret_key = srv.secret_key, region = srv.region })
    local got = pc:read_range(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", 0, 200000, { etag = etag })
    pc:close()
    p.stop()
    assert.are.equal(body:sub(1, 200000), got)
  end)

  it("raises on misuse", function()
    assert.has_error(function() c:read_range(BUCKET, "k", -1, 10) end)
    assert.has_error(function() c:read_range(BUCKET, "k", 10, 5) end)
    assert.has_error(function() c:read_range(BUCKET, "k", 0, 64 * 1024 * 1024) end)
  end)
end)
