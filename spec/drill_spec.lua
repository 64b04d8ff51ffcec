-- Specs of pgr.drill's own parts: the table names it puts into SQL, the scratch postgresql it makes
-- from the live one, the clean-up that never deletes what is not pgr's (against kubesim, with its
-- operator held back so no server starts), and the report a person reads. The whole drill runs
-- against the sandbox in tests/e2e/drill.t.
local drill = require "pgr.drill"
local k8s = require "pgr.k8s"
local kubesim = require "support.kubesim"

describe("pgr.drill", function()
  it("reads the table names of pg_dump's COPY lines, and nothing else", function()
    assert.same({ "public", "system" }, drill.qualified_name("public.system"))
    assert.same({ "public", "user" }, drill.qualified_name('public."user"'))
    assert.same({ "s", 'a"b.c' }, drill.qualified_name('s."a""b.c"'))
    assert.same({ "t" }, drill.qualified_name("t"))
    for _, bad in ipairs { "public.x; DROP TABLE y", "a.b.c", '"open', "public.", "", "x y" } do
      assert.is_nil(drill.qualified_name(bad), bad)
    end
  end)

  it("makes the scratch postgresql from the live one: one instance, team pgr, nothing that reaches out", function()
    local live = {
      apiVersion = "acid.zalan.do/v1", kind = "postgresql",
      metadata = { name = "spire-postgres", namespace = "spire", uid = "u", resourceVersion = "9",
                   labels = { team = "spire" } },
      spec = { teamId = "spire", numberOfInstances = 3, postgresql = { version = "14", parameters = { a = "1" } },
               volume = { size = "20Gi" }, resources = { requests = { cpu = "1" } },
               users = { spire = { "createdb" } }, databases = { spire = "spire" },
               clone = { cluster = "other" }, standby = { s3_wal_path = "s3://x" }, streams = { {} },
               enableLogicalBackup = true, enableConnectionPooler = true },
      status = { PostgresClusterStatus = "Running" },
    }
    local o = drill.scratch_object(live, "pgr-drill-spire-postgres", "spire-postgres")
    assert.same({ name = "pgr-drill-spire-postgres", namespace = "spire",
                  labels = { ["app.kubernetes.io/managed-by"] = "pgr", ["pgr/drill-of"] = "spire-postgres", team = "pgr" } },
                o.metadata)
    assert.equals(1, o.spec.numberOfInstances)
    assert.equals("pgr", o.spec.teamId)
    assert.same({ version = "14", parameters = { a = "1" } }, o.spec.postgresql)
    assert.same({ size = "20Gi" }, o.spec.volume)
    assert.same({ requests = { cpu = "1" } }, o.spec.resources)
    assert.same({ spire = "spire" }, o.spec.databases)
    assert.is_nil(o.spec.clone)
    assert.is_nil(o.spec.standby)
    assert.is_nil(o.spec.streams)
    assert.is_false(o.spec.enableLogicalBackup)
    assert.is_false(o.spec.enableConnectionPooler)
    assert.is_nil(o.status)
    assert.equals(3, live.spec.numberOfInstances) -- the live object is not changed
  end)

  describe("clean-up", function()
    local sim, k
    setup(function()
      sim = kubesim.up { fixture = "none" }
      -- the operator only writes a status for these: no pods, no servers
      sim:admin { op = "operator_fail", match = "pgr-drill|not-pgrs", status = "CreateFailed" } -- a Python regex
      k = assert(k8s.connect { kubeconfig = sim.kubeconfig, namespace = "default" })
      -- an operator that keeps a deleted cluster's secrets and volume claims (both settings false,
      -- operator 1.12 and later): what a scratch cluster leaves, pgr's clean-up removes itself. With
      -- the defaults the operator deletes them too, and which of the two saw them first is a race.
      assert(k:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "postgres-operator" },
        data = { enable_secrets_deletion = "false", enable_persistent_volume_claim_deletion = "false" } }))
    end)
    teardown(function()
      if k then k:close() end
      if sim then sim:down() end
    end)

    local function pgo(name, labels)
      return { apiVersion = "acid.zalan.do/v1", kind = "postgresql",
               metadata = { name = name, namespace = "default", labels = labels },
               spec = { teamId = "pgr", numberOfInstances = 1, postgresql = { version = "15" }, volume = { size = "1Gi" } } }
    end

    it("finds nothing to remove when there is nothing", function()
      assert.equals("nothing", drill.remove_scratch(k, "pgr-drill-none", 20))
    end)

    it("refuses a postgresql of the scratch name that is not pgr's, and deletes nothing", function()
      assert(k:create(pgo("pgr-drill-not-pgrs", { team = "x" })))
      local what, err = drill.remove_scratch(k, "pgr-drill-not-pgrs", 20)
      assert.is_nil(what)
      assert.equals("scratch", err.code)
      assert.matches("is not pgr's %(no label app.kubernetes.io/managed%-by=pgr%): pgr drill will not delete it", err.message)
      assert(k:get("postgresql", "pgr-drill-not-pgrs"))
    end)

    it("removes a leftover scratch cluster with its secrets and volume claims, and only those", function()
      assert(k:create(pgo("pgr-drill-x", { ["app.kubernetes.io/managed-by"] = "pgr" })))
      local labels = { application = "spilo", ["cluster-name"] = "pgr-drill-x" }
      assert(k:create({ apiVersion = "v1", kind = "Secret", metadata = { name = "postgres.pgr-drill-x.credentials",
        labels = labels }, data = { password = "eA==" } }))
      assert(k:create({ apiVersion = "v1", kind = "PersistentVolumeClaim", metadata = { name = "pgdata-pgr-drill-x-0",
        labels = labels }, spec = { accessModes = { "ReadWriteOnce" }, resources = { requests = { storage = "1Gi" } } } }))
      assert(k:create({ apiVersion = "v1", kind = "Secret", metadata = { name = "postgres.x.credentials",
        labels = { application = "spilo", ["cluster-name"] = "x" } }, data = { password = "eA==" } }))
      assert.equals("postgresql, 1 persistentvolumeclaims, 1 secrets", drill.remove_scratch(k, "pgr-drill-x", 20))
      assert.is_true(k8s.is_not_found(select(2, k:get("postgresql", "pgr-drill-x"))))
      assert.is_true(k8s.is_not_found(select(2, k:get("secrets", "postgres.pgr-drill-x.credentials"))))
      assert(k:get("secrets", "postgres.x.credentials"))
    end)
  end)

  it("reports for a person: verdict, backup, phases, checks, reasons", function()
    local lines = drill.describe({
      service = "hsm", namespace = "services", cluster = "cray-smd-postgres", result = "fail", seconds = 12,
      backup = { name = "cray-smd-postgres-2022-09-14T03:10:04", source = "s3://postgres-backup/x.psql", size = 2048,
                 age_seconds = 7300, dumped_from = "12.11 (Debian)" },
      phases = { { name = "checks", seconds = 0.5, ok = true }, { name = "restore", seconds = 3, ok = false } },
      checks = { { name = "logins", ok = false, detail = "cannot log in: hmsdsuser" } },
      reasons = { "logins: cannot log in: hmsdsuser" },
    })
    assert.equals("drill of hsm (services/cray-smd-postgres): FAIL in 12s", lines[1])
    assert.equals("  backup   cray-smd-postgres-2022-09-14T03:10:04 (s3://postgres-backup/x.psql), 2.0 KiB, taken 2 h ago, "
      .. "PostgreSQL 12.11", lines[2])
    assert.equals("  phases   checks 0.5s, restore 3.0s (failed)", lines[3])
    assert.equals("  checks FAIL logins: cannot log in: hmsdsuser", lines[4])
    assert.equals("  because logins: cannot log in: hmsdsuser", lines[5])
  end)
end)
