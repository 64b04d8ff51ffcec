-- Specs of pgr.lease against a real simulator (tests/kubesim serves coordination.k8s.io/v1 Leases,
-- with the real server's conflicts and validation): acquire, refuse, take over an expired lease or
-- one of the same run, renew through conflicts, lose it to another holder, release. Two "processes"
-- are two identities in this one; the clock of the second is moved forward instead of sleeping.
local k8s = require "pgr.k8s"
local lease = require "pgr.lease"
local heartbeat = require "pgr.heartbeat"
local sys = require "pgr.sys"
local kubesim = require "support.kubesim"

local sim, k
local NS = "default"

local A = { user = "alice", host = "ncn-m001", pid = 101 }
local B = { user = "bob", host = "ncn-m002", pid = 202 }

local function get(name)
  return assert(k:get("leases", name, { namespace = NS }))
end

local function opts(cluster, me, run, extra)
  local o = { namespace = NS, cluster = cluster, run = run, me = me, seconds = 30, command = "run" }
  for key, v in pairs(extra or {}) do o[key] = v end
  return o
end

describe("pgr.lease", function()
  setup(function()
    sim = kubesim.up { fixture = "none" }
    k = assert(k8s.connect { kubeconfig = sim.kubeconfig, namespace = NS })
  end)

  teardown(function()
    if k then k:close() end
    if sim then sim:down() end
  end)

  it("writes and reads MicroTime", function()
    assert.equals("2022-09-14T03:10:04.250000Z", lease.micro_time(1663125004.25))
    assert.equals(1663125004.25, lease.parse_time("2022-09-14T03:10:04.250000Z"))
    assert.equals(1663125004, lease.parse_time("2022-09-14T03:10:04Z"))
    assert.equals(1663125004, lease.parse_time("2022-09-14T05:10:04+02:00"))
    assert.is_nil(lease.parse_time("yesterday"))
  end)

  it("is created for the first holder, with who, since when and for how long", function()
    local h = assert(lease.acquire(k, opts("c1", A, "run-1")))
    local o = get("pgr-c1")
    assert.equals("alice@ncn-m001 pid 101 run run-1", o.spec.holderIdentity)
    assert.equals(30, o.spec.leaseDurationSeconds)
    assert.equals(0, o.spec.leaseTransitions)
    assert.is_true(math.abs(lease.parse_time(o.spec.renewTime) - sys.time()) < 60)
    assert.equals(o.spec.acquireTime, o.spec.renewTime)
    assert.equals("pgr", o.metadata.labels["app.kubernetes.io/managed-by"])
    assert.equals("run", o.metadata.annotations["pgr/command"])
    assert.is_nil(h.took)
    -- the real kubectl reads it, holder column and all
    local out, rc = sim:kubectl("get lease pgr-c1 -n " .. NS)
    assert.equals(0, rc, out)
    assert.matches("pgr%-c1%s+alice@ncn%-m001 pid 101 run run%-1", out)
    h:release()
  end)

  it("refuses a second holder, naming the first, and changes nothing", function()
    local h = assert(lease.acquire(k, opts("c2", A, "run-a", { command = "drill" })))
    local rv = get("pgr-c2").metadata.resourceVersion
    local none, err = lease.acquire(k, opts("c2", B, "run-b"))
    assert.is_nil(none)
    assert.equals("lease_held", err.code)
    assert.matches("c2 is in use by alice@ncn-m001 pid 101 run run-a (pgr drill): lease default/pgr-c2, renewed 0 s ago, "
      .. "expires in 30 s", err.message, 1, true)
    assert.equals("run-a", err.holder.run)
    assert.equals("ncn-m001", err.holder.host)
    assert.equals(rv, get("pgr-c2").metadata.resourceVersion)
    h:release()
  end)

  it("is taken over once it expired, by the holder's duration and renewTime", function()
    local h = assert(lease.acquire(k, opts("c3", A, "run-a", { seconds = 20 })))
    -- 19 s later it still holds; 21 s later it is taken
    local t0 = sys.time()
    local none, err = lease.acquire(k, opts("c3", B, "run-b", { clock = function() return t0 + 19 end }))
    assert.is_nil(none)
    assert.equals("lease_held", err.code)
    local hb = assert(lease.acquire(k, opts("c3", B, "run-b", { clock = function() return t0 + 21 end })))
    assert.matches("^alice@ncn%-m001 pid 101 run run%-a", hb.took.identity)
    assert.matches("expired", hb.took.why)
    local o = get("pgr-c3")
    assert.equals("bob@ncn-m002 pid 202 run run-b", o.spec.holderIdentity)
    assert.equals(1, o.spec.leaseTransitions)
    assert.equals(30, o.spec.leaseDurationSeconds)
    -- the first holder finds out at its next renewal, and its heartbeat raises once
    h.interval = 0
    local ok, berr = pcall(heartbeat.beat)
    assert.is_false(ok)
    assert.equals("lease_lost", berr.code)
    assert.matches("taken over by bob@ncn%-m002 pid 202 run run%-b", berr.message)
    assert.is_true(pcall(heartbeat.beat))
    local r, rerr = h:renew()
    assert.is_nil(r)
    assert.equals("lease_lost", rerr.code)
    -- and releasing it leaves the new holder's lease alone
    assert.is_true(h:release())
    assert.equals("bob@ncn-m002 pid 202 run run-b", get("pgr-c3").spec.holderIdentity)
    hb:release()
  end)

  it("is taken back at once by the same run (--resume), and by a run of the same state directory", function()
    local dead = assert(lease.acquire(k, opts("c4", A, "run-a", { lock = "/state/locks/c4.lock" })))
    dead._remove_beat() -- as if killed: it never renews nor releases
    local resumed = assert(lease.acquire(k, opts("c4", { user = "alice", host = "ncn-m001", pid = 303 }, "run-a",
      { lock = "/state/locks/c4.lock" })))
    assert.equals("the same run, resumed", resumed.took.why)
    assert.equals("alice@ncn-m001 pid 303 run run-a", get("pgr-c4").spec.holderIdentity)
    resumed._remove_beat()
    -- a new run (--new) of the same state directory: the caller holds that lock, so the holder is gone
    local after = assert(lease.acquire(k, opts("c4", { user = "alice", host = "ncn-m001", pid = 404 }, "run-new",
      { lock = "/state/locks/c4.lock" })))
    assert.matches("state directory", after.took.why)
    after:release()
    -- the same lock path on another host proves nothing
    local h = assert(lease.acquire(k, opts("c4", A, "run-x", { lock = "/state/locks/c4.lock" })))
    local none, err = lease.acquire(k, opts("c4", B, "run-y", { lock = "/state/locks/c4.lock" }))
    assert.is_nil(none)
    assert.equals("lease_held", err.code)
    h:release()
  end)

  it("renews through the server's conflicts while it is ours", function()
    local h = assert(lease.acquire(k, opts("c5", A, "run-a")))
    local before = get("pgr-c5")
    -- someone else writes the object (an annotation): our copy is stale, the server says 409
    local stale = k8s.deepcopy(h.obj)
    local _, rc = sim:kubectl("annotate lease pgr-c5 -n " .. NS .. " note=x")
    assert.equals(0, rc)
    local nope, cerr = k:replace(stale)
    assert.is_nil(nope)
    assert.equals(409, cerr.code)
    assert.matches('Operation cannot be fulfilled on leases.coordination.k8s.io "pgr-c5": the object has been modified',
      cerr.message, 1, true)
    sys.sleep(0.01)
    assert.is_true(h:renew())
    local after = get("pgr-c5")
    assert.equals("x", after.metadata.annotations.note)
    assert.is_true(lease.parse_time(after.spec.renewTime) > lease.parse_time(before.spec.renewTime))
    assert.equals(before.spec.acquireTime, after.spec.acquireTime)
    -- the heartbeat renews it once its interval has passed, not before
    local rv = get("pgr-c5").metadata.resourceVersion
    heartbeat.beat()
    assert.equals(rv, get("pgr-c5").metadata.resourceVersion)
    h.interval = 0
    heartbeat.beat()
    assert.are_not.equals(rv, get("pgr-c5").metadata.resourceVersion)
    h:release()
  end)

  it("is free once released, and made again if deleted under its holder", function()
    local h = assert(lease.acquire(k, opts("c6", A, "run-a")))
    assert.is_true(h:release())
    local o = get("pgr-c6")
    assert.is_nil(o.spec.holderIdentity)
    assert.is_nil(o.metadata.annotations["pgr/command"])
    assert.equals(0, heartbeat.count())
    local hb = assert(lease.acquire(k, opts("c6", B, "run-b")))
    assert.is_nil(hb.took)
    assert.equals(1, get("pgr-c6").spec.leaseTransitions)
    assert(k:delete("leases", "pgr-c6", { namespace = NS }))
    assert.is_true(hb:renew())
    assert.equals("bob@ncn-m002 pid 202 run run-b", get("pgr-c6").spec.holderIdentity)
    hb:release()
  end)

  it("is validated by the server as the real one does", function()
    local bad = { apiVersion = "coordination.k8s.io/v1", kind = "Lease", metadata = { name = "bad", namespace = NS },
                  spec = { leaseDurationSeconds = 0 } }
    local out, err = k:create(bad)
    assert.is_nil(out)
    assert.equals(422, err.code)
    assert.matches('spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0', err.message, 1, true)
    bad.spec = { renewTime = "yesterday", leaseDurationSeconds = 5 }
    out, err = k:create(bad)
    assert.is_nil(out)
    assert.equals(400, err.code)
  end)

  it("holds through lease.hold with the site's duration", function()
    local h = assert(lease.hold({ site = { kubeconfig = sim.kubeconfig, lease_seconds = 7 }, namespace = NS,
                                  cluster = "c7", run = "run-h", command = "backup" }))
    local o = get("pgr-c7")
    assert.equals(7, o.spec.leaseDurationSeconds)
    assert.equals("backup", o.metadata.annotations["pgr/command"])
    assert.matches(" pid " .. sys.getpid() .. " run run%-h$", o.spec.holderIdentity)
    h:release()
  end)
end)
