-- Specs of pgr.restore and services/*.lua without a cluster: the five procedures (their steps, in the runbook's
-- order, with the right ones destructive and the right ones checks) and the site-command runner.
local runbook = require "pgr.runbook"
local restore = require "pgr.restore"

local function load(name)
  return assert(runbook.load("services/" .. name .. ".lua"))
end

local function names(proc)
  local t = {}
  for i, s in ipairs(proc.steps) do t[i] = s.name end
  return t
end

local function index_of(proc, pattern)
  for i, s in ipairs(proc.steps) do
    if s.name:find(pattern) then return i, s end
  end
end

describe("pgr.restore procedures", function()
  for _, svc in ipairs({ "spire", "keycloak", "vcs", "hsm", "sls" }) do
    it(svc .. ": checks come first, and nothing destructive runs before them", function()
      local p = load(svc)
      local last_check, first_destructive = 0, math.huge
      for i, s in ipairs(p.steps) do
        if s.preflight then last_check = i end
        if s.destructive and i < first_destructive then first_destructive = i end
        assert.is_string(s.touches, s.name)
      end
      assert.is_true(last_check >= 4)
      assert.is_true(last_check < first_destructive)
      -- what is destroyed is saved before
      local saved = index_of(p, "^Save the postgresql object and the current secrets")
      assert.is_true(saved < first_destructive)
    end)
  end

  it("every service is built into the binary too, found last when no file has the name", function()
    local dirs = runbook.service_dirs
    runbook.service_dirs = function() return { "/nonexistent" } end
    for _, svc in ipairs({ "spire", "keycloak", "vcs", "hsm", "sls" }) do
      local path = assert(runbook.locate(svc))
      assert.equals(runbook.BUILTIN .. svc, path)
      local built_in = assert(runbook.load(path))
      -- the very procedure of services/NAME.lua
      assert.same(names(load(svc)), names(built_in))
    end
    runbook.service_dirs = dirs
    assert.is_nil(runbook.locate("no-such-service"))
    -- a file of the name wins over the built-in copy
    assert.equals("services/spire.lua", runbook.locate("services/spire.lua"))
  end)

  it("spire: the runbook's order, then Spire's own steps", function()
    local n = names(load("spire"))
    assert.equals(24, #n)
    assert.equals("Check the operator deletes a deleted cluster's volumes (enable_persistent_volume_claim_deletion)", n[5])
    assert.equals("Check the site file provides the commands and nodes the last steps run", n[6])
    assert.equals("Back up spire-postgres as it is now, where no retention deletes it (the way back)", n[7])
    assert.equals("Scale spire-server to 0 and wait until its pods are gone", n[10])
    assert.equals("Delete the postgresql spire-postgres and wait until its pods are gone", n[11])
    assert.equals("Create the postgresql spire-postgres with one instance and wait until it is Running", n[12])
    assert.equals("Stream the dump into the master pod", n[13])
    assert.equals("Update or re-create the spire-postgres secrets", n[14])
    assert.equals("Restart the master pod and wait until it is ready", n[16])
    assert.equals("Scale the cluster back to its recorded numberOfInstances and wait until it is Running", n[17])
    assert.equals("Check every replica streams from the master", n[18])
    assert.equals("Scale spire-server back to its recorded replicas and wait until its pods are ready", n[19])
    assert.equals("Restart the spire-agent daemonset and the spire-jwks deployment", n[20])
    assert.equals("Restart spire-agent on every NCN", n[21])
    assert.equals("Wait for the rollouts of the spire-agent daemonset and the spire-jwks deployment", n[22])
    assert.equals("Verify a JWT can be fetched", n[24])
  end)

  for _, svc in ipairs({ "spire", "keycloak", "vcs", "hsm", "sls" }) do
    it(svc .. ": the live cluster is backed up after the checks and before anything changes", function()
      local p = load(svc)
      local i, step = index_of(p, "^Back up .* as it is now, where no retention deletes it %(the way back%)$")
      assert.truthy(i)
      assert.is_true(step.preflight)
      assert.equals("backup", step.mark)
      for j = 1, i - 1 do assert.is_true(p.steps[j].preflight, p.steps[j].name) end
      for j = i + 1, #p.steps do
        if p.steps[j].destructive then break end
        assert.is_nil(p.steps[j].preflight and p.steps[j].name:find("^Back up"))
      end
      local first_destructive = math.huge
      for j, s in ipairs(p.steps) do
        if s.destructive and j < first_destructive then first_destructive = j end
      end
      assert.is_true(i < first_destructive)
      assert.matches("pg_dumpall %-c", step.touches)
    end)
  end

  it("sls: in place — the cluster is never deleted; databases dropped after the scale-down", function()
    local p = load("sls")
    assert.is_nil(index_of(p, "^Delete the postgresql"))
    assert.is_nil(index_of(p, "^Create the postgresql"))
    local scale = index_of(p, "^Scale cray%-sls to 0")
    local drop, step = index_of(p, "drop the sls and service_db databases")
    local stream = index_of(p, "^Stream the dump")
    local grant = index_of(p, "^Grant connect")
    assert.is_true(scale < drop and drop < stream and stream < grant)
    assert.is_true(step.destructive)
    assert.truthy(index_of(p, "^Restart the database pods"))
    -- the cluster is not re-created: the operator's PVC deletion does not matter; replicas are checked
    assert.is_nil(index_of(p, "enable_persistent_volume_claim_deletion"))
    assert.is_true(index_of(p, "^Scale the cluster back") < index_of(p, "^Check every replica streams"))
  end)

  it("hsm: loader job before the delete, Ethernet interfaces cleared after the dump, all pods restarted", function()
    local p = load("hsm")
    local job = index_of(p, "^Re%-run the cray%-smd%-init job")
    local delete = index_of(p, "^Delete the postgresql cray%-smd%-postgres")
    local stream = index_of(p, "^Stream the dump")
    local eth = index_of(p, "^Delete the Ethernet interfaces")
    local secrets = index_of(p, "^Update or re%-create")
    assert.is_true(job < delete and stream < eth and eth < secrets)
    local _, check = index_of(p, "schema version")
    assert.is_true(check.preflight)
    assert.truthy(index_of(p, "^Restart the database pods"))
  end)

  it("keycloak and vcs: their clients and own steps", function()
    local k = load("keycloak")
    assert.truthy(index_of(k, "^Re%-run the keycloak%-setup job"))
    assert.truthy(index_of(k, "^Re%-run the keycloak%-users%-localize job"))
    assert.truthy(index_of(k, "oauth2%-proxies"))
    assert.equals("services/keycloak-postgres", k.cluster)
    local v = load("vcs")
    local _, pvc = index_of(v, "gitea%-vcs%-data%-claim")
    assert.is_true(pvc.preflight)
    assert.equals("services/gitea-vcs-postgres", v.cluster)
  end)

  it("names the credential secrets as the operator does", function()
    assert.equals("service-account.spire-postgres.credentials",
      restore.secret_name({ cluster = "spire-postgres" }, "service_account"))
  end)
end)

describe("restore.command", function()
  local logged
  local ctx
  before_each(function()
    logged = {}
    ctx = { dry_run = false, log = function(_, t) logged[#logged + 1] = t end,
            write = function() return true end }
  end)

  it("runs an argv without a shell reading the words", function()
    ctx.site = { commands = { spire_fix_storage = { "printf", "%s|", "a b", "it's", "$HOME", "`x`" } } }
    local out, note = restore.command(ctx, "spire_fix_storage")
    assert.equals("a b|it's|$HOME|`x`|", out)
    assert.is_nil(note)
  end)

  it("gives a site command pgr's environment without its credentials", function()
    local pgr = os.getenv("PGR") or "./pgr"
    local script = [[
      local restore = require "pgr.restore"
      local ctx = { dry_run = false, log = function() end, site = { commands = { spire_fix_storage = { "env" } } } }
      io.write(assert(restore.command(ctx, "spire_fix_storage")))
    ]]
    local p = io.popen(("PGPASSWORD=pg-in-env AWS_SECRET_ACCESS_KEY=aws-in-env AWS_SESSION_TOKEN=tok-in-env "
      .. "PGR_SPEC_KEEP=kept %s -e '%s'"):format(pgr, script))
    local out = p:read("a")
    p:close()
    assert.matches("PGR_SPEC_KEEP=kept", out, 1, true)
    for _, secret in ipairs { "pg-in-env", "aws-in-env", "tok-in-env" } do
      assert.is_nil(out:find(secret, 1, true), secret)
    end
  end)

  it("refuses a Keycloak credentials file others may read, before any request", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("admin\nkc-password\n")
    f:close()
    os.execute("chmod 0644 " .. path)
    ctx.site = { keycloak = { token_url = "https://127.0.0.1:1/token", credentials_file = path } }
    ctx.secret = function(_, v) return v end
    local ok, err = restore.keycloak_token(ctx)
    os.remove(path)
    assert.is_nil(ok)
    assert.matches(("refusing keycloak.credentials_file %s: it holds secrets but is open to others (mode 0644)")
      :format(path), tostring(err), 1, true)
  end)

  it("reports a failing command with its exit status and output", function()
    ctx.site = { commands = { spire_fix_storage = { "sh", "-c", "echo nope >&2; exit 4" } } }
    local out, err = restore.command(ctx, "spire_fix_storage")
    assert.is_nil(out)
    assert.equals("command", err.code)
    assert.equals(4, err.exit)
    assert.matches("sh exited 4: nope", tostring(err))
  end)

  it("names a program that cannot be run and the site field to fix", function()
    ctx.site = { commands = { spire_fix_storage = { "/nonexistent/fix-spire.sh" } } }
    local out, err = restore.command(ctx, "spire_fix_storage")
    assert.is_nil(out)
    assert.matches("cannot run /nonexistent/fix-spire.sh (commands.spire_fix_storage in the site file)",
      tostring(err), 1, true)
  end)

  it("kills a command that outlives its bound", function()
    -- (the command would sleep 600 s: returning before that shows the bound ended it)
    ctx.site = { commands = { spire_fix_storage = { "sleep", "600" } } }
    local saved = restore.COMMAND_TIMEOUT
    restore.COMMAND_TIMEOUT = 0.3
    local t0 = require("pgr.sys").now()
    local out, err = restore.command(ctx, "spire_fix_storage")
    restore.COMMAND_TIMEOUT = saved
    assert.is_nil(out)
    assert.matches("did not finish within", tostring(err), 1, true)
    assert.is_true(require("pgr.sys").now() - t0 < 600)
  end)

  it("skips a command the site sets to false", function()
    ctx.site = { commands = { spire_fix_storage = false } }
    local out, note = restore.command(ctx, "spire_fix_storage")
    assert.equals("", out)
    assert.matches("^skipped", note)
  end)
end)
