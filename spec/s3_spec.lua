-- Specs of pgr.s3.core and pgr.s3 against a real S3 server (Ceph RADOS Gateway on loopback):
-- SigV4 accepted and a wrong secret refused, pagination, odd keys, S3 errors, downloads that
-- survive cut connections, backups pairing, and a restore streamed from S3 equal to one from a file.
local core = require "pgr.s3.core"
local s3 = require "pgr.s3"
local sys = require "pgr.sys"
local s3server = require "support.s3server"

local BUCKET = "postgres-backup"

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Deterministic pseudo-random bytes (no two 64 KiB blocks alike, so a misplaced resume shows).
local function blob(n, seed)
  local parts, x = {}, seed or 7
  local chunk = {}
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

-- The threads of this process, as the kernel counts them.
local function threads()
  local f = assert(io.open("/proc/self/status"))
  local n = tonumber(f:read("a"):match("Threads:%s*(%d+)"))
  f:close()
  return n
end

-- Established TCP connections of this process towards port (its sockets, matched by inode).
local function connections_to(port)
  local mine = {}
  local p = assert(io.popen("ls -l /proc/" .. sys.getpid() .. "/fd 2>/dev/null"))
  for inode in p:read("a"):gmatch("socket:%[(%d+)%]") do mine[inode] = true end
  p:close()
  local n = 0
  for _, path in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local f = io.open(path)
    if f then
      for line in f:lines() do
        local rport, st, inode = line:match("^%s*%d+:%s+%x+:%x+%s+%x+:(%x+)%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%d+%s+%d+%s+(%d+)")
        if rport and tonumber(rport, 16) == port and st == "01" and mine[inode] then n = n + 1 end
      end
      f:close()
    end
  end
  return n
end

-- Polls cond until it holds, for at most 30 s (the machine may be busy): its last value.
local function eventually(cond)
  local v
  for _ = 1, 300 do
    v = cond()
    if v then return v end
    sys.sleep(0.1)
  end
  return v
end

local function md5_of_file(path)
  local p = assert(io.popen("md5sum " .. path))
  local out = p:read("a")
  p:close()
  return out:match("^(%x+)")
end

describe("pgr.s3 against radosgw", function()
  local srv, c, tmpdir
  setup(function()
    srv = s3server.start()
    c = assert(core.client { endpoint = srv.endpoint, access_key = srv.access_key,
                             secret_key = srv.secret_key, region = srv.region })
    assert(c:create_bucket(BUCKET))
    tmpdir = os.tmpname()
    os.remove(tmpdir)
    assert(sys.mkdir(tmpdir))
  end)
  teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
    if tmpdir then os.execute("rm -rf '" .. tmpdir .. "'") end
  end)

  local function client(over)
    local o = { endpoint = srv.endpoint, access_key = srv.access_key, secret_key = srv.secret_key,
                region = srv.region }
    for k, v in pairs(over or {}) do o[k] = v end
    return assert(core.client(o))
  end

  describe("signed requests", function()
    it("stores and reads back an object whose key has colons, spaces and a plus", function()
      local key = "odd keys/spire-postgres-2022-09-14T03:10:04 copy+1.psql"
      assert(c:put(BUCKET, key, "select 1;\n"))
      local h = assert(c:head(BUCKET, key))
      assert.equals(10, h.size)
      assert.equals(key, h.key)
      assert.matches("^%x+$", h.etag)
      local listed = assert(c:list(BUCKET, { prefix = "odd keys/" }))
      assert.equals(1, #listed)
      assert.equals(key, listed[1].key)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", listed[1].last_modified)
      local r = assert(c:open(BUCKET, key))
      assert.equals("select 1;\n", r:read(100))
      assert.is_nil(r:read(100))
      assert.is_true(r.md5_checked)
      r:close()
      r:close() -- twice is fine
    end)

    it("refuses a wrong secret with SignatureDoesNotMatch, naming the source but not the secret", function()
      local bad = client { secret_key = "not-the-secret-key", source = "environment (AWS_ACCESS_KEY_ID)" }
      local list, err = bad:list(BUCKET)
      assert.is_nil(list)
      assert.equals("SignatureDoesNotMatch", err.code)
      assert.equals(403, err.status)
      assert.matches("environment %(AWS_ACCESS_KEY_ID%)", err.message)
      assert.matches(srv.access_key, err.message, 1, true)
      assert.is_nil(err.message:find("not-the-secret-key", 1, true))
      local r, err2 = bad:open(BUCKET, "anything")
      assert.is_nil(r)
      assert.equals("SignatureDoesNotMatch", err2.code)
      local ok, err3 = bad:put(BUCKET, "x", "y")
      assert.is_nil(ok)
      assert.equals("SignatureDoesNotMatch", err3.code)
      bad:close()
    end)

    it("names an unknown access key", function()
      local bad = client { access_key = "NOSUCHACCESSKEY" }
      local _, err = bad:list(BUCKET)
      assert.equals("InvalidAccessKeyId", err.code)
      assert.matches("NOSUCHACCESSKEY", err.message)
      bad:close()
    end)

    it("reports a missing key and a missing bucket with what to check", function()
      local h, err = c:head(BUCKET, "spire-postgres-1999-01-01T00:00:00.psql")
      assert.is_nil(h)
      assert.equals("NoSuchKey", err.code)
      assert.equals(404, err.status)
      assert.matches("s3://postgres%-backup/spire%-postgres%-1999", err.message)
      local r, err2 = c:open(BUCKET, "no/such key.psql")
      assert.is_nil(r)
      assert.equals("NoSuchKey", err2.code)
      local res, err3 = c:get(BUCKET, "no/such key.psql", tmpdir .. "/never")
      assert.is_nil(res)
      assert.equals("NoSuchKey", err3.code)
      assert.is_nil(io.open(tmpdir .. "/never"))
      local l, err4 = c:list("no-such-bucket")
      assert.is_nil(l)
      assert.equals("NoSuchBucket", err4.code)
      assert.matches("check the bucket name", err4.message)
    end)

    it("reports a refused connection as a transport error", function()
      local dead = client { endpoint = "http://127.22.0.1:1", connect_timeout = 2 }
      local l, err = dead:list(BUCKET)
      assert.is_nil(l)
      assert.equals("connect", err.code)
      assert.matches("127.22.0.1:1", err.message, 1, true)
      dead:close()
    end)

    it("raises on misuse", function()
      assert.has_error(function() core.client { access_key = "a", secret_key = "b" } end)
      assert.has_error(function() c:list() end)
      local closed = client()
      closed:close()
      assert.has_error(function() closed:list(BUCKET) end)
      local _, err = core.client { endpoint = "ftp://x", access_key = "a", secret_key = "b" }
      assert.equals("usage", err.code)
    end)
  end)

  describe("list", function()
    it("follows continuation tokens past 1000 keys, in key order", function()
      local n = 1003
      for i = 1, n do
        assert(c:put(BUCKET, ("many/k:%05d"):format(i), tostring(i)))
      end
      local list = assert(c:list(BUCKET, { prefix = "many/" }))
      assert.equals(n, #list)
      for i = 1, n do
        assert.equals(("many/k:%05d"):format(i), list[i].key)
        assert.equals(#tostring(i), list[i].size)
      end
      -- a prefix that matches nothing is an empty list, not an error
      assert.same({}, assert(c:list(BUCKET, { prefix = "nothing-here/" })))
    end)
  end)

  describe("downloads", function()
    local KEY = "big/spire-postgres-2022-09-14T03:10:04.psql"
    local data, size
    setup(function()
      size = 3 * 1024 * 1024 + 12345
      data = blob(size, 11)
      local src = tmpdir .. "/upload"
      writefile(src, data)
      assert(c:put_file(BUCKET, KEY, src))
    end)

    it("writes a file atomically (0600), with size and MD5 checked", function()
      local path = tmpdir .. "/plain.psql"
      local calls = 0
      local res = assert(c:get(BUCKET, KEY, path, { progress = function(off, total)
        calls = calls + 1
        assert.equals(size, total)
        assert.is_true(off <= total)
      end }))
      assert.equals(size, res.size)
      assert.is_true(res.md5_checked)
      assert.equals(0, res.resumes)
      assert.is_true(calls > 0)
      assert.equals(data, readfile(path))
      assert.equals(tonumber("600", 8), sys.stat(path).mode & tonumber("777", 8))
      local p = io.popen("ls -a " .. tmpdir)
      local names = p:read("a")
      p:close()
      assert.is_nil(names:find(".part-", 1, true))
    end)

    it("never writes through a link planted at its temporary name", function()
      local path = tmpdir .. "/linked.psql"
      local target = tmpdir .. "/not-mine"
      writefile(target, "untouched")
      os.execute(("ln -s %s %s.part-%d"):format(target, path, sys.getpid()))
      assert(c:get(BUCKET, KEY, path))
      assert.equals("untouched", readfile(target))
      assert.equals(data, readfile(path))
    end)

    it("a progress function returning false stops the download and leaves no file", function()
      local path = tmpdir .. "/stopped.psql"
      local res, err = c:get(BUCKET, KEY, path, { progress = function() return false end })
      assert.is_nil(res)
      assert.equals("aborted", err.code)
      assert.is_nil(io.open(path))
    end)

    it("resumes a connection cut mid-object with Range; the bytes are identical", function()
      local proxy = srv.cutting_proxy(1000 * 1000, 2)
      local cut = client { endpoint = proxy.endpoint }
      local path = tmpdir .. "/resumed.psql"
      local res = assert(cut:get(BUCKET, KEY, path))
      assert.equals(2, res.resumes)
      assert.is_true(res.md5_checked)
      assert.equals(size, res.size)
      assert.equals(md5_of_file(tmpdir .. "/upload"), md5_of_file(path))
      cut:close()
      proxy.stop()
    end)

    it("a reader resumes too, and reports its progress fields", function()
      local proxy = srv.cutting_proxy(700 * 1000, 1)
      local cut = client { endpoint = proxy.endpoint }
      local r = assert(cut:open(BUCKET, KEY))
      assert.equals(size, r.size)
      local parts = {}
      while true do
        local chunk, err = r:read(100000)
        assert.is_nil(err)
        if not chunk then break end
        parts[#parts + 1] = chunk
      end
      assert.equals(1, r.resumes)
      assert.equals(size, r.offset)
      assert.is_true(r.md5_checked)
      assert.is_true(table.concat(parts) == data)
      r:close()
      cut:close()
      proxy.stop()
    end)

    it("refuses a resume answered with other bytes than the range it asked for, taking none of them", function()
      local proxy = srv.cutting_proxy(700 * 1000, 1, "unranged")
      local cut = client { endpoint = proxy.endpoint }
      local r = assert(cut:open(BUCKET, KEY))
      local got, chunk, err = 0, nil, nil
      repeat
        chunk, err = r:read(100000)
        if chunk then got = got + #chunk end
      until not chunk
      assert.is_not_nil(err)
      assert.equals("bad_response", err.code)
      assert.matches(("resuming at byte %d, the server answered 200 %%(no Content%%-Range%%) instead of that range")
        :format(got), err.message)
      assert.is_true(got < 700 * 1000)
      assert.equals(got, r.offset)
      r:close()
      cut:close()
      proxy.stop()
    end)

    it("gives up after the allowed resumes, with a transport error and no file", function()
      local proxy = srv.cutting_proxy(500 * 1000, 3)
      local cut = client { endpoint = proxy.endpoint }
      local path = tmpdir .. "/gaveup.psql"
      local res, err = cut:get(BUCKET, KEY, path, { resumes = 1 })
      assert.is_nil(res)
      assert.equals("transfer", err.code)
      assert.matches("after 1 resume", err.message)
      assert.is_nil(io.open(path))
      cut:close()
      proxy.stop()
    end)

    it("a reader reading ahead fetches before it is asked, holds no more than its read-ahead, and "
      .. "hands over the same bytes through cut connections", function()
      local proxy = srv.cutting_proxy(900 * 1000, 2)
      local cut = client { endpoint = proxy.endpoint }
      local base = threads()
      local r = assert(cut:open(BUCKET, KEY, { readahead = 1024 * 1024 }))
      assert.equals(1024 * 1024, r.readahead)
      assert.equals(base + 1, threads())
      -- nobody reads yet: the thread fills the read-ahead, and stops there
      assert.is_true(eventually(function() return r.buffered >= 1024 * 1024 - 256 * 1024 end))
      assert.equals(0, r.offset)
      local parts, most = {}, 0
      while true do
        local chunk, err = r:read(70000)
        assert.is_nil(err)
        if not chunk then break end
        parts[#parts + 1] = chunk
        most = math.max(most, r.buffered)
      end
      assert.is_true(most <= 1024 * 1024)
      assert.equals(2, r.resumes)
      assert.equals(size, r.offset)
      assert.is_true(r.md5_checked)
      assert.is_true(table.concat(parts) == data)
      r:close()
      assert.equals(base, threads())
      cut:close()
      proxy.stop()
    end)

    it("closing a reader whose read-ahead waits on a stalled link or a full buffer ends its thread and "
      .. "its connection at once", function()
      local link = srv.link_proxy(50 * 1000)
      -- a stalled link would hold a read for low_speed_time: 600 s here, unless close interrupts it
      local slow = client { endpoint = link.endpoint, low_speed_time = 600 }
      local base = threads()
      local r = assert(slow:open(BUCKET, KEY, { readahead = 1024 * 1024 }))
      assert.equals(10000, #assert(r:read(10000)))
      link.set_rate(0)
      local before = eventually(function()
        local a = link.stats().down
        sys.sleep(0.3)
        return a == link.stats().down and a
      end)
      assert.is_true(before < size)
      assert.equals(base + 1, threads())
      assert.equals(1, connections_to(link.port))
      -- (no speed assumption: the stalled read would hold for low_speed_time, 600 s)
      local t0 = sys.now()
      r:close()
      assert.is_true(sys.now() - t0 < 600, "close interrupted the stalled read")
      assert.equals(base, threads())
      assert.is_true(eventually(function() return connections_to(link.port) == 0 end))
      assert.is_true(eventually(function() return link.stats().open == 0 end))
      link.set_rate(nil)

      -- a read-ahead that has filled its buffer waits for room: closing ends that wait too
      r = assert(slow:open(BUCKET, KEY, { readahead = 512 * 1024 }))
      assert.is_true(eventually(function() return r.buffered >= 512 * 1024 - 256 * 1024 end))
      assert.equals(base + 1, threads())
      r:close()
      assert.equals(base, threads())
      assert.is_true(eventually(function() return connections_to(link.port) == 0 end))
      slow:close()
      link.stop()
    end)

    it("detects an object replaced between a cut and its resume", function()
      local key = "big/replaced.psql"
      local src = tmpdir .. "/upload2"
      writefile(src, blob(2 * 1024 * 1024, 3))
      assert(c:put_file(BUCKET, key, src))
      local proxy = srv.cutting_proxy(400 * 1000, 1)
      local cut = client { endpoint = proxy.endpoint }
      local r = assert(cut:open(BUCKET, key))
      -- read up to the cut, replace the object, then read on: the resume must refuse
      local got = 0
      while got < 300 * 1000 do got = got + #assert(r:read(50000)) end
      assert(c:put(BUCKET, key, "something else entirely"))
      local err
      repeat
        local chunk
        chunk, err = r:read(50000)
      until not chunk
      assert.is_not_nil(err)
      assert.equals("changed", err.code)
      r:close()
      cut:close()
      proxy.stop()
    end)
  end)

  describe("pgr.s3 (Lua)", function()
    local function opts()
      return { site = false, getenv = function(k)
        return ({ AWS_ACCESS_KEY_ID = srv.access_key, AWS_SECRET_ACCESS_KEY = srv.secret_key,
                  AWS_ENDPOINT_URL = srv.endpoint, HOME = "/nonexistent" })[k]
      end }
    end

    it("lists backups of a service paired and newest first, flagging incomplete pairs", function()
      for _, k in ipairs {
        "keycloak-postgres-2022-09-13T03:10:04.psql", "keycloak-postgres-2022-09-13T03:10:04.manifest",
        "keycloak-postgres-2022-09-15T03:10:04.psql", "keycloak-postgres-2022-09-15T03:10:04.manifest",
        "keycloak-postgres-2022-09-16T03:10:04.psql",
        "keycloak-postgres-2022-09-14T03:10:04.manifest",
        -- the operator's logical backup (2022-09-15T12:00:00 UTC), another cluster's, and a stray key
        "spilo/keycloak-postgres/5f0e7c1a-0d1b-4c7e-9e1a-1d2b3c4d5e6f/logical_backups/1663243200.sql.gz",
        "spilo/keycloak-postgresql/0000/logical_backups/1663243200.sql.gz",
        "spilo/keycloak-postgres/5f0e7c1a-0d1b-4c7e-9e1a-1d2b3c4d5e6f/wal/000000010000000000000001",
      } do assert(c:put(BUCKET, k, "x")) end
      local list = assert(s3.backups("keycloak", opts()))
      local names = {}
      for i, b in ipairs(list) do names[i] = b.time .. " " .. b.layout .. (b.complete and "" or (" no " .. b.missing)) end
      assert.same({ "2022-09-16T03:10:04 csm no manifest", "2022-09-15T12:00:00 operator", "2022-09-15T03:10:04 csm",
                    "2022-09-14T03:10:04 csm no psql", "2022-09-13T03:10:04 csm" }, names)
      assert.equals("s3://postgres-backup/keycloak-postgres-2022-09-15T03:10:04.psql", list[3].url)
      assert.equals("keycloak-postgres", list[3].cluster)
      assert.equals("keycloak-postgres", list[2].cluster)
      assert.equals("spilo/keycloak-postgres/5f0e7c1a-0d1b-4c7e-9e1a-1d2b3c4d5e6f/logical_backups/1663243200", list[2].name)
      assert.is_nil(list[2].manifest)
    end)

    it("pgr backups prints the table; a wrong secret exits 1 naming the credential source", function()
      local env = ("AWS_ENDPOINT_URL=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s PGR_SITE=/dev/null HOME=/nonexistent")
        :format(srv.endpoint, srv.access_key, srv.secret_key)
      local p = io.popen(env .. " " .. os.getenv("PGR") .. " backups keycloak-postgres 2>&1; echo rc=$?")
      local out = p:read("a")
      p:close()
      assert.matches("TIME%s+CLUSTER%s+LAYOUT%s+SIZE%s+STATUS%s+NAME", out)
      assert.matches("2022%-09%-16T03:10:04%s+keycloak%-postgres%s+csm%s+1 B%s+no %.manifest", out)
      assert.matches("2022%-09%-15T12:00:00%s+keycloak%-postgres%s+operator%s+1 B%s+complete%s+spilo/", out)
      assert.matches("rc=0", out)
      local badenv = env:gsub("AWS_SECRET_ACCESS_KEY=%S+", "AWS_SECRET_ACCESS_KEY=wrong-one")
      p = io.popen(badenv .. " " .. os.getenv("PGR") .. " backups spire 2>&1; echo rc=$?")
      out = p:read("a")
      p:close()
      assert.matches("signature", out)
      assert.matches("environment", out)
      assert.is_nil(out:find("wrong-one", 1, true))
      assert.matches("rc=1", out)
    end)

    it("opens an s3:// URL as a reader with its size", function()
      assert(c:put(BUCKET, "spire-postgres-2022-09-14T03:10:04.psql", "hello\n"))
      local r, size = assert(s3.reader("s3://postgres-backup/spire-postgres-2022-09-14T03:10:04.psql", opts()))
      assert.equals(6, size)
      assert.equals("hello\n", r:read(1000))
      r:close()
      local none, err = s3.reader("s3://postgres-backup/none", opts())
      assert.is_nil(none)
      assert.equals("NoSuchKey", err.code)
      local bad, err2 = s3.reader("http://x/y", opts())
      assert.is_nil(bad)
      assert.equals("usage", err2.code)
    end)
  end)

  describe("streamed restore", function()
    local pg = require "pgr.pg"
    local pgserver = require "support.pgserver"
    local servers = {}
    teardown(function()
      for _, s in ipairs(servers) do s.stop() end
    end)

    local function start(addr)
      local s = pgserver.start { addr = addr }
      servers[#servers + 1] = s
      return s
    end

    -- pg_dumpall of server s into out; its text with the random \restrict keys made equal
    local bin = io.popen("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1"):read("l")
    local function dumpall(s, out)
      assert.is_true(os.execute(("PGPASSWORD=%s %s/pg_dumpall -h %s -p %d -U postgres -f %s"):format(
        s.password, bin, s.host, s.port, out)))
      local f = assert(io.open(out))
      local text = f:read("a"):gsub("\\(u?n?restrict) %S+", "\\%1 KEY")
      f:close()
      return text
    end

    -- the dump of origin, as a file and as the object KEY in the bucket: path
    local function publish(origin, key)
      local dump = tmpdir .. "/" .. key:gsub("[/:]", "_")
      dumpall(origin, dump)
      assert(c:put_file(BUCKET, key, dump))
      return dump
    end

    local function checksum(srvx)
      local conn = assert(pg.connect(srvx.params))
      local rows = assert(conn:query([[select count(*)::text as n,
        md5(string_agg(id::text || ':' || payload, ',' order by id)) as sum from app.items]]))
      conn:close()
      return rows[1].n .. " " .. rows[1].sum
    end

    it("from S3 (through a cut connection) equals a restore from the same file", function()
      local origin = start("127.22.1.1")
      local conn = assert(pg.connect(origin.params))
      assert(conn:exec("create schema app"))
      assert(conn:exec("create table app.items (id int primary key, payload text)"))
      assert(conn:exec("insert into app.items select g, repeat(md5(g::text), 8) from generate_series(1, 20000) g"))
      conn:close()
      local key = "restore/spire-postgres-2022-09-14T03:10:04.psql"
      local dump = publish(origin, key)

      local from_file = start("127.22.1.2")
      local from_s3 = start("127.22.1.3")
      local r1 = assert(pg.restore(from_file.params, dump))
      local proxy = srv.cutting_proxy(1000 * 1000, 1)
      local cut = client { endpoint = proxy.endpoint }
      local reader = assert(cut:open(BUCKET, key))
      local r2 = assert(pg.restore(from_s3.params, reader))
      assert.equals(1, reader.resumes)
      assert.is_true(reader.md5_checked)
      reader:close()
      cut:close()
      proxy.stop()
      assert.equals(r1.bytes, r2.bytes)
      assert.equals(r1.statements, r2.statements)
      assert.equals(r1.copy_rows, r2.copy_rows)
      assert.equals(20000, r2.copy_rows)
      assert.equals(checksum(origin), checksum(from_file))
      assert.equals(checksum(from_file), checksum(from_s3))
    end)

    it("with jobs = 2 loads each table through a Range request of its own, cut connections resumed, "
      .. "into the same state as a serial restore", function()
      local origin = start("127.22.1.5")
      local conn = assert(pg.connect(origin.params))
      assert(conn:exec([[create table big (id int primary key, v text);
        insert into big select g, repeat(md5(g::text), 4) from generate_series(1, 30000) g;
        create table mid (id int primary key, t text, n numeric);
        insert into mid select g, E'tab\there\\back ' || g, g / 7.0 from generate_series(1, 15000) g;
        create index mid_t on mid (t);
        create table small (k text primary key, ref int references big (id));
        insert into small select 'k' || g, g from generate_series(1, 8000) g;
        create table empty_one (x int);
        create sequence seq_used; select setval('seq_used', 4242);]]))
      conn:close()
      local key = "restore/jobs-2022-09-14T03:10:04.psql"
      local dump = publish(origin, key)

      local serial = start("127.22.1.6")
      local parallel = start("127.22.1.7")
      -- the role postgres exists in a fresh cluster: that one "already exists" is expected
      local expected = { ["42710"] = true }
      local r1 = assert(pg.restore(serial.params, dump, { on_error = expected }))
      assert.equals(1, r1.jobs)
      -- the main stream and both range requests are each cut once after 300 kB
      local proxy = srv.cutting_proxy(300 * 1000, 3)
      local cut = client { endpoint = proxy.endpoint }
      local reader = assert(cut:open(BUCKET, key))
      local r2 = assert(pg.restore(parallel.params, reader, { jobs = 2, on_error = expected }))
      assert.is_true(reader.md5_checked)
      reader:close()
      cut:close()
      proxy.stop()
      assert.equals(2, r2.jobs)
      assert.equals(0, r2.errors.unexpected)
      assert.equals(r1.copy_rows, r2.copy_rows)
      assert.equals(30000 + 15000 + 8000, r2.copy_rows)
      local want = dumpall(serial, tmpdir .. "/serial.out")
      assert.equals(want, dumpall(parallel, tmpdir .. "/parallel.out"))

      -- a reader the caller has begun reading: its ranges count from where it stood
      local late = start("127.22.1.9")
      reader = assert(c:open(BUCKET, key))
      assert.equals("--\n", reader:read(3))
      -- and while the restore fetches its ranges, the reader refuses to be closed under it
      local close_err
      local function progress()
        if close_err == nil then close_err = select(2, pcall(reader.close, reader)) end
      end
      local r4 = assert(pg.restore(late.params, reader, { jobs = 2, on_error = expected, progress = progress,
                                                          progress_interval = 0 }))
      assert.matches("being restored from", tostring(close_err))
      reader:close()
      assert.equals(2, r4.jobs)
      assert.equals(r1.copy_rows, r4.copy_rows)
      assert.equals(want, dumpall(late, tmpdir .. "/late.out"))

      -- an object replaced while its ranges are being fetched fails loudly instead of mixing bytes
      local again = start("127.22.1.8")
      reader = assert(c:open(BUCKET, key))
      assert(c:put(BUCKET, key, "-- replaced\n"))
      local r3, err = pg.restore(again.params, reader, { jobs = 2, on_error = expected })
      reader:close()
      local res = r3 or err.result
      assert.is_true(res.errors.unexpected > 0)
      local text = ""
      for _, e in ipairs(res.errors.first) do text = text .. tostring(e.message) .. "\n" end
      assert.matches("reading the dump at offset %d+ failed: s3://[^\n]* changed on the server", text)
    end)

    -- the tables of the parallel specs: three with rows, one without, a sequence
    local function fill_origin(origin)
      local conn = assert(pg.connect(origin.params))
      assert(conn:exec([[create table big (id int primary key, v text);
        insert into big select g, repeat(md5(g::text), 4) from generate_series(1, 30000) g;
        create table mid (id int primary key, t text, n numeric);
        insert into mid select g, E'tab\there\\back ' || g, g / 7.0 from generate_series(1, 15000) g;
        create index mid_t on mid (t);
        create table small (k text primary key, ref int references big (id));
        insert into small select 'k' || g, g from generate_series(1, 8000) g;
        create table empty_one (x int);
        create sequence seq_used; select setval('seq_used', 4242);]]))
      conn:close()
    end

    it("with a read-ahead, jobs = 2 feeds each table its rows from the one stream: the dump is read "
      .. "once, cut connections resumed, into the same state as a serial restore", function()
      local origin = start("127.22.1.10")
      fill_origin(origin)
      local key = "restore/feed-2022-09-14T03:10:04.psql"
      local dump = publish(origin, key)
      local size = #readfile(dump)
      local expected = { ["42710"] = true }
      local serial = start("127.22.1.11")
      local r1 = assert(pg.restore(serial.params, dump, { on_error = expected }))
      local want = dumpall(serial, tmpdir .. "/feed-serial.out")

      -- the stream is cut twice; a small read-ahead makes the main thread wait for the loads often
      local proxy = srv.cutting_proxy(300 * 1000, 2)
      local cut = client { endpoint = proxy.endpoint }
      local reader = assert(cut:open(BUCKET, key, { readahead = 512 * 1024 }))
      local fed = start("127.22.1.12")
      local r2 = assert(pg.restore(fed.params, reader, { jobs = 2, on_error = expected }))
      assert.equals(2, reader.resumes)
      assert.is_true(reader.md5_checked)
      reader:close()
      cut:close()
      proxy.stop()
      assert.equals(2, r2.jobs)
      assert.equals(0, r2.errors.unexpected)
      assert.equals(r1.copy_rows, r2.copy_rows)
      assert.equals(r1.statements, r2.statements)
      assert.equals(want, dumpall(fed, tmpdir .. "/feed.out"))

      -- the bytes that crossed the link: the object once; without a read-ahead (a Range request
      -- per table) about twice
      local function through_link(addr, opts)
        local link = srv.link_proxy(nil)
        local counted = client { endpoint = link.endpoint }
        local r = assert(counted:open(BUCKET, key, opts))
        local dst = start(addr)
        assert(pg.restore(dst.params, r, { jobs = 2, on_error = expected }))
        r:close()
        counted:close()
        assert.is_true(eventually(function() return link.stats().open == 0 end))
        local down = link.stats().down
        link.stop()
        assert.equals(want, dumpall(dst, tmpdir .. "/" .. addr .. ".out"))
        return down
      end
      local once = through_link("127.22.1.13", { readahead = 512 * 1024 })
      assert.is_true(once >= size and once < size * 1.05, ("%d bytes for a %d-byte dump"):format(once, size))
      local twice = through_link("127.22.1.14", nil)
      assert.is_true(twice > size * 1.8, ("%d bytes for a %d-byte dump"):format(twice, size))
    end)

    it("a restore that stops at an error leaves no thread and no connection once its reader is closed, "
      .. "and its read-ahead fetched no further than it holds", function()
      local origin = start("127.22.1.15")
      fill_origin(origin)
      local key = "restore/stops-2022-09-14T03:10:04.psql"
      local dump = publish(origin, key)
      local size = #readfile(dump)
      -- a link slow enough that the read-ahead is still fetching when the restore stops
      local link = srv.link_proxy(300 * 1000)
      local slow = client { endpoint = link.endpoint }
      local base = threads()

      -- serial: "role postgres already exists" is unexpected here, and --stop-on-error stops at it
      local dst = start("127.22.1.16")
      local reader = assert(slow:open(BUCKET, key, { readahead = 1024 * 1024 }))
      local res, err = pg.restore(dst.params, reader, { stop_on_error = true })
      res = res or err.result
      assert.is_true(res.stopped)
      assert.equals("42710", res.errors.first[1].sqlstate)
      assert.equals(base + 1, threads()) -- the reader's read-ahead, until it is closed
      reader:close()
      assert.equals(base, threads())
      assert.is_true(eventually(function() return connections_to(link.port) == 0 end))
      assert.is_true(eventually(function() return link.stats().open == 0 end))

      -- jobs = 2: the first table's load fails in a loading connection (the target already has that
      -- table, without the dump's column v); the restore stops at the start of that block
      dst = start("127.22.1.17")
      local conn = assert(pg.connect(dst.params))
      assert(conn:exec("create table big (id int)"))
      conn:close()
      local before = link.stats().down
      reader = assert(slow:open(BUCKET, key, { readahead = 1024 * 1024 }))
      res, err = pg.restore(dst.params, reader, { jobs = 2, stop_on_error = true,
                                                  on_error = { ["42710"] = true, ["42P07"] = true } })
      res = res or err.result
      assert.is_true(res.stopped)
      assert.equals(1, res.errors.unexpected)
      local first
      for _, e in ipairs(res.errors.first) do if not e.expected then first = e end end
      assert.equals("42703", first.sqlstate)
      assert.matches("COPY public.big", first.statement)
      assert.equals(base + 1, threads()) -- the loading connections' threads are gone already
      reader:close()
      assert.equals(base, threads())
      assert.is_true(eventually(function() return connections_to(link.port) == 0 end))
      assert.is_true(eventually(function() return link.stats().open == 0 end))
      -- what crossed the link for this restore: far from the whole dump
      assert.is_true(link.stats().down - before < size / 2)
      -- nothing after the failed block was loaded, as psql --set ON_ERROR_STOP=1 would leave it
      conn = assert(pg.connect(dst.params))
      assert.equals("0", assert(conn:query("select count(*)::text as n from mid"))[1].n)
      assert.equals("0", assert(conn:query("select count(*)::text as n from big"))[1].n)
      conn:close()
      slow:close()
      link.stop()
    end)

    it("pgr restore s3://BUCKET/KEY streams from the configured S3", function()
      local dst = start("127.22.1.4")
      local env = ("AWS_ENDPOINT_URL=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s PGR_SITE=/dev/null HOME=/nonexistent")
        :format(srv.endpoint, srv.access_key, srv.secret_key)
      local cmd = ("%s %s restore --quiet --conn '%s' s3://%s/restore/spire-postgres-2022-09-14T03:10:04.psql 2>&1; echo rc=$?")
        :format(env, os.getenv("PGR"), dst.conninfo, BUCKET)
      local p = io.popen(cmd)
      local out = p:read("a")
      p:close()
      assert.matches("rc=0", out)
      assert.equals(checksum(servers[1]), checksum(dst))
      p = io.popen(("%s %s restore --quiet --conn '%s' s3://%s/restore/missing.psql 2>&1; echo rc=$?")
        :format(env, os.getenv("PGR"), dst.conninfo, BUCKET))
      out = p:read("a")
      p:close()
      assert.matches("not found", out)
      assert.matches("rc=3", out)
    end)
  end)
end)
