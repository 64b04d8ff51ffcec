-- Specs of pgr.backup against tests/kubesim (exec into the pods' real PostgreSQL) and a real radosgw:
-- the dump and the manifest as CSM's nightly job writes them, to S3 and to a directory, and every way it
-- can fail leaving nothing behind: a dump that exits non-zero, one cut short (no trailer), exec refused,
-- a missing secret, an existing name.
local backup = require "pgr.backup"
local core = require "pgr.s3.core"
local k8s = require "pgr.k8s"
local sys = require "pgr.sys"
local yaml = require "pgr.yaml"
local kubesim = require "support.kubesim"
local s3server = require "support.s3server"

local BUCKET = "postgres-backup"
local SPIRE = { service = "spire", namespace = "spire", cluster = "spire-postgres",
                users = { "postgres", "service_account", "spire", "standby" } }

local function keys(c, prefix)
  local out = {}
  for _, o in ipairs(assert(c:list(BUCKET, { prefix = prefix }))) do out[#out + 1] = o.key end
  return out
end

local function read_object(c, key)
  local r = assert(c:open(BUCKET, key))
  local parts = {}
  while true do
    local chunk = r:read(1 << 20)
    if not chunk then break end
    parts[#parts + 1] = chunk
  end
  r:close()
  return table.concat(parts)
end

describe("pgr.backup", function()
  local sim, srv, k, c, dir
  setup(function()
    sim = kubesim.up { fixture = "csm" }
    srv = s3server.start()
    k = assert(k8s.connect { kubeconfig = sim.kubeconfig, namespace = "spire" })
    c = assert(core.client { endpoint = srv.endpoint, access_key = srv.access_key, secret_key = srv.secret_key,
                             region = srv.region })
    assert(c:create_bucket(BUCKET))
    dir = os.tmpname()
    os.remove(dir)
    require("pgr.ui").configure { quiet = true }
  end)
  teardown(function()
    if k then k:close() end
    if c then c:close() end
    if srv then srv.stop() end
    if sim then sim:down() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("streams pg_dumpall -c from the master pod to S3 under pgr/, with the manifest as the nightly job writes it", function()
    local res = assert(backup.take { svc = SPIRE, to = "s3", k8s = k, s3 = c, bucket = BUCKET,
                                     timestamp = "2030-01-02T03:04:05" })
    assert.equal("pgr/spire-postgres-2030-01-02T03:04:05", res.name)
    assert.equal("s3://postgres-backup/pgr/spire-postgres-2030-01-02T03:04:05.psql", res.url)
    assert.equal("spire-postgres-0", res.pod)
    assert.same({ "--backup", res.name }, res.restore_args)
    assert.same({ res.name .. ".manifest", res.name .. ".psql" }, keys(c, "pgr/"))
    local dump = read_object(c, res.dump)
    assert.equal(res.size, #dump)
    assert.matches("\nDROP DATABASE spire;\n", dump)            -- -c, without IF EXISTS
    assert.is_nil(dump:find("IF EXISTS", 1, true))
    assert.matches("\nCOPY public.selectors ", dump)
    assert.equal(backup.TRAILER .. "--\n\n", dump:sub(-#backup.TRAILER - 4))
    local docs = assert(yaml.decode(read_object(c, res.manifest)))
    local names = {}
    for i, d in ipairs(docs) do
      names[i] = d.metadata.name
      local fields = {}
      for f in pairs(d) do fields[#fields + 1] = f end
      table.sort(fields)
      assert.same({ "apiVersion", "data", "kind", "metadata", "type" }, fields)
      assert.equal("Secret", d.kind)
      assert.equal("spire", d.metadata.namespace)
      assert.equal("spire-postgres", d.metadata.labels["cluster-name"])
      assert.is_string(d.data.password)
    end
    assert.same({ "service-account.spire-postgres.credentials", "spire.spire-postgres.credentials",
                  "postgres.spire-postgres.credentials", "standby.spire-postgres.credentials" }, names)
    local secret = assert(k:get("secret", "spire.spire-postgres.credentials"))
    assert.equal(secret.data.password, docs[2].data.password)
    -- the same name again is refused, nothing overwritten
    local again, err = backup.take { svc = SPIRE, to = "s3", k8s = k, s3 = c, bucket = BUCKET,
                                     timestamp = "2030-01-02T03:04:05" }
    assert.is_nil(again)
    assert.equal("exists", err.code)
  end)

  it("writes to a directory: files 0600, the same dump bytes", function()
    local res = assert(backup.take { svc = SPIRE, to = dir .. "/bk", k8s = k, timestamp = "2030-01-02T03:04:06" })
    assert.same({ "--dump", dir .. "/bk/spire-postgres-2030-01-02T03:04:06.psql",
                  "--manifest", dir .. "/bk/spire-postgres-2030-01-02T03:04:06.manifest" }, res.restore_args)
    assert.equal(384, sys.stat(res.dump).mode)
    assert.equal(384, sys.stat(res.manifest).mode)
    assert.equal(448, sys.stat(dir .. "/bk").mode)
    assert.equal(res.size, sys.stat(res.dump).size)
    assert.same({ "spire-postgres-2030-01-02T03:04:06.manifest", "spire-postgres-2030-01-02T03:04:06.psql" },
      (function() local l = sys.listdir(dir .. "/bk") table.sort(l) return l end)())
    assert.equal(4, assert(backup.check_manifest(SPIRE, io.open(res.manifest):read("a"))))
  end)

  it("a dump that fails or is cut short leaves no object and no file", function()
    local saved = backup.defaults.dump
    backup.defaults.dump = { "sh", "-c", "pg_dumpall -c -U postgres | head -c 20000" }
    local res, err = backup.take { svc = SPIRE, to = "s3", k8s = k, s3 = c, bucket = BUCKET, timestamp = "2030-01-03T00:00:00" }
    assert.is_nil(res)
    assert.equal("dump", err.code)
    assert.matches("lacks pg_dumpall's completion trailer %(20000 bytes%)", err.message)
    res, err = backup.take { svc = SPIRE, to = dir .. "/cut", k8s = k, timestamp = "2030-01-03T00:00:00" }
    assert.is_nil(res)
    assert.same({}, sys.listdir(dir .. "/cut"))
    backup.defaults.dump = { "pg_dumpall", "-c", "-U", "nosuchrole" }
    res, err = backup.take { svc = SPIRE, to = "s3", k8s = k, s3 = c, bucket = BUCKET, timestamp = "2030-01-03T00:00:01" }
    backup.defaults.dump = saved
    assert.is_nil(res)
    assert.matches("pg_dumpall in pod spire%-postgres%-0 exited 1: .*role \"nosuchrole\" does not exist", err.message)
    assert.same({}, keys(c, "pgr/spire-postgres-2030-01-03"))
  end)

  it("refuses before writing anything when exec is forbidden or a secret is missing", function()
    sim:admin { op = "deny", verb = "create", resource = "pods/exec", namespace = "spire" }
    local res, err = backup.take { svc = SPIRE, to = "s3", k8s = k, s3 = c, bucket = BUCKET, timestamp = "2030-01-04T00:00:00" }
    sim:admin { op = "allow_all" }
    assert.is_nil(res)
    assert.equal("forbidden", err.code)
    assert.matches("kubectl auth can%-i create pods/exec %-n spire", err.message)
    local svc = { service = "spire", namespace = "spire", cluster = "spire-postgres",
                  users = { "postgres", "nobody", "standby" } }
    res, err = backup.take { svc = svc, to = "s3", k8s = k, s3 = c, bucket = BUCKET, timestamp = "2030-01-04T00:00:01" }
    assert.is_nil(res)
    assert.equal("secret", err.code)
    assert.matches("nobody%.spire%-postgres%.credentials", err.message)
    assert.same({}, keys(c, "pgr/spire-postgres-2030-01-04"))
  end)

  it("checks a manifest for every user's secret", function()
    local text = assert(backup.manifest(SPIRE, k))
    assert.equal(4, assert(backup.check_manifest(SPIRE, text)))
    local other = { namespace = "spire", cluster = "spire-postgres", users = { "postgres", "hmsdsuser" } }
    local n, err = backup.check_manifest(other, text)
    assert.is_nil(n)
    assert.matches("lacks the credentials of hmsdsuser%.spire%-postgres%.credentials", err.message)
  end)
end)
