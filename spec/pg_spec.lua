-- Specs of pgr.pg against a real PostgreSQL server: connections, typed rows, server errors, notices,
-- password verifiers, quoting, pg.inspect and pg.restore with Lua readers and error policies.
local pg = require "pgr.pg"
local pgserver = require "support.pgserver"

local function tmpfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(content)
  f:close()
  return name
end

local DUMP = table.concat({
  "--", "-- PostgreSQL database cluster dump", "--", "",
  "SET standard_conforming_strings = on;",
  "CREATE ROLE postgres;",
  "CREATE ROLE \"spec \"\"role\"\"\";",
  "CREATE DATABASE \"Spec;DB\";",
  "\\connect -reuse-previous=on \"dbname='Spec;DB'\"",
  "CREATE TABLE public.schema_version (version text, note text);",
  "COPY public.schema_version (version, note) FROM stdin;",
  "1.4.2\tfirst\\trow",
  "0.9\tsecond",
  "\\.",
  "CREATE TABLE public.n (i int);",
  "COPY public.n (i) FROM stdin;",
  "\\.",
  "SELECT 1/0;",
  "\\connect postgres",
  "", "--", "-- PostgreSQL database cluster dump complete", "--", "",
}, "\n")

describe("pgr.pg", function()
  local srv, conn
  setup(function()
    srv = pgserver.start { addr = "127.21.2.1" }
    conn = assert(pg.connect(srv.params))
  end)
  teardown(function()
    if conn then conn:close() end
    if srv then srv.stop() end
  end)

  describe("connect", function()
    it("takes a conninfo string, a URI or a table", function()
      local c1 = assert(pg.connect(srv.conninfo))
      local c2 = assert(pg.connect(("postgresql://postgres:%s@%s:%d/postgres"):format(srv.password, srv.host, srv.port)))
      assert.equals("postgres", c1:info().dbname)
      assert.equals(tostring(srv.port), c2:info().port)
      c1:close()
      c2:close()
    end)

    it("fails with nil, err that never holds the password", function()
      local params = {}
      for k, v in pairs(srv.params) do params[k] = v end
      params.password = "Wr0ng-Secret"
      local c, err = pg.connect(params)
      assert.is_nil(c)
      assert.equals("connect", err.code)
      assert.matches("password authentication failed", tostring(err))
      assert.is_nil(tostring(err):find("Wr0ng-Secret", 1, true))
      c, err = pg.connect("host=x password='Wr0ng Secret' dbname")
      assert.is_nil(c)
      assert.is_nil(tostring(err):find("Wr0ng", 1, true))
    end)

    it("is closed by __close and closing twice is harmless", function()
      local keep
      do
        local c <close> = assert(pg.connect(srv.params))
        keep = c
        assert.equals(1, c:query("select 1 as one")[1].one)
      end
      assert.matches("closed", tostring(keep))
      keep:close()
      assert.has_error(function() keep:query("select 1") end)
    end)
  end)

  describe("query", function()
    it("returns typed rows, NULL as nil, and the column list", function()
      local rows, info = assert(conn:query(
        "select 1 as i, 9007199254740993::int8 as big, 1.5::float8 as f, 2.50::numeric as num, " ..
        "true as b, 'x' as s, null::text as n, $1::text as p, $2::int as q", "param", 7))
      local r = rows[1]
      assert.equals(1, r.i)
      assert.equals(math.tointeger(9007199254740993), r.big)
      assert.equals(1.5, r.f)
      assert.equals("2.50", r.num)
      assert.is_true(r.b)
      assert.equals("x", r.s)
      assert.is_nil(r.n)
      assert.equals("param", r.p)
      assert.equals(7, r.q)
      assert.same({ "i", "big", "f", "num", "b", "s", "n", "p", "q" }, info.columns)
      assert.equals("SELECT 1", info.command)
    end)

    it("passes nil and booleans as parameters", function()
      local rows = assert(conn:query("select $1::text is null as isnull, $2::bool as flag", nil, false))
      assert.is_true(rows[1].isnull)
      assert.is_false(rows[1].flag)
    end)

    it("reports server errors with SQLSTATE, position, detail and hint", function()
      local rows, err = conn:query("select nosuch from pg_class")
      assert.is_nil(rows)
      assert.equals("sql", err.code)
      assert.equals("42703", err.sqlstate)
      assert.equals(8, err.position)
      assert.equals("ERROR", err.severity)
      assert(conn:exec("create temp table u (k int primary key)"))
      assert(conn:query("insert into u values (1)"))
      local _, dup = conn:query("insert into u values (1)")
      assert.equals("23505", dup.sqlstate)
      assert.matches("already exists", dup.detail)
      local _, hinted = conn:query("select pg_catalog.nosuchfn(1)")
      assert.matches("No function matches", hinted.hint)
    end)
  end)

  describe("exec", function()
    it("runs commands and returns their status", function()
      assert.equals("CREATE TABLE", conn:exec("create temp table e (a int)"))
      assert.equals("INSERT 0 2", conn:exec("insert into e values (1), (2)"))
      local n, err = conn:exec("insert into e values ('x')")
      assert.is_nil(n)
      assert.equals("22P02", err.sqlstate)
    end)

    it("delivers notices to a Lua callback", function()
      local got = {}
      conn:on_notice(function(n) got[#got + 1] = n end)
      assert(conn:exec("do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$"))
      conn:on_notice(nil)
      assert(conn:exec("do $$ begin raise notice 'unheard'; end $$"))
      assert.equals(2, #got)
      assert.equals("hello 42", got[1].message)
      assert.equals("NOTICE", got[1].severity)
      assert.equals("careful", got[2].message)
    end)

    it("refuses COPY TO STDOUT and FROM STDIN and leaves the connection usable", function()
      for _, f in ipairs { "exec", "query" } do
        for _, sql in ipairs { "copy (select 1) to stdout", "copy (select 1) to stdout; select 2",
                               "create temp table if not exists ci (a int); copy ci from stdin" } do
          local r, err = conn[f](conn, sql)
          assert.is_nil(r)
          assert.is_truthy(err.code == "unsupported" or err.code == "sql", f .. ": " .. tostring(err))
          assert.equals(1, conn:query("select 1 as one")[1].one)
        end
      end
    end)

    it("refuses to close a connection from its own notice callback", function()
      local c = assert(pg.connect(srv.params))
      local closeerr
      c:on_notice(function() closeerr = select(2, pcall(c.close, c)) end)
      assert.equals("DO", c:exec("do $$ begin raise notice 'x'; end $$"))
      assert.matches("notice callback", tostring(closeerr))
      assert.equals(1, c:query("select 1 as one")[1].one)
      c:close()
    end)

    it("survives a notice callback that raises", function()
      conn:on_notice(function() error("boom") end)
      assert.equals("DO", conn:exec("do $$ begin raise notice 'x'; end $$"))
      conn:on_notice(nil)
    end)
  end)

  describe("set_password", function()
    it("sets a SCRAM verifier computed client-side; the clear text never reaches the server log", function()
      local role = "we\"ird role;"
      assert(conn:exec("create role " .. pg.quote_ident(role) .. " login"))
      assert(conn:exec("set log_statement = 'all'"))
      assert.is_true(conn:set_password(role, "Clear-Text-42"))
      assert(conn:exec("reset log_statement"))
      local v = conn:query("select rolpassword from pg_authid where rolname = $1", role)[1].rolpassword
      assert.matches("^SCRAM%-SHA%-256%$", v)
      local c = assert(pg.connect { host = srv.host, port = srv.port, user = role, password = "Clear-Text-42",
                                    dbname = "postgres" })
      c:close()
      local log = assert(io.open(srv.dir .. "/log")):read("a")
      assert.truthy(log:find("ALTER ROLE", 1, true))
      assert.is_nil(log:find("Clear-Text-42", 1, true))
    end)
  end)

  describe("quoting", function()
    it("quotes identifiers and literals as libpq does", function()
      assert.equals('"a""b"', pg.quote_ident('a"b'))
      assert.equals("'it''s'", pg.quote_literal("it's"))
      assert.equals(" E'a\\\\b'", pg.quote_literal("a\\b"))
      assert.equals(pg.quote_literal("x'\\y"), conn:quote_literal("x'\\y"))
      assert.equals(pg.quote_ident("Odd \"one\""), conn:quote_ident("Odd \"one\""))
    end)
  end)

  describe("inspect", function()
    it("reports format, trailer, databases, roles and COPY blocks without a server", function()
      local path = tmpfile(DUMP)
      local info = assert(pg.inspect(path))
      os.remove(path)
      assert.equals("pg_dumpall", info.format)
      assert.is_true(info.trailer)
      assert.same({ "Spec;DB" }, info.databases)
      assert.same({ "postgres", 'spec "role"' }, info.roles)
      assert.same({ "Spec;DB", "postgres" }, info.connects)
      assert.equals(2, #info.copies)
      assert.same({ database = "Spec;DB", table = "public.schema_version", line = 11, rows = 2, bytes = 28,
                    first_row = "1.4.2\tfirst\\trow" }, info.copies[1])
      assert.equals(0, info.copies[2].rows)
    end)

    it("sees through gzip and notices a missing trailer", function()
      local path = tmpfile(DUMP:sub(1, 300))
      os.execute("gzip -f " .. path)
      local info = assert(pg.inspect(path .. ".gz"))
      os.remove(path .. ".gz")
      assert.is_true(info.gzip)
      assert.is_false(info.trailer)
      assert.is_true(info.truncated)
    end)

    it("refuses custom-format archives", function()
      local path = tmpfile("PGDMP\1\14\0\4\8\1\1")
      local info, err = pg.inspect(path)
      os.remove(path)
      assert.is_nil(info)
      assert.equals("format", err.code)
    end)
  end)

  describe("restore", function()
    it("reads from any object with read(n), classifies errors and reports progress", function()
      local pos = 0
      local reader = { read = function(_, n)
        if pos >= #DUMP then return nil end
        local k = math.min(n, 7) -- tiny chunks: statements and COPY lines straddle them
        local s = DUMP:sub(pos + 1, pos + k)
        pos = pos + k
        return s
      end }
      local seen, progress = {}, 0
      local r = assert(pg.restore(srv.params, reader, {
        on_error = function(e) seen[#seen + 1] = e; return e.sqlstate == "42710" end,
        progress = function(p) progress = progress + 1; assert.is_number(p.bytes) end,
        progress_interval = 0,
      }))
      assert.is_false(r.ok)
      assert.equals(2, r.errors.count)
      assert.equals(1, r.errors.unexpected)
      assert.equals(1, r.errors.by_sqlstate["42710"])
      assert.equals(1, r.errors.by_sqlstate["22012"])
      assert.equals(2, r.copy_rows)
      assert.same({ "postgres", "Spec;DB", "postgres" }, r.databases)
      assert.equals(18, r.errors.first[2].line)
      assert.equals("SELECT 1/0;", r.errors.first[2].statement)
      assert.is_false(r.errors.first[2].expected)
      assert.equals("Spec;DB", seen[2].database)
      assert.is_true(progress > 0)
      local c = assert(pg.connect { host = srv.host, port = srv.port, user = "postgres",
                                    password = srv.password, dbname = "Spec;DB" })
      local rows = c:query("select version, note from public.schema_version")
      c:close()
      assert.same({ { version = "1.4.2", note = "first\trow" }, { version = "0.9", note = "second" } }, rows)
    end)

    it("takes a policy table keyed by SQLSTATE", function()
      local path = tmpfile("CREATE ROLE postgres;\nSELECT 1/0;\n--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.conninfo, path, { on_error = { ["42710"] = true,
        ["22012"] = function(e) return e.message == "division by zero" end } }))
      os.remove(path)
      assert.is_true(r.ok)
      assert.equals(2, r.errors.count)
    end)

    it("lists a failed statement without its password verifier", function()
      local path = tmpfile("ALTER ROLE pgr_no_such_role WITH LOGIN PASSWORD 'md5deadbeefdeadbeefdeadbeefdeadbeef';\n" ..
        "ALTER ROLE pgr_no_such_role PASSWORD E'se''cr\\\\e\\'t' VALID UNTIL 'infinity';\n" ..
        "--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.params, path))
      os.remove(path)
      assert.equals(2, #r.errors.first)
      assert.equals("ALTER ROLE pgr_no_such_role WITH LOGIN PASSWORD '***';", r.errors.first[1].statement)
      assert.equals("ALTER ROLE pgr_no_such_role PASSWORD E'***' VALID UNTIL 'infinity';", r.errors.first[2].statement)
    end)

    it("lists a failed statement without a dollar-quoted or U& password", function()
      local path = tmpfile("ALTER ROLE pgr_no_such_role PASSWORD $$Dollar'Secret1$$;\n" ..
        "ALTER ROLE pgr_no_such_role PASSWORD $pw$Tagged$$Secret2$pw$ VALID UNTIL 'infinity';\n" ..
        "ALTER ROLE pgr_no_such_role PASSWORD U&'Uni''Secret3';\n" ..
        "ALTER ROLE pgr_no_such_role PASSWORD $x$Cut" .. ("y"):rep(300) .. "$x$;\n" ..
        "--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.params, path))
      os.remove(path)
      assert.equals(4, #r.errors.first)
      assert.equals("ALTER ROLE pgr_no_such_role PASSWORD $$***$$;", r.errors.first[1].statement)
      assert.equals("ALTER ROLE pgr_no_such_role PASSWORD $pw$***$pw$ VALID UNTIL 'infinity';", r.errors.first[2].statement)
      assert.equals("ALTER ROLE pgr_no_such_role PASSWORD U&'***';", r.errors.first[3].statement)
      assert.equals("ALTER ROLE pgr_no_such_role PASSWORD $x$***", r.errors.first[4].statement)
      for i = 1, 4 do
        assert.is_nil(r.errors.first[i].statement:find("Secret", 1, true))
        assert.is_nil((r.errors.first[i].message or ""):find("Secret", 1, true))
      end
    end)

    it("names the \\connect line of a bad conninfo without echoing its password", function()
      local path = tmpfile("\\connect postgresql://u:Hush-42@[::1/db\n")
      local r, err = pg.restore(srv.params, path, { allow_truncated = true })
      os.remove(path)
      assert.is_nil(r)
      assert.equals("connect", err.code)
      assert.matches("line 1", err.message)
      assert.is_nil(err.message:find("Hush-42", 1, true))
    end)

    it("keeps room in the error list for unexpected errors", function()
      local path = tmpfile(("CREATE ROLE postgres;\n"):rep(3) ..
        "SELECT 1/0;\n--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.params, path, { on_error = { ["42710"] = true }, max_errors_listed = 2 }))
      os.remove(path)
      assert.equals(4, r.errors.count)
      assert.equals(2, #r.errors.first)
      assert.equals(1, r.errors.first[1].line)
      assert.equals(4, r.errors.first[2].line)
      assert.is_false(r.errors.first[2].expected)
    end)

    it("returns nil, err with the partial result when the reader fails", function()
      local calls = 0
      local reader = { read = function()
        calls = calls + 1
        if calls == 1 then return ("SELECT 1;\n"):rep(60) end
        return nil, "network went away"
      end }
      local r, err = pg.restore(srv.params, reader)
      assert.is_nil(r)
      assert.equals("io", err.code)
      assert.matches("network went away", err.message)
      assert.equals(60, err.result.statements)
    end)

    it("keeps the first error an on_error callback raises", function()
      local path = tmpfile("SELECT 1/0;\n--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.params, path, { on_error = function() error("policy bug") end }))
      os.remove(path)
      assert.matches("policy bug", tostring(r.callback_error))
      assert.equals(1, r.errors.unexpected)
    end)

    it("restores through an open connection's parameters", function()
      local path = tmpfile("CREATE TABLE public.via_conn (a int);\nCOPY public.via_conn (a) FROM stdin;\n7\n\\.\n" ..
        "--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(conn, path, { jobs = 2 }))
      os.remove(path)
      assert.is_true(r.ok)
      assert.equals(2, r.jobs)
      assert.equals(1, r.copy_rows)
      assert.equals(7, conn:query("select a from public.via_conn")[1].a)
    end)

    it("gives the parallel connections the session settings the dump made with set_config", function()
      -- pg_dump writes SELECT pg_catalog.set_config('search_path', '', false); here a search_path
      -- that the unqualified COPY and CREATE INDEX depend on, run by the pool's connections
      local path = tmpfile("CREATE SCHEMA sp_app;\n" ..
        "SELECT pg_catalog.set_config('search_path', 'sp_app', false);\n" ..
        "CREATE TABLE sp_t (a int);\nCOPY sp_t (a) FROM stdin;\n1\n2\n\\.\n" ..
        "CREATE INDEX sp_t_a ON sp_t (a);\n" ..
        "--\n-- PostgreSQL database cluster dump complete\n--\n")
      local r = assert(pg.restore(srv.params, path, { jobs = 2 }))
      os.remove(path)
      assert.equals(0, r.errors.unexpected)
      assert.equals(2, r.copy_rows)
      assert.equals(3, conn:query("select sum(a)::int as s from sp_app.sp_t")[1].s)
      assert.equals(1, conn:query("select count(*)::int as n from pg_indexes where schemaname = 'sp_app'")[1].n)
    end)

    it("rejects misuse with argument errors", function()
      assert.has_error(function() pg.restore(srv.params, 42) end)
      assert.has_error(function() pg.restore(srv.params, "-", { jobs = 0 }) end)
      assert.has_error(function() pg.restore(srv.params, "-", { on_error = 1 }) end)
    end)
  end)
end)

-- sslmode=verify-ca/verify-full without sslrootcert: the CA bundle found as for HTTPS (cabundle.c:
-- $CURL_CA_BUNDLE, $SSL_CERT_FILE, the site's ca_file, the system paths), not ~/.postgresql/root.crt.
describe("pgr.pg TLS verification without sslrootcert", function()
  local shell = require "support.shell"
  local srv, dir
  local PGR = os.getenv("PGR") or "pgr"
  setup(function()
    srv = pgserver.start { addr = "127.21.2.2" }
    dir = shell.capture("mktemp -d /tmp/pgr-pgtls.XXXXXX"):gsub("%s+$", "")
    local out, code = shell.capture(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem "
      .. "-out cert.pem -days 2 -subj /CN=127.21.2.2 -addext subjectAltName=IP:127.21.2.2 && "
      .. "chown postgres key.pem cert.pem && chmod 0600 key.pem && chmod 0755 %s"):format(dir, dir))
    assert(code == 0, out)
    local c = assert(pg.connect(srv.params))
    assert(c:exec(("ALTER SYSTEM SET ssl_cert_file = '%s/cert.pem'"):format(dir)))
    assert(c:exec(("ALTER SYSTEM SET ssl_key_file = '%s/key.pem'"):format(dir)))
    assert(c:exec("ALTER SYSTEM SET ssl = on"))
    assert(c:exec("SELECT pg_reload_conf()"))
    c:close()
  end)
  teardown(function()
    if srv then srv.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  -- a pgr child with the given environment connecting with sslmode=MODE; prints "ssl=true" or the error
  local function connect(env, mode, extra)
    local chunk = ("local c, e = require('pgr.pg').connect('host=127.21.2.2 port=%d user=postgres "
      .. "password=%s dbname=postgres sslmode=%s %s') if not c then print(tostring(e)) return end "
      .. "print('ssl=' .. tostring(c:query('select ssl from pg_stat_ssl where pid = pg_backend_pid()')[1].ssl))")
      :format(srv.port, srv.password, mode, extra or "")
    return (shell.capture(("env -u CURL_CA_BUNDLE -u SSL_CERT_FILE -u PGSSLROOTCERT HOME=%s %s %s -e %s")
      :format(dir, env, PGR, shell.quote(chunk))))
  end

  it("verifies the server with $SSL_CERT_FILE's bundle", function()
    for _ = 1, 100 do   -- the reload turns TLS on shortly after pg_reload_conf returns
      if connect("", "require"):match("ssl=true") then break end
      os.execute("sleep 0.1")
    end
    assert.equals("ssl=true\n", connect("SSL_CERT_FILE=" .. dir .. "/cert.pem", "verify-full"))
    assert.equals("ssl=true\n", connect("CURL_CA_BUNDLE=" .. dir .. "/cert.pem", "verify-ca"))
  end)

  it("refuses a server the system's bundle does not vouch for, and names a missing bundle", function()
    assert.matches("certificate verify failed", connect("", "verify-full"))
    assert.matches("sslmode=verify%-full needs the CA of the server: CA bundle /nonexistent/ca%.pem "
      .. "%(from %$SSL_CERT_FILE%) cannot be read", connect("SSL_CERT_FILE=/nonexistent/ca.pem", "verify-full"))
    -- an sslrootcert given is used as it is
    assert.equals("ssl=true\n", connect("SSL_CERT_FILE=/nonexistent/ca.pem", "verify-full",
      "sslrootcert=" .. dir .. "/cert.pem"))
  end)
end)
