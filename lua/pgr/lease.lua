-- pgr.lease: one pgr at a time per cluster, from any machine — a coordination.k8s.io/v1 Lease
-- pgr-<cluster> in the cluster's namespace, held by `pgr run`, `pgr drill` and `pgr backup`.
--
--   local h, err = lease.hold{ site=, namespace="spire", cluster="spire-postgres", run=ID,
--                              lock=PATH, command="run" }   -- the one call the commands make
--   h:release()                          at the end (also after a failure or an interrupt)
--   err.code == "lease_held": err.message names the holder; err.holder = { identity=, user=, host=,
--                              pid=, run=, command=, renewed_ago=, expires_in= }
--   lease.acquire(k8s_client, opts) -> h | nil, err     the same with a client of the caller's
--   h:renew() -> true | nil, err (err.code "lease_lost" once another holder has it)
--   h.took = { identity=, why= } when the lease was taken over from another holder
--   lease.parse_time(s), lease.micro_time(t)           MicroTime <-> epoch seconds
--
-- The holder is "user@host pid N run ID"; the annotations say which command holds it and the lock
-- file of its state directory. A lease is free when it has no holder, or when its renewTime is more
-- than leaseDurationSeconds ago by this machine's clock (CSM's nodes keep time with NTP). Two cases
-- take it at once, before it expires: the same run id (`pgr run --resume`), and a holder that ran
-- from this state directory on this host, whose lock file the caller holds now (so it is dead).
--
-- Renewal: pgr is one thread, so the lease is renewed at the ticks the long calls already have
-- (pgr.heartbeat: every second of a Kubernetes wait or a site command, every progress report of a
-- dump stream, every step). The lease lasts lease_seconds (site file, default 300 s) and is renewed
-- every sixth of that; the longest stretch without a tick is one blocking call (a single SQL
-- statement of the dump, a Kubernetes request with its retries), well under the duration. Should it
-- be lost all the same (taken over after an outage), the next beat raises and the run stops.
local k8s = require "pgr.k8s"
local errors = require "pgr.errors"
local sys = require "pgr.sys"
local heartbeat = require "pgr.heartbeat"

local M = {}

M.DEFAULT_SECONDS = 300
M.PREFIX = "pgr-"
M.ANNOTATION_COMMAND = "pgr/command"
M.ANNOTATION_LOCK = "pgr/lock"
M.LABELS = { ["app.kubernetes.io/managed-by"] = "pgr" }

function M.name(cluster) return M.PREFIX .. cluster end

-- Time ------------------------------------------------------------------------------------------

-- MicroTime as the API writes it: 2006-01-02T15:04:05.000000Z
function M.micro_time(t)
  local s = math.floor(t)
  local us = math.floor((t - s) * 1e6 + 0.5)
  if us >= 1000000 then s, us = s + 1, us - 1000000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. (".%06dZ"):format(us)
end

-- days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- RFC 3339 (with or without a fraction, Z or an offset) -> epoch seconds | nil
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac, zone = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(sec)
  if frac ~= "" and frac ~= "." then t = t + tonumber("0" .. frac) end
  if zone == "Z" or zone == "z" then return t end
  local sign, zh, zm = zone:match("^([+-])(%d%d):(%d%d)$")
  if not sign then return nil end
  local off = tonumber(zh) * 3600 + tonumber(zm) * 60
  return sign == "+" and t - off or t + off
end

-- Who we are ------------------------------------------------------------------------------------

local function read_first_line(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local l = f:read("l")
  f:close()
  return l
end

local function user_name()
  local status = io.open("/proc/self/status", "r")
  local uid
  if status then
    for l in status:lines() do
      uid = l:match("^Uid:%s+(%d+)")
      if uid then break end
    end
    status:close()
  end
  if uid then
    local pw = io.open("/etc/passwd", "r")
    if pw then
      for l in pw:lines() do
        local name, id = l:match("^([^:]+):[^:]*:(%d+):")
        if id == uid then pw:close() return name end
      end
      pw:close()
    end
  end
  return os.getenv("USER") or os.getenv("LOGNAME") or (uid and ("uid" .. uid)) or "unknown"
end

function M.whoami()
  local host = read_first_line("/proc/sys/kernel/hostname") or os.getenv("HOSTNAME") or "unknown"
  return { user = user_name(), host = host, pid = sys.getpid() }
end

function M.identity(me, run)
  return ("%s@%s pid %d run %s"):format(me.user, me.host, me.pid, run)
end

-- "root@ncn-m001 pid 42 run X" -> { user=, host=, pid=, run= } (what can be read of another form)
function M.parse_identity(s)
  if type(s) ~= "string" or s == "" then return nil end
  local user, host, pid, run = s:match("^(.-)@(%S+) pid (%d+) run (%S+)$")
  if not user then return { identity = s } end
  return { identity = s, user = user, host = host, pid = tonumber(pid), run = run }
end

-- The lease object --------------------------------------------------------------------------------

local field = k8s.field

local function holder_of(obj)
  local id = field(obj, "spec", "holderIdentity")
  local h = M.parse_identity(id)
  if not h then return nil end
  local ann = field(obj, "metadata", "annotations") or {}
  h.command = ann[M.ANNOTATION_COMMAND]
  h.lock = ann[M.ANNOTATION_LOCK]
  return h
end

local function describe(h)
  return h.identity .. (h.command and (" (pgr " .. h.command .. ")") or "")
end

-- Sets obj to be held by us now; transitions counts a change of holder.
local function hold_spec(obj, self, now, new_holder)
  obj.metadata = obj.metadata or {}
  obj.metadata.labels = obj.metadata.labels or {}
  for key, v in pairs(M.LABELS) do obj.metadata.labels[key] = v end
  local ann = obj.metadata.annotations
  if type(ann) ~= "table" then ann = {} obj.metadata.annotations = ann end
  ann[M.ANNOTATION_COMMAND] = self.command
  ann[M.ANNOTATION_LOCK] = self.lock
  local spec = obj.spec
  if type(spec) ~= "table" then spec = {} obj.spec = spec end
  spec.holderIdentity = self.identity
  spec.leaseDurationSeconds = self.seconds
  spec.renewTime = M.micro_time(now)
  if new_holder then
    spec.acquireTime = M.micro_time(now)
    spec.leaseTransitions = math.tointeger(spec.leaseTransitions or -1) + 1
  end
  return obj
end

local Lease = {}
Lease.__index = Lease

function Lease:_lose(cur, err)
  local h = cur and holder_of(cur)
  local msg
  if h then
    msg = ("the lease %s/%s of this run was taken over by %s: another pgr works on %s now; this one stops"):format(
      self.namespace, self.name, describe(h), self.cluster)
  else
    msg = ("the lease %s/%s could not be renewed for %d s (%s): another pgr may have taken over %s; this one "
      .. "stops"):format(self.namespace, self.name, self.seconds, tostring(err), self.cluster)
  end
  self.lost = errors.new("lease_lost", msg, { holder = h })
  if self._remove_beat then self._remove_beat() self._remove_beat = nil end
  return nil, self.lost
end

-- Renews now: true | nil, err (err.code "lease_lost" when another holder has it).
function Lease:renew()
  if self.released then return true end
  if self.lost then return nil, self.lost end
  local o = hold_spec(k8s.deepcopy(self.obj), self, self.clock(), false)
  for _ = 1, 4 do
    local out, err = self.k:replace(o)
    if out then
      self.obj, self.renewed = out, sys.now()
      return true
    end
    if k8s.is_conflict(err) or k8s.is_not_found(err) then
      local cur, gerr = self.k:get("leases", self.name, { namespace = self.namespace })
      if cur then
        if field(cur, "spec", "holderIdentity") ~= self.identity then return self:_lose(cur) end
        o = hold_spec(k8s.deepcopy(cur), self, self.clock(), false)
      elseif k8s.is_not_found(gerr) then
        -- deleted under us: nobody holds it, so it is made again, ours
        local made, cerr = self.k:create(hold_spec(self:_fresh(), self, self.clock(), true))
        if made then
          self.obj, self.renewed = made, sys.now()
          return true
        end
        if not k8s.is_conflict(cerr) then return nil, cerr end
      else
        err = gerr
      end
      if not (k8s.is_conflict(err) or k8s.is_not_found(err)) then
        if sys.now() - self.renewed > self.seconds then return self:_lose(nil, err) end
        return nil, err
      end
    else
      -- the API is out of reach: still ours until it would have expired by our own clock
      if sys.now() - self.renewed > self.seconds then return self:_lose(nil, err) end
      return nil, err
    end
  end
  return nil, errors.new("lease", ("the lease %s/%s kept changing while it was renewed"):format(self.namespace, self.name))
end

-- The heartbeat's work: renew when a sixth of the duration has passed; a loss raises, once.
function Lease:_tick()
  if self.released or self.lost then return end
  local t = sys.now()
  if t - self.tried < self.interval then return end
  self.tried = t
  local ok, err = self:renew()
  if not ok and self.lost then error(err, 0) end
end

-- Gives the lease up: no holder. Another pgr may take it at once. true | nil, err.
function Lease:release()
  if self.released then return true end
  self.released = true
  if self._remove_beat then self._remove_beat() self._remove_beat = nil end
  if self.lost then return true end
  local o = k8s.deepcopy(self.obj)
  for _ = 1, 3 do
    o.spec.holderIdentity = nil
    o.spec.acquireTime = nil
    o.spec.renewTime = M.micro_time(self.clock())
    local ann = field(o, "metadata", "annotations")
    if type(ann) == "table" then
      ann[M.ANNOTATION_COMMAND] = nil
      ann[M.ANNOTATION_LOCK] = nil
    end
    local out, err = self.k:replace(o)
    if out then self.obj = out return true end
    if not k8s.is_conflict(err) then
      if k8s.is_not_found(err) then return true end
      return nil, err
    end
    local cur, gerr = self.k:get("leases", self.name, { namespace = self.namespace })
    if not cur then return k8s.is_not_found(gerr) or nil, gerr end
    if field(cur, "spec", "holderIdentity") ~= self.identity then return true end -- not ours any more
    o = k8s.deepcopy(cur)
  end
  return nil, errors.new("lease", ("the lease %s/%s kept changing while it was released"):format(self.namespace, self.name))
end

function Lease:_fresh()
  return { apiVersion = "coordination.k8s.io/v1", kind = "Lease",
           metadata = { name = self.name, namespace = self.namespace }, spec = {} }
end

-- Acquiring ---------------------------------------------------------------------------------------

-- acquire(k, {namespace=, cluster=, run=, seconds=, command=, lock=, clock=, me=}) -> lease | nil, err
--   lock: the lock file of the caller's state directory, which the caller holds now (a holder that
--   named the same file on this host is then known to be dead). clock: wall-clock seconds (tests).
function M.acquire(k, opts)
  assert(type(opts) == "table" and opts.namespace and opts.cluster and opts.run,
    "lease.acquire(k, {namespace=, cluster=, run=, ...})")
  local me = opts.me or M.whoami()
  local self = setmetatable({
    k = k, namespace = opts.namespace, cluster = opts.cluster, name = M.name(opts.cluster),
    run = opts.run, me = me, identity = M.identity(me, opts.run), command = opts.command or "run",
    lock = opts.lock, seconds = math.tointeger(opts.seconds or M.DEFAULT_SECONDS), clock = opts.clock or sys.time,
  }, Lease)
  assert(self.seconds and self.seconds >= 1, "lease.acquire: seconds must be a whole number >= 1")
  self.interval = math.max(1, self.seconds / 6)
  local where = ("%s/%s"):format(self.namespace, self.name)
  for _ = 1, 5 do
    local now = self.clock()
    local cur, err = k:get("leases", self.name, { namespace = self.namespace })
    if not cur then
      if not k8s.is_not_found(err) then return nil, err end
      local made, cerr = k:create(hold_spec(self:_fresh(), self, now, true))
      if made then
        self.obj = made
        break
      end
      if not k8s.is_conflict(cerr) then return nil, cerr end
      -- made by another pgr a moment ago: read it again
    else
      local h = holder_of(cur)
      local renewed = M.parse_time(field(cur, "spec", "renewTime")) or M.parse_time(field(cur, "spec", "acquireTime"))
      local duration = math.tointeger(field(cur, "spec", "leaseDurationSeconds")) or self.seconds
      local left = renewed and (renewed + duration - now) or -1
      local why
      if not h then
        why = nil -- free
      elseif h.identity == self.identity then
        why = "this process holds it already"
      elseif h.run and h.run == self.run then
        why = "the same run, resumed"
      elseif self.lock and h.lock == self.lock and h.host == me.host then
        why = ("its run used this state directory, whose lock this pgr holds now: it is gone (pid %s)")
          :format(tostring(h.pid))
      elseif left < 0 then
        why = ("it was last renewed %d s ago and expired %d s ago"):format(math.floor(now - (renewed or now)),
          math.floor(-left))
      else
        return nil, errors.new("lease_held", ("%s is in use by %s: lease %s, renewed %d s ago, expires in %d s "
          .. "unless renewed. Wait for that pgr to finish. If it is dead, the lease can be taken over once it "
          .. "expires, or at once by resuming its run on its machine (pgr run ... --resume)"):format(
          self.cluster, describe(h), where, math.floor(now - (renewed or now)), math.ceil(left)),
          { holder = { identity = h.identity, user = h.user, host = h.host, pid = h.pid, run = h.run,
                       command = h.command, renewed_ago = now - (renewed or now), expires_in = left } })
      end
      local out, uerr = k:replace(hold_spec(k8s.deepcopy(cur), self, now, h == nil or h.identity ~= self.identity))
      if out then
        self.obj = out
        if h and h.identity ~= self.identity then self.took = { identity = describe(h), why = why } end
        break
      end
      -- changed since it was read (another pgr took it, or renewed it): judge it again
      if not k8s.is_conflict(uerr) then return nil, uerr end
    end
  end
  if not self.obj then
    return nil, errors.new("lease", ("the lease %s kept changing while it was acquired; try again"):format(where))
  end
  self.renewed, self.tried = sys.now(), sys.now()
  self._remove_beat = heartbeat.add(function() self:_tick() end)
  return self
end

-- The one call of the commands: connects with the site's kubeconfig and context, acquires.
-- opts: site=, namespace=, cluster=, run=, lock=, command=, k8s= (a client to use instead).
function M.hold(opts)
  local site = opts.site or {}
  local k = opts.k8s
  if not k then
    local err
    k, err = k8s.connect({ kubeconfig = site.kubeconfig, context = site.context, namespace = opts.namespace })
    if not k then return nil, err end
  end
  return M.acquire(k, { namespace = opts.namespace, cluster = opts.cluster, run = opts.run, lock = opts.lock,
                        command = opts.command, seconds = opts.seconds or site.lease_seconds, clock = opts.clock })
end

return M
