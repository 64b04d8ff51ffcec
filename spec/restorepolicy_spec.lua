-- Specs of pgr.restorepolicy: which errors of a pg_dumpall (-c) restore into a fresh Spilo cluster are
-- expected and why, the preflight checks of a dump's drops and versions, and the summary a person reads.
-- (tests/pg/spilo.t runs the same policy against real servers; these pin each rule on its own.)
local policy = require "pgr.restorepolicy"

local function e(sqlstate, statement, database)
  return { sqlstate = sqlstate, statement = statement, database = database }
end

describe("pgr.restorepolicy", function()
  it("expects CREATE ROLE and CREATE DATABASE of what exists, and counts each class", function()
    local p = policy.new {}
    assert.is_true(p.on_error(e("42710", "CREATE ROLE postgres;")))
    assert.is_true(p.on_error(e("42710", "CREATE ROLE admin;")))
    assert.is_true(p.on_error(e("42P04", "CREATE DATABASE spire WITH TEMPLATE = template0;")))
    assert.same({ { class = "role_exists", why = policy.CLASSES.role_exists, count = 2 },
                  { class = "database_exists", why = policy.CLASSES.database_exists, count = 1 } }, p:summary())
  end)

  it("expects the DROPs of a -c dump that a fresh Spilo cluster refuses, and only those", function()
    local p = policy.new {}
    assert.equals("role_kept", p.class(e("2BP01", "DROP ROLE admin;")))
    assert.equals("role_kept", p.class(e("2BP01", "DROP ROLE postgres;")))
    assert.equals("role_kept", p.class(e("55006", "DROP ROLE pgr_restore_1;")))
    assert.equals("already_gone", p.class(e("42704", "DROP ROLE zalandos;")))
    assert.equals("already_gone", p.class(e("3D000", "DROP DATABASE sls;")))
    assert.equals("database_in_use", p.class(e("55006", "DROP DATABASE postgres;")))
    -- a service database in use means something is connected to a cluster that should be fresh
    assert.is_nil(p.class(e("55006", "DROP DATABASE spire;")))
    assert.is_nil(p.class(e("55006", "DROP DATABASE template1;")))
  end)

  it("expects 'already exists' only in a database the restore did not create", function()
    local p = policy.new { creates = { "spire", "postgres", "template1" } }
    -- postgres could not be dropped: its CREATE DATABASE fails, so Spilo's objects there are expected
    assert.is_true(p.on_error(e("42P04", "CREATE DATABASE postgres WITH TEMPLATE = template0;")))
    assert.is_true(p.on_error(e("42P06", "CREATE SCHEMA metric_helpers;", "postgres")))
    assert.is_true(p.on_error(e("42723", "CREATE FUNCTION user_management.random_password(integer) ...", "postgres")))
    assert.is_true(p.on_error(e("42P07", "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);", "postgres")))
    -- spire was dropped and created from template0 (no error for its CREATE): nothing may exist there
    assert.is_false(p.on_error(e("42P07", "CREATE TABLE public.selectors (id integer);", "spire")))
    assert.is_false(p.on_error(e("42P06", "CREATE SCHEMA user_management;", "template1")))
    -- a database the dump connects to without creating it existed before
    assert.is_true(p.on_error(e("42P07", "CREATE VIEW public.v AS SELECT 1;", "service_db")))
    assert.is_true(p.on_error(e("42P06", "CREATE SCHEMA public;", "spire")))
    assert.is_false(p.on_error(e("42710", "ALTER TABLE ONLY t ADD COLUMN c int;", "postgres")))
  end)

  it("leaves every other error unexpected, and --strict every error", function()
    local p = policy.new {}
    assert.is_false(p.on_error(e("42703", 'COPY public.t (a, gone) FROM stdin;', "spire")))
    assert.is_false(p.on_error(e("23505", "INSERT INTO t VALUES (1);", "postgres")))
    assert.is_false(p.on_error(e("42710", "GRANT x TO y;")))
    local strict = policy.new { mode = "strict" }
    assert.is_false(strict.on_error(e("42710", "CREATE ROLE postgres;")))
    assert.is_false(policy.strict(e("42710", "CREATE ROLE postgres;")))
    assert.same({}, strict:summary())
  end)

  it("takes a site's extra rules, named as the site's", function()
    local on_error = policy.fresh_cluster { { sqlstate = "42P07", message = '^relation "keep" ', why = "kept" } }
    assert.is_true(on_error { sqlstate = "42P07", message = 'relation "keep" already exists', statement = "SELECT keep()" })
    assert.is_false(on_error { sqlstate = "42P07", message = 'relation "other" already exists', statement = "SELECT x()" })
  end)

  it("reads database names as the server folds them", function()
    assert.equals("spire", policy.database_name("CREATE DATABASE Spire WITH TEMPLATE = template0;"))
    assert.equals('we"ird db', policy.database_name('DROP DATABASE IF EXISTS "we""ird db";'))
    assert.equals("postgres", policy.database_name("drop database postgres;"))
    assert.is_nil(policy.database_name("DROP ROLE x;"))
  end)

  it("refuses a dump that drops a database it does not create again", function()
    assert.is_true(policy.check_drops { databases = { "spire", "postgres" }, drop_databases = { "spire", "postgres" } })
    local ok, why = policy.check_drops { databases = { "postgres" }, drop_databases = { "spire", "hmsds" } }
    assert.is_nil(ok)
    assert.matches("drops databases spire, hmsds but never creates them again", why)
  end)

  it("refuses a dump from or by a newer major than the target", function()
    assert.equals(12, policy.major("12.11 (Debian 12.11-1.pgdg110+1)"))
    assert.equals(9.6, policy.major("9.6.24"))
    assert.equals(15, policy.major("15"))
    assert.is_true(policy.check_version({ dumped_from = "12.11", dumped_by = "12.11" }, "14"))
    assert.is_true(policy.check_version({}, "14"))
    local ok, why = policy.check_version({ dumped_from = "16.2 (Debian)", dumped_by = "16.2" }, "15")
    assert.is_nil(ok)
    assert.matches("taken from PostgreSQL 16.2, newer than the target cluster's PostgreSQL 15", why)
    ok, why = policy.check_version({ dumped_from = "14.9", dumped_by = "15.4" }, "14")
    assert.is_nil(ok)
    assert.matches("written by pg_dump 15.4", why)
  end)

  it("labels a dump by its header", function()
    assert.equals("pg_dumpall -c of PostgreSQL 12.11", policy.dump_label { format = "pg_dumpall", clean = true,
      dumped_from = "12.11 (x)", dumped_by = "12.11 (x)" })
    assert.equals("pg_dumpall, gzip'd of PostgreSQL 14.2 (by pg_dump 15.1)", policy.dump_label { format = "pg_dumpall",
      gzip = true, dumped_from = "14.2", dumped_by = "15.1" })
  end)

  it("describes a result: counts, each expected class once, the unexpected errors with their lines", function()
    local p = policy.new {}
    p.on_error(e("42710", "CREATE ROLE x;"))
    local r = {
      statements = 10, copy_rows = 5,
      errors = { count = 3, unexpected = 2, by_sqlstate = { ["42710"] = 1, ["22012"] = 2 },
        first = {
          { line = 3, sqlstate = "42710", message = "role exists", statement = "CREATE ROLE x;", expected = true },
          { line = 7, sqlstate = "22012", message = "division by zero", statement = "SELECT 1/0;", database = "db" },
        } },
    }
    local lines = policy.describe(r, 10, p)
    assert.equals("10 statements, 5 COPY rows, 3 errors (2 unexpected)", lines[1])
    assert.equals("  expected ×1 role_exists: " .. policy.CLASSES.role_exists, lines[2])
    assert.equals("  line 7 [22012] db: division by zero — SELECT 1/0;", lines[3])
    assert.equals("  (1 more unexpected errors not listed)", lines[4])
    lines = policy.describe(r, 10)
    assert.equals("errors by SQLSTATE: 22012×2 42710×1", lines[2])
  end)
end)
