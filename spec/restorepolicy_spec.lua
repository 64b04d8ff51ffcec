-- Specs of pgr.restorepolicy: which restore errors a fresh Zalando cluster makes expected, and the
-- summary lines a person reads.
local policy = require "pgr.restorepolicy"

describe("pgr.restorepolicy", function()
  local expected = policy.fresh_cluster()

  it("expects CREATE ROLE and CREATE DATABASE of what the operator made", function()
    assert.is_true(expected { sqlstate = "42710", statement = "CREATE ROLE postgres;" })
    assert.is_true(expected { sqlstate = "42P04", statement = "CREATE DATABASE spire WITH TEMPLATE = template0;" })
  end)

  it("does not expect the same SQLSTATE from other statements", function()
    assert.is_false(expected { sqlstate = "42710", statement = "ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY (a);" })
    assert.is_false(expected { sqlstate = "42P07", statement = "CREATE TABLE public.t (a int);" })
    assert.is_false(policy.strict { sqlstate = "42710", statement = "CREATE ROLE postgres;" })
  end)

  it("takes a site's extra rules", function()
    local p = policy.fresh_cluster { { sqlstate = "42P07", message = '^relation "keep" ' } }
    assert.is_true(p { sqlstate = "42P07", message = 'relation "keep" already exists', statement = "CREATE TABLE keep ()" })
    assert.is_false(p { sqlstate = "42P07", message = 'relation "other" already exists', statement = "x" })
  end)

  it("describes a result: counts, SQLSTATEs and the unexpected errors with their lines", function()
    local lines = policy.describe({
      statements = 10, copy_rows = 5,
      errors = { count = 3, unexpected = 2, by_sqlstate = { ["42710"] = 1, ["22012"] = 2 },
        first = {
          { line = 3, sqlstate = "42710", message = "role exists", statement = "CREATE ROLE x;", expected = true },
          { line = 7, sqlstate = "22012", message = "division by zero", statement = "SELECT 1/0;", database = "db" },
        } },
    }, 10)
    assert.equals("10 statements, 5 COPY rows, 3 errors (2 unexpected)", lines[1])
    assert.equals("errors by SQLSTATE: 22012×2 42710×1", lines[2])
    assert.equals("  line 7 [22012] db: division by zero — SELECT 1/0;", lines[3])
    assert.equals("  (1 more unexpected errors not listed)", lines[4])
  end)
end)
