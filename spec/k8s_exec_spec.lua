-- Specs of pgr.k8s exec against tests/kubesim, whose database pods run commands next to their real
-- PostgreSQL: output, exit codes, stdin both ways, streaming, cancellation, timeouts, heartbeats, the
-- API's refusals, v4, and the REPL's exec helper.
local k8s = require "pgr.k8s"
local sys = require "pgr.sys"
local kubesim = require "support.kubesim"

local sim, k

-- How many processes of this machine (where kubesim's pods run their commands) match pattern.
local function processes(pattern)
  -- "[s]leep 1" matches "sleep 1" but not the shell running this pgrep, whose line holds "[s]leep"
  local re = "[" .. pattern:sub(1, 1) .. "]" .. pattern:sub(2):gsub("%.", "\\.")
  local p = io.popen("pgrep -f " .. kubesim.quote(re) .. " | wc -l")
  local n = tonumber(p:read("a"))
  p:close()
  return n
end

-- Polls until fn() is true (a generous deadline: CI machines are busy).
local function eventually(fn, seconds)
  local deadline = sys.now() + (seconds or 20)
  repeat
    if fn() then return true end
    sys.sleep(0.05)
  until sys.now() > deadline
  return fn()
end

describe("pgr.k8s exec", function()
  setup(function()
    sim = kubesim.up { fixture = "csm" }
    k = assert(k8s.connect { kubeconfig = sim.kubeconfig, namespace = "spire" })
  end)

  teardown(function()
    if k then k:close() end
    if sim then sim:down() end
  end)

  it("runs psql in the master pod over v5.channel.k8s.io and returns its output and exit code 0", function()
    local r = assert(k:exec("spire-postgres-0", { "psql", "-U", "postgres", "-d", "spire", "-Atc",
      "select count(*) from selectors" }, { container = "postgres" }))
    assert.equal(0, r.code)
    assert.is_true(r.ok)
    assert.equal("400\n", r.stdout)
    assert.equal("", r.stderr)
    assert.equal("v5.channel.k8s.io", r.protocol)
    assert.equal("Success", r.status.status)
  end)

  it("takes NAMESPACE/NAME, a pod object, and the client's namespace", function()
    local other = assert(k8s.connect { kubeconfig = sim.kubeconfig, namespace = "default" })
    local r = assert(other:exec("services/cray-smd-postgres-0", { "sh", "-c", "echo $HOSTNAME" }))
    assert.equal("cray-smd-postgres-0\n", r.stdout)
    local pod = assert(other:get("pod", "spire-postgres-0", { namespace = "spire" }))
    r = assert(other:exec(pod, { "sh", "-c", "echo $HOSTNAME" }))
    assert.equal("spire-postgres-0\n", r.stdout)
    other:close()
  end)

  it("returns a non-zero exit code with both streams, as kubectl exec does", function()
    local r = assert(k:exec("spire-postgres-0", { "sh", "-c", "echo out; echo err >&2; exit 7" }))
    assert.equal(7, r.code)
    assert.is_false(r.ok)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.equal("NonZeroExitCode", r.status.reason)
    -- kubectl's own reading of the same command
    local out, rc = sim:kubectl("exec spire-postgres-0 -n spire -c postgres -- sh -c 'exit 7'")
    assert.equal(7, rc, out)
  end)

  it("passes each argument as it is, no shell in between", function()
    local r = assert(k:exec("spire-postgres-0", { "printf", "%s|", "a b", "$HOME", "'q'", ";" }))
    assert.equal("a b|$HOME|'q'|;|", r.stdout)
  end)

  it("says when the command cannot start, when the pod or container does not exist, and when exec is forbidden",
    function()
      local r, err = k:exec("spire-postgres-0", { "no-such-program" })
      assert.is_nil(r)
      assert.equal("exec_failed", err.code)
      assert.matches("executable file not found", err.message)
      r, err = k:exec("no-such-pod", { "true" })
      assert.is_nil(r)
      assert.equal(404, err.code)
      assert.matches('pods "no%-such%-pod" not found %(kubectl get pods %-n spire%)', err.message)
      r, err = k:exec("spire-postgres-0", { "true" }, { container = "sidecar" })
      assert.is_nil(r)
      assert.equal(400, err.code)
      assert.matches("container sidecar is not valid for pod spire%-postgres%-0", err.message)
      sim:admin { op = "deny", verb = "create", resource = "pods/exec", namespace = "spire" }
      r, err = k:exec("spire-postgres-0", { "true" })
      sim:admin { op = "allow_all" }
      assert.is_nil(r)
      assert.equal(403, err.code)
      assert.matches('cannot create resource "pods/exec"', err.message)
      assert.is_true(assert(k:can_i("create", "pods/exec", "spire")))
      r, err = k:exec("spire/../x", { "true" })
      assert.is_nil(r)
      assert.equal("usage", err.code)
    end)

  it("streams stdin in and stdout out, byte for byte, from a string and from a reader", function()
    local data = {}
    for i = 1, 40000 do data[i] = ("%08d\0\255 line %d\n"):format(i, i) end
    data = table.concat(data) -- 1.2 MB with NULs and high bytes: larger than the send queue's bound
    local r = assert(k:exec("spire-postgres-0", { "cat" }, { stdin = data }))
    assert.equal(0, r.code)
    assert.equal(#data, #r.stdout)
    assert.is_true(data == r.stdout)
    local pos = 1
    local reader = function()
      if pos > #data then return nil end
      local n = math.random(1, 100000)
      local chunk = data:sub(pos, pos + n - 1)
      pos = pos + n
      return chunk
    end
    local got = {}
    r = assert(k:exec("spire-postgres-0", { "sha256sum" }, { stdin = reader }))
    local want = assert(k:exec("spire-postgres-0", { "sh", "-c", "cat | sha256sum" }, { stdin = data }))
    assert.equal(want.stdout, r.stdout)
    -- stdin closed at its end: a reader of stdin finishes (psql < dump, as the runbook restores)
    r = assert(k:exec("spire-postgres-0", { "psql", "-U", "postgres", "-At" },
      { stdin = "select 6 * 7;\nselect current_user;\n" }))
    assert.equal("42\npostgres\n", r.stdout)
    -- an empty stdin is closed at once
    r = assert(k:exec("spire-postgres-0", { "wc", "-c" }, { stdin = "" }))
    assert.equal("0\n", r.stdout)
    assert.same({}, got)
  end)

  it("streams a large output to a callback without collecting it", function()
    local n, calls, seen = 0, 0, {}
    local r = assert(k:exec("spire-postgres-0", { "sh", "-c", "head -c 30000000 /dev/zero; echo done >&2" }, {
      on_stdout = function(chunk)
        n, calls = n + #chunk, calls + 1
        if chunk:find("[^%z]") then seen.bad = true end
      end,
    }))
    assert.equal(0, r.code)
    assert.equal(30000000, n)
    assert.is_nil(r.stdout)
    assert.equal("done\n", r.stderr)
    assert.is_nil(seen.bad)
    assert.is_true(calls > 10)
  end)

  it("stops the command when a callback says stop, and the command ends in the pod", function()
    local r, err = k:exec("spire-postgres-0", { "sh", "-c", "echo started; exec sleep 31.25" }, {
      on_stdout = function() return false end,
    })
    assert.is_nil(r)
    assert.equal("cancelled", err.code)
    assert.is_true(eventually(function() return processes("sleep 31.25") == 0 end))
  end)

  it("stops a command that runs past its timeout, or stays silent past its idle limit", function()
    local t0 = sys.now()
    local r, err = k:exec("spire-postgres-0", { "sh", "-c", "while :; do echo x; sleep 0.1; done # tag31.5" },
      { timeout = 1, on_stdout = function() end })
    assert.is_nil(r)
    assert.equal("timeout", err.code)
    assert.matches("did not finish within 1 s", err.message)
    assert.is_true(sys.now() - t0 >= 1)
    r, err = k:exec("spire-postgres-0", { "sh", "-c", "sleep 31.75" }, { idle = 0.5 })
    assert.is_nil(r)
    assert.equal("timeout", err.code)
    assert.matches("wrote nothing for 0.5 s", err.message)
    assert.is_true(eventually(function() return processes("sleep 31.75") == 0 and processes("tag31.5") == 0 end))
  end)

  it("answers the server's heartbeat pings, so a silent command is not cut", function()
    sim:admin { op = "timings", exec_ping = 0.1 }
    local r, err = k:exec("spire-postgres-0", { "sh", "-c", "sleep 1.5; echo alive" })
    sim:admin { op = "timings", exec_ping = 5 }
    assert.is_nil(err)
    assert.equal("alive\n", r.stdout)
    local log = io.open(sim.dir .. "/kubesim.log"):read("a")
    local pings, pongs = log:match('exec spire/spire%-postgres%-0 %["sh", "%-c", "sleep 1.5; echo alive"%]: exit 0, %d+ bytes out, (%d+) pings, (%d+) pongs')
    assert.is_true(tonumber(pings) >= 5, log:sub(-2000))
    assert.is_true(tonumber(pongs) >= tonumber(pings) - 1)
  end)

  it("speaks v4.channel.k8s.io with a server that offers no more, which cannot close stdin", function()
    local s = assert(k.core:exec("/api/v1/namespaces/spire/pods/spire-postgres-0/exec?command=cat&stdin=true&stdout=true",
      { v4_only = true }))
    assert.equal("v4.channel.k8s.io", s:protocol())
    local ok, err = s:close_stdin()
    assert.is_nil(ok)
    assert.equal("unsupported", err.code)
    assert(s:send("over v4"))
    local kind, channel, data = s:next(10)
    assert.equal("data", kind)
    assert.equal(1, channel)
    assert.equal("over v4", data)
    s:close()
    s:close() -- twice is fine
    assert.has_error(function() s:next(0) end)
  end)

  it("the REPL's exec streams to the terminal and returns the exit code", function()
    local repl = require "pgr.cmd.repl"
    k8s.configure { kubeconfig = sim.kubeconfig }
    local out = {}
    local code = repl.exec("spire/spire-postgres-0", "echo from-repl; exit 3", { on_stdout = function(c) out[#out + 1] = c end })
    assert.equal(3, code)
    assert.equal("from-repl\n", table.concat(out))
    local env = repl.preload({})
    assert.equal(repl.exec, env.exec)
  end)
end)
