-- pgr.status: how a service's Postgres cluster is doing now — the postgresql object, its pods,
-- replication, logins, sizes, the client and its dependants, backups, pgr's own runs — and a verdict.
-- Read-only: nothing here writes to the cluster, S3 or the state directory; every call is bounded.
--
--   local status = require "pgr.status"
--   local facts = status.collect("spire" [, opts])  -- one service, in this process (never raises for
--                                                    -- what it finds: a failure is a fact)
--   local report = status.report({ "spire", "vcs" }, opts)  -- several, one child process each, at once
--   print(status.format(report))                    -- the screen of `pgr status`
--   status.exit_code(report)                        -- 0 healthy, 1 degraded, 2 down, 3 unknown
-- opts: site= (a pgr.site table; default site.load()), state_dir=, k8s= (a pgr.k8s client to reuse),
--   now= (epoch seconds; tests), timeout= (seconds for one service in status.report), args= (extra
--   `pgr status` arguments children get: --site, --state-dir).
-- status.judge(facts) -> facts with verdict and reasons, from the facts alone (pure: specs feed it
--   tables). The facts are the `--json` document's; `pgr help status` documents every field.
local errors = require "pgr.errors"
local json = require "pgr.json"
local sys = require "pgr.sys"
local cron = require "pgr.cron"

local M = {}

-- Policy a site may tune.
M.defaults = {
  request_timeout = 5,      -- seconds for one Kubernetes or S3 request
  attempts = 2,             -- tries of a Kubernetes request that failed in transit
  connect_timeout = 3,      -- seconds for all the PostgreSQL logins of a service (they run side by side)
  statement_timeout = 5,    -- seconds for one query
  service_timeout = 30,     -- seconds for one service's whole status (status.report: its child is stopped)
  backup_grace = 3600,      -- seconds after a scheduled backup time before its backup must exist
  -- Patroni's (Spilo's) maximum_lag_on_failover: a replica further behind cannot take over
  max_lag_bytes = 33554432,
  tail_bytes = 512,         -- bytes of a dump's end read to find pg_dumpall's completion trailer
}

M.SERVICES = { "spire", "keycloak", "vcs", "hsm", "sls" }
M.EXIT = { healthy = 0, degraded = 1, down = 2, unknown = 3 }
local RANK = { healthy = 0, degraded = 1, unknown = 2, down = 3 }

local NULL = json.null

-- obj.a.b... of decoded JSON, nil where a level is missing or null
local field = require("pgr.k8s").field
M.field = field

local function array(t) return json.array(t or {}) end

local function text_of(err)
  if type(err) == "table" then
    local mt = getmetatable(err)
    if mt and mt.__tostring then return tostring(err) end
    return tostring(err.message or "error")
  end
  return tostring(err)
end

-- The resources status reads, without a discovery round trip (stable API groups; the postgresql CRD
-- is acid.zalan.do/v1 in every operator release).
local function resource(group, version, plural, kind)
  return { group = group, version = version, name = plural, kind = kind, singular = kind:lower(),
           namespaced = true, verbs = {}, short = {}, subresources = {},
           api_version = group == "" and version or (group .. "/" .. version) }
end
M.RESOURCES = {
  pods = resource("", "v1", "pods", "Pod"),
  secrets = resource("", "v1", "secrets", "Secret"),
  postgresql = resource("acid.zalan.do", "v1", "postgresqls", "postgresql"),
  statefulset = resource("apps", "v1", "statefulsets", "StatefulSet"),
  deployment = resource("apps", "v1", "deployments", "Deployment"),
  daemonset = resource("apps", "v1", "daemonsets", "DaemonSet"),
  job = resource("batch", "v1", "jobs", "Job"),
  cronjob = resource("batch", "v1", "cronjobs", "CronJob"),
  lease = resource("coordination.k8s.io", "v1", "leases", "Lease"),
}
local collect_lease
local KIND = { statefulset = "statefulset", statefulsets = "statefulset", sts = "statefulset",
               deployment = "deployment", deployments = "deployment", deploy = "deployment",
               daemonset = "daemonset", daemonsets = "daemonset", ds = "daemonset", job = "job", jobs = "job" }

------------------------------------------------------------------------------------------------------
-- the service, the clients

-- service(name) -> svc (the table services/NAME.lua gives restore.procedure), proc | nil, err
function M.service(name)
  local runbook = require "pgr.runbook"
  local path, err = runbook.locate(name)
  if not path then return nil, err end
  local proc
  proc, err = runbook.load(path)
  if not proc then return nil, err end
  if type(proc.service) ~= "table" or not proc.service.cluster then
    return nil, errors.new("procedure", ("%s is not a Postgres restore procedure (restore.procedure{...})"):format(path))
  end
  return proc.service, proc
end

local function load_site(opts)
  if opts.site_error then return nil, opts.site_error end
  if opts.site then return opts.site end
  return require("pgr.site").load()
end

-- k8s(site, namespace) -> client | nil, err: bounded requests, few retries.
function M.k8s(site, namespace)
  return require("pgr.k8s").connect({ kubeconfig = site and site.kubeconfig, context = site and site.context,
    namespace = namespace, timeout = M.defaults.request_timeout, attempts = M.defaults.attempts })
end

-- The database pods' TLS settings: the site's policy (pgr.security, where this build has it), else
-- libpq's prefer, which Spilo's hostssl rules need.
local function pg_tls(site, svc)
  local ok, security = pcall(require, "pgr.security")
  if ok and type(security) == "table" and security.pg_tls then
    local t = security.pg_tls(site, svc)
    if t then return t end
  end
  return { sslmode = svc.sslmode or "prefer" }
end

-- Connection parameters to a pod's PostgreSQL: user, password, database; statement_timeout bounds
-- every query on it.
function M.pg_params(site, svc, ip, user, password, dbname)
  local tls = pg_tls(site, svc)
  return {
    host = ip, port = tostring(svc.port or 5432), user = user, password = password, dbname = dbname or "postgres",
    sslmode = tls.sslmode, channel_binding = tls.channel_binding, sslrootcert = tls.sslrootcert,
    connect_timeout = tostring(math.max(2, math.ceil(M.defaults.connect_timeout))),
    application_name = "pgr-status",
    options = ("-c statement_timeout=%d"):format(math.floor(M.defaults.statement_timeout * 1000)),
  }
end

-- What kind of failure a login met, from libpq's message (it has no SQLSTATE before a session).
function M.login_class(err)
  local m = text_of(err):lower()
  if m:find("password authentication failed", 1, true) then return "auth_failed" end
  if m:find("role \"", 1, true) and m:find("does not exist", 1, true) then return "no_role" end
  if m:find("is not permitted to log in", 1, true) then return "no_login" end
  if m:find("pg_hba.conf", 1, true) then return "rejected" end
  if m:find("timeout expired", 1, true) then return "timeout" end
  if m:find("connection refused", 1, true) or m:find("no route to host", 1, true) then return "unreachable" end
  if m:find("ssl", 1, true) or m:find("certificate", 1, true) or m:find("channel binding", 1, true) then return "tls" end
  if m:find("database \"", 1, true) and m:find("does not exist", 1, true) then return "no_database" end
  if m:find("starting up", 1, true) or m:find("shutting down", 1, true) or m:find("too many", 1, true)
     or m:find("in recovery mode", 1, true) then return "unavailable" end
  return "error"
end
-- classes that say the server is there and answering (the password or role is what failed)
local ANSWERED = { auth_failed = true, no_role = true, no_login = true, rejected = true, no_database = true }

------------------------------------------------------------------------------------------------------
-- facts: Kubernetes

local function pod_facts(p)
  local ready = false
  for _, c in ipairs(field(p, "status", "conditions") or {}) do
    if c.type == "Ready" then ready = c.status == "True" end
  end
  local restarts = 0
  for _, cs in ipairs(field(p, "status", "containerStatuses") or {}) do restarts = restarts + (cs.restartCount or 0) end
  return {
    name = field(p, "metadata", "name"), role = field(p, "metadata", "labels", "spilo-role"),
    phase = field(p, "status", "phase") or "Pending", ready = ready, restarts = restarts,
    node = field(p, "spec", "nodeName"), ip = field(p, "status", "podIP"),
    deleting = field(p, "metadata", "deletionTimestamp") ~= nil or nil,
  }
end

local function workload_facts(kind, name, o)
  local w = { kind = kind, name = name, found = o ~= nil }
  if not o then return w end
  if kind == "job" then
    for _, c in ipairs(field(o, "status", "conditions") or {}) do
      if c.status == "True" and (c.type == "Complete" or c.type == "Failed") then
        w.complete, w.failed = c.type == "Complete", c.type == "Failed"
      end
    end
    w.complete, w.failed = w.complete or false, w.failed or false
    w.active = field(o, "status", "active") or 0
  elseif kind == "daemonset" then
    w.desired = field(o, "status", "desiredNumberScheduled") or 0
    w.ready = field(o, "status", "numberReady") or 0
  else
    w.desired = field(o, "spec", "replicas") or 1
    w.ready = field(o, "status", "readyReplicas") or 0
  end
  return w
end

local function get(k, kind, name)
  local o, err = k:get(M.RESOURCES[kind], name)
  if o then return o end
  if require("pgr.k8s").is_not_found(err) then return nil end
  return nil, err
end

-- The CronJob that makes this cluster's nightly backups: svc.backup_cronjob, else
-- <chart>-postgresql-db-backup (the chart named after the cluster, with or without cray-), one whose
-- container environment names the cluster, or the operator's logical-backup-<cluster>.
local function find_cronjob(svc, items)
  local base = svc.cluster:gsub("%-postgres$", "")
  local wanted = svc.backup_cronjob and { svc.backup_cronjob } or
    { base .. "-postgresql-db-backup", "cray-" .. base .. "-postgresql-db-backup", "logical-backup-" .. svc.cluster }
  local by_name = {}
  for _, cj in ipairs(items) do by_name[field(cj, "metadata", "name") or ""] = cj end
  for _, n in ipairs(wanted) do if by_name[n] then return by_name[n] end end
  if svc.backup_cronjob then return nil end
  for _, cj in ipairs(items) do
    if (field(cj, "metadata", "name") or ""):match("postgresql%-db%-backup$") then
      for _, c in ipairs(field(cj, "spec", "jobTemplate", "spec", "template", "spec", "containers") or {}) do
        for _, e in ipairs(c.env or {}) do
          if e.value == svc.cluster then return cj end
        end
      end
    end
  end
end

-- The cluster-side lock (pgr.lease): the Lease pgr-<cluster> a pgr run, drill or backup holds, from
-- any machine. Who holds it, since when, and whether it has expired (or, on this host, died).
collect_lease = function(f, k, svc)
  local lease = require "pgr.lease"
  local o, err = get(k, "lease", lease.name(svc.cluster))
  if err then
    f.errors[#f.errors + 1] = { subject = "lease " .. lease.name(svc.cluster), message = text_of(err), severity = "warning" }
    return
  end
  local id = o and field(o, "spec", "holderIdentity")
  if not id or id == "" then return end
  local h = lease.parse_identity(id) or { identity = id }
  local renewed = lease.parse_time(field(o, "spec", "renewTime") or field(o, "spec", "acquireTime"))
  local duration = field(o, "spec", "leaseDurationSeconds") or lease.DEFAULT_SECONDS
  local now = sys.time()
  local l = { name = lease.name(svc.cluster), holder = id, user = h.user, host = h.host, pid = h.pid, run = h.run,
              command = field(o, "metadata", "annotations", lease.ANNOTATION_COMMAND), duration = duration,
              renewed = renewed and cron.iso(renewed) or nil,
              renewed_ago = renewed and math.max(0, math.floor(now - renewed)) or nil }
  l.expired = renewed ~= nil and now - renewed > duration
  -- on the holder's own host, a dead process is known at once
  if h.host and h.pid and h.host == lease.whoami().host then l.alive = sys.pid_alive(h.pid) end
  f.lease = l
end

local function collect_k8s(f, k, svc)
  local err
  local pgo
  pgo, err = get(k, "postgresql", svc.cluster)
  if err then return nil, err end
  f.postgresql = { found = pgo ~= nil }
  if pgo then
    f.postgresql.instances = field(pgo, "spec", "numberOfInstances")
    f.postgresql.version = field(pgo, "spec", "postgresql", "version")
    f.postgresql.status = field(pgo, "status", "PostgresClusterStatus")
  end
  local pods
  pods, err = k:list(M.RESOURCES.pods, { labels = require("pgr.spilo").selector(svc.cluster) })
  if not pods then return nil, err end
  table.sort(pods, function(a, b) return (field(a, "metadata", "name") or "") < (field(b, "metadata", "name") or "") end)
  for _, p in ipairs(pods) do f.pods[#f.pods + 1] = pod_facts(p) end

  -- the secrets, by the operator's labels in one list; any not labelled, by name
  local want = {}
  for _, user in ipairs(svc.users) do want[#want + 1] = { user = user, name = require("pgr.restore").secret_name(svc, user) } end
  local items = k:list(M.RESOURCES.secrets, { labels = "cluster-name=" .. svc.cluster }) or {}
  local by_name = {}
  for _, s in ipairs(items) do by_name[field(s, "metadata", "name") or ""] = s end
  local secrets = {}
  local base64 = require "pgr.base64"
  for _, w in ipairs(want) do
    local s = by_name[w.name]
    if not s then
      s, err = get(k, "secrets", w.name)
      if err then return nil, err end
    end
    local entry = { user = w.user, secret = w.name, found = s ~= nil }
    if s then
      local pw = field(s, "data", "password")
      local un = field(s, "data", "username")
      -- the values stay in this table, never in the facts
      secrets[w.user] = { password = pw and base64.decode(pw) or nil, username = un and base64.decode(un) or w.user }
      entry.username = secrets[w.user].username
    end
    f.secrets[#f.secrets + 1] = entry
  end

  local cl = svc.client
  local kind = KIND[cl.kind] or cl.kind
  local o
  o, err = get(k, kind, cl.name)
  if err then return nil, err end
  f.client = workload_facts(kind, cl.name, o)
  for _, d in ipairs(svc.dependants or {}) do
    local dk = KIND[d[1]] or d[1]
    o, err = get(k, dk, d[2])
    if err then
      f.errors[#f.errors + 1] = { subject = dk .. " " .. d[2], message = text_of(err), severity = "warning" }
    else
      f.dependants[#f.dependants + 1] = workload_facts(dk, d[2], o)
    end
  end

  local cjs
  cjs, err = k:list(M.RESOURCES.cronjob)
  if cjs then
    local cj = find_cronjob(svc, cjs)
    if cj then
      f.backups.cronjob = {
        name = field(cj, "metadata", "name"), schedule = field(cj, "spec", "schedule"),
        time_zone = field(cj, "spec", "timeZone"), suspend = field(cj, "spec", "suspend") == true,
        last_schedule = field(cj, "status", "lastScheduleTime"), last_success = field(cj, "status", "lastSuccessfulTime"),
      }
    end
  else
    f.errors[#f.errors + 1] = { subject = "cronjobs", message = text_of(err), severity = "warning" }
  end
  collect_lease(f, k, svc)
  return secrets
end

------------------------------------------------------------------------------------------------------
-- facts: PostgreSQL

local REPLICATION_SQL = [[
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes,
       EXTRACT(epoch FROM replay_lag)::float8 AS lag_seconds
  FROM pg_stat_replication]]
local REPLICA_SQL = [[
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age]]
local SIZES_SQL = [[
SELECT datname, pg_database_size(oid) AS bytes FROM pg_database WHERE NOT datistemplate ORDER BY datname]]

local function collect_pg(f, svc, site, secrets)
  local pg = require "pgr.pg"
  local masters, replicas = {}, {}
  for _, p in ipairs(f.pods) do
    if p.role == "master" and p.ip and not p.deleting then masters[#masters + 1] = p
    elseif p.ip and not p.deleting then replicas[#replicas + 1] = p end
  end
  local master = masters[1]
  f.master = master and master.name or nil
  local list, what = {}, {}
  if master then
    for _, s in ipairs(f.secrets) do
      local cred = secrets[s.user]
      if cred and cred.password then
        list[#list + 1] = M.pg_params(site, svc, master.ip, cred.username, cred.password)
        what[#list] = { login = s }
      end
    end
  end
  local admin = secrets.postgres
  for _, p in ipairs(replicas) do
    if admin and admin.password then
      list[#list + 1] = M.pg_params(site, svc, p.ip, admin.username, admin.password)
      what[#list] = { replica = p }
    end
  end
  local conns, errs = pg.connect_all(list, { timeout = M.defaults.connect_timeout })
  local master_conn, reached, refused = nil, false, nil
  local replica_conns = {}
  for i, w in ipairs(what) do
    local c, e = conns[i], errs[i]
    if w.login then
      local s = w.login
      s.login = c and true or false
      if c then
        reached = true
        if s.user == "postgres" then master_conn = c else c:close() end
      else
        s.error = M.login_class(e)
        s.message = text_of(e)
        if ANSWERED[s.error] then reached = true else refused = refused or e end
      end
    else
      replica_conns[w.replica.name] = c or false
      if not c then replica_conns[w.replica.name .. "/error"] = e end
    end
  end
  -- whether the master's PostgreSQL answers: known only when a login was tried
  if master and #f.secrets > 0 and (reached or refused) then
    f.master_reachable = reached
    if not reached then f.master_error = text_of(refused) end
  end

  -- replication, as the master sees it, and each replica's own view
  local streams = {}
  if master_conn then
    local rows, err = master_conn:query(REPLICATION_SQL)
    if rows then
      for _, r in ipairs(rows) do
        streams[#streams + 1] = r
      end
    else
      f.errors[#f.errors + 1] = { subject = "pg_stat_replication", message = text_of(err), severity = "warning" }
      f.replication_unknown, f.replication_note = true, "pg_stat_replication could not be read"
    end
    rows, err = master_conn:query("SELECT pg_is_in_recovery() AS r, current_setting('server_version') AS v")
    if rows and rows[1] then
      f.master_in_recovery = rows[1].r
      f.server_version = rows[1].v
    end
    rows, err = master_conn:query(SIZES_SQL)
    if rows then
      for _, r in ipairs(rows) do f.databases[#f.databases + 1] = { name = r.datname, bytes = tonumber(r.bytes) } end
    else
      f.errors[#f.errors + 1] = { subject = "database sizes", message = text_of(err), severity = "warning" }
    end
    master_conn:close()
  end
  for _, p in ipairs(replicas) do
    local rep = { pod = p.name, ip = p.ip }
    for _, s in ipairs(streams) do
      if s.application_name == p.name or s.client_addr == p.ip then
        rep.state, rep.sync_state = s.state, s.sync_state
        rep.lag_bytes, rep.lag_seconds = s.lag_bytes, s.lag_seconds
      end
    end
    rep.streaming = rep.state == "streaming"
    local c = replica_conns[p.name]
    if c then
      rep.reachable = true
      local rows, err = c:query(REPLICA_SQL)
      if rows and rows[1] then
        rep.in_recovery, rep.receiver, rep.replay_age = rows[1].in_recovery, rows[1].receiver, rows[1].replay_age
      else
        rep.error = text_of(err)
      end
      c:close()
    elseif c == false then
      rep.reachable = false
      local e = replica_conns[p.name .. "/error"]
      rep.error_class = M.login_class(e)
      rep.error = text_of(e)
    end
    f.replication[#f.replication + 1] = rep
  end
  if master and not master_conn and not f.replication_unknown then
    f.replication_unknown, f.replication_note = true, "postgres did not log in to the master"
  end
  if f.replication_unknown then
    -- without the master's view, a replica's own answer is all there is: no judgement of streaming
    for _, r in ipairs(f.replication) do r.streaming = nil end
  end
end

------------------------------------------------------------------------------------------------------
-- facts: backups

local TRAILERS = { "-- PostgreSQL database cluster dump complete\n--", "-- PostgreSQL database dump complete\n--" }

-- Whether a dump's last bytes end with pg_dumpall's (or pg_dump's) completion trailer.
function M.has_trailer(tail)
  local t = tail:gsub("\r\n", "\n"):gsub("%s+$", "")
  for _, want in ipairs(TRAILERS) do
    if t:sub(-#want) == want then return true end
  end
  return false
end

local function backup_facts(b, now)
  local t = b.time and cron.epoch(b.time)
  return {
    name = b.name, layout = b.layout or (b.by == "pgr" and "pgr" or "csm"), time = b.time and (b.time .. "Z") or nil,
    age_seconds = t and math.max(0, now - t) or nil, size = b.size, complete = b.complete, missing = b.missing,
    key = b.psql and b.psql.key or nil, manifest = b.manifest and b.manifest.key or nil,
  }
end

local function is_pgr(b) return b.by == "pgr" or b.layout == "pgr" or (b.name or ""):sub(1, 4) == "pgr/" end

local function collect_backups(f, svc, site, k, now)
  local s3 = require "pgr.s3"
  local bk = f.backups
  local cfg, err = s3.config({ site = site, k8s = k })
  if not cfg then
    bk.checked = false
    bk.note = text_of(err)
    return
  end
  cfg.timeout = M.defaults.request_timeout * 2
  cfg.connect_timeout = M.defaults.request_timeout
  local c
  c, err = require("pgr.s3.core").client(cfg)
  if not c then
    bk.checked, bk.note = false, text_of(err)
    return
  end
  bk.bucket, bk.endpoint = cfg.bucket, cfg.endpoint
  local prefix = svc.backup_prefix or svc.cluster
  local list
  list, err = s3.list_backups(c, cfg.bucket, prefix)
  if list then
    -- pgr's own backups (pgr backup, a run's safety backup) live under pgr/, outside the nightly retention
    local own = c:list(cfg.bucket, { prefix = "pgr/" .. prefix .. "-" })
    if own and #own > 0 then
      local seen = {}
      for _, b in ipairs(list) do seen[b.name] = true end
      for _, b in ipairs(s3.pair(own, cfg.bucket)) do
        if not seen[b.name] then b.by = "pgr" list[#list + 1] = b end
      end
    end
  end
  if not list then
    c:close()
    bk.checked, bk.note = false, text_of(err)
    return
  end
  bk.checked = true
  bk.count = #list
  local nightly, mine
  for _, b in ipairs(list) do
    if is_pgr(b) then mine = mine or b else nightly = nightly or b end
  end
  if nightly then
    bk.newest = backup_facts(nightly, now)
    local obj = nightly.psql
    if obj and nightly.layout == "operator" then
      bk.newest.trailer = NULL -- gzip'd: the trailer is inside the compressed stream
    elseif obj and obj.size then
      local from = math.max(0, obj.size - M.defaults.tail_bytes)
      local tail, terr = c:read_range(cfg.bucket, obj.key, from, obj.size, { etag = obj.etag ~= "" and obj.etag or nil })
      if tail then
        bk.newest.trailer = M.has_trailer(tail)
      else
        bk.newest.trailer = NULL
        f.errors[#f.errors + 1] = { subject = "backup " .. nightly.name, message = text_of(terr), severity = "warning" }
      end
    end
  end
  if mine then bk.pgr = backup_facts(mine, now) end
  c:close()
end

-- When the schedule last said a backup should have started, allowing backup_grace for it to finish.
local function backup_due(bk, now)
  local cj = bk.cronjob
  if not cj or not cj.schedule then return nil end
  local sched, err = cron.parse(cj.schedule)
  if not sched then return nil, err end
  if cj.time_zone and cj.time_zone ~= "UTC" and cj.time_zone ~= "Etc/UTC" then
    return nil, ("its time zone %s is not read by pgr"):format(cj.time_zone)
  end
  return sched:previous(now - M.defaults.backup_grace)
end

------------------------------------------------------------------------------------------------------
-- facts: pgr's runs

function M.collect_runs(f, proc, state_dir, opts)
  local runbook = require "pgr.runbook"
  local ok, runs = pcall(runbook.runs, state_dir, proc)
  if not ok then
    f.errors[#f.errors + 1] = { subject = "runs", message = text_of(runs), severity = "warning" }
    return
  end
  local key = proc.cluster:gsub("[^%w_.-]", "_")
  local lock_text = ""
  local lf = io.open(state_dir .. "/locks/" .. key .. ".lock", "r")
  if lf then lock_text = lf:read("a") or "" lf:close() end
  local lock_pid = tonumber(lock_text:match("%d+"))
  local hint = { "pgr", "run", proc.name }
  for _, a in ipairs(opts.resume_args or {}) do hint[#hint + 1] = a end
  hint[#hint + 1] = "--resume"
  for _, run in ipairs(runs) do
    if run.finished then
      if not f.last_run then
        local last = run.events[#run.events]
        f.last_run = { id = run.id, status = run.status, finished = last and last.at or nil }
      end
    else
      local r = { id = run.id, dir = run.dir, steps = #proc.steps, started = run.started and cron.iso(run.started) or nil }
      local open_step
      for _, ev in ipairs(run.events) do
        if ev.event == "run_started" or ev.event == "run_resumed" then
          r.pid = ev.pid
        elseif ev.event == "step_started" then
          open_step = { step = ev.step, name = ev.name }
        elseif ev.event == "step_done" then
          if open_step and open_step.step == ev.step then open_step = nil end
          r.done = ev.step
        elseif ev.event == "step_failed" or ev.event == "run_failed" then
          r.error = ev.error or r.error
        elseif ev.event == "step_interrupted" or ev.event == "run_interrupted" then
          r.interrupted = true
        end
        if ev.event == "run_started" and ev.steps then r.steps = #ev.steps end
      end
      if open_step then
        r.step, r.step_name = open_step.step, open_step.name
      else
        for i, s in ipairs(proc.steps) do
          if not run.done[s.name] then r.step, r.step_name = i, s.name break end
        end
      end
      r.running = r.pid ~= nil and lock_pid == r.pid and sys.pid_alive(r.pid) or false
      r.changed = run.wrote or false
      r.resume = table.concat(hint, " ")
      f.runs[#f.runs + 1] = r
    end
  end
end

------------------------------------------------------------------------------------------------------
-- the verdict

local function reason(f, severity, subject, fmt, ...)
  f.reasons[#f.reasons + 1] = { severity = severity, subject = subject, message = fmt:format(...) }
end

local function workload_label(w) return ("%s %s"):format(w.kind, w.name) end

function M.judge(f, now)
  now = now or f.now or os.time()
  f.reasons = array()
  local ns, cluster = f.namespace, f.cluster
  for _, e in ipairs(f.errors or {}) do
    reason(f, e.severity or "unknown", e.subject, "%s: %s", e.subject, e.message)
  end
  if f.postgresql then
    local p = f.postgresql
    if not p.found then
      reason(f, "down", "postgresql", "postgresql %s/%s not found (kubectl get postgresql -n %s)", ns, cluster, ns)
    elseif p.status ~= "Running" then
      local not_made = { Creating = true, CreateFailed = true, Invalid = true }
      reason(f, not_made[p.status] and "down" or "degraded", "postgresql", "postgresql %s/%s is %s, not Running (kubectl describe postgresql %s -n %s)", ns, cluster,
        tostring(p.status or "without a status"), cluster, ns)
    end
    local masters, live = {}, 0
    for _, pod in ipairs(f.pods or {}) do
      if pod.role == "master" and not pod.deleting then masters[#masters + 1] = pod end
      if pod.phase == "Running" and pod.ready and not pod.deleting then live = live + 1 end
      if pod.deleting then
        reason(f, "degraded", pod.name, "pod %s is being deleted", pod.name)
      elseif pod.phase ~= "Running" or not pod.ready then
        reason(f, pod.role == "master" and "down" or "degraded", pod.name, "pod %s is %s%s (kubectl describe pod %s -n %s)",
          pod.name, pod.phase, pod.phase == "Running" and " but not Ready" or "", pod.name, ns)
      end
    end
    if p.found and p.instances and #(f.pods or {}) < p.instances then
      reason(f, #f.pods == 0 and "down" or "degraded", "pods", "%d of %d database pods exist (kubectl get pods -n %s -l cluster-name=%s)",
        #f.pods, p.instances, ns, cluster)
    end
    if p.found and #masters == 0 and #(f.pods or {}) > 0 then
      reason(f, "down", "master", "no pod of %s is labelled spilo-role=master (kubectl get pods -n %s -l cluster-name=%s -L spilo-role)",
        cluster, ns, cluster)
    elseif #masters > 1 then
      reason(f, "degraded", "master", "%d pods are labelled spilo-role=master", #masters)
    end
    if f.master and f.master_reachable == false then
      reason(f, "down", "master", "the master %s does not accept connections: %s", f.master,
        f.master_error or "no login got an answer")
    end
    if f.master_in_recovery == true then
      reason(f, "degraded", "master", "the master %s is in recovery (read-only)", f.master)
    end
  end
  for _, s in ipairs(f.secrets or {}) do
    if not s.found then
      reason(f, "degraded", s.user, "secret %s is missing (kubectl get secret %s -n %s)", s.secret, s.secret, ns)
    elseif s.login == false and ANSWERED[s.error] then
      reason(f, "degraded", s.user, "user %s cannot log in with the password in secret %s (%s)", s.username or s.user,
        s.secret, s.error)
    end
  end
  local max_lag = M.defaults.max_lag_bytes
  -- a cause pgr can read: replicas connect to the master as standby, with the password of its secret
  local standby_hint = ""
  for _, s in ipairs(f.secrets or {}) do
    if s.user == "standby" and s.login == false and s.error == "auth_failed" then
      standby_hint = "; the standby user cannot log in with its secret's password, which replicas use to reach the master"
    end
  end
  for _, r in ipairs(f.replication or {}) do
    if f.master_reachable ~= false and not f.replication_unknown then
      if not r.streaming then
        local why
        if r.state then
          why = "its state is " .. r.state
        elseif r.reachable == false then
          why = "its PostgreSQL does not accept connections: " .. (r.error_class or "error")
        elseif r.reachable and r.in_recovery then
          why = ("it is in recovery but not in the master's pg_stat_replication (its WAL receiver: %s)")
            :format(r.receiver or "not running")
        else
          why = "it is not in the master's pg_stat_replication"
        end
        reason(f, "degraded", r.pod, "replica %s is not streaming from the master: %s%s", r.pod, why, standby_hint)
      elseif r.lag_bytes and r.lag_bytes > max_lag then
        reason(f, "degraded", r.pod, "replica %s is %s behind the master (more than Patroni's maximum_lag_on_failover, %s)",
          r.pod, require("pgr.ui").bytes(r.lag_bytes), require("pgr.ui").bytes(max_lag))
      end
    end
    if r.in_recovery == false then
      reason(f, "degraded", r.pod, "replica %s is not in recovery: a second primary", r.pod)
    end
  end
  if f.replication_unknown and f.master_reachable ~= false then
    reason(f, "warning", "replication", "replication was not read: %s", f.replication_note or "no connection to the master")
  end
  local c = f.client
  if c then
    if not c.found then
      reason(f, "down", c.name, "%s not found (kubectl get %s %s -n %s)", workload_label(c), c.kind, c.name, ns)
    elseif c.desired == 0 then
      reason(f, "down", c.name, "%s is scaled to 0 (kubectl scale %s %s -n %s --replicas=N)", workload_label(c), c.kind,
        c.name, ns)
    elseif c.ready == 0 then
      reason(f, "down", c.name, "%s has none of its %d pods ready", workload_label(c), c.desired)
    elseif c.ready < c.desired then
      reason(f, "degraded", c.name, "%s has %d of %d pods ready", workload_label(c), c.ready, c.desired)
    end
  end
  for _, d in ipairs(f.dependants or {}) do
    if d.kind == "job" then
      if d.failed then reason(f, "degraded", d.name, "job %s failed (kubectl describe job %s -n %s)", d.name, d.name, ns) end
    elseif not d.found then
      reason(f, "degraded", d.name, "%s not found", workload_label(d))
    elseif d.desired > 0 and d.ready < d.desired then
      reason(f, "degraded", d.name, "%s has %d of %d pods ready", workload_label(d), d.ready, d.desired)
    end
  end
  for _, r in ipairs(f.runs or {}) do
    local at = r.step and (" at step %d/%d (%s)"):format(r.step, r.steps or 0, r.step_name or "?") or ""
    if r.running then
      reason(f, "warning", "run", "pgr run %s is in progress (pid %d)%s", f.service, r.pid, at)
    else
      reason(f, "degraded", "run", "a pgr run of %s stopped half-way%s%s; continue with: %s", f.service, at,
        r.error and (": " .. r.error) or "", r.resume)
    end
  end
  local l = f.lease
  if l and l.holder then
    local known = false
    for _, r in ipairs(f.runs or {}) do if r.id == l.run then known = true end end
    local what = ("pgr %s of %s"):format(l.command or "?", l.holder)
    local ago = l.renewed_ago and (" %d s ago"):format(l.renewed_ago) or ""
    if l.expired or l.alive == false then
      if not known then
        reason(f, l.command == "run" and "degraded" or "warning", "lease",
          "%s stopped without releasing the lease %s (last renewed%s)%s", what, l.name, ago,
          l.command == "run" and ("; continue it on %s: pgr run %s --resume"):format(l.host or "its host", f.service) or "")
      end
    elseif not known then
      reason(f, "warning", "lease", "%s holds the lease %s (renewed%s): it is in progress", what, l.name, ago)
    end
  end
  local bk = f.backups
  if bk then
    if bk.checked == false then
      reason(f, "warning", "backups", "backups not checked: %s", bk.note or "S3 is not configured")
    elseif bk.checked then
      local n = bk.newest
      if not n then
        reason(f, "warning", "backups", "no nightly backup of %s in s3://%s", cluster, bk.bucket or "?")
      else
        if not n.complete then
          reason(f, "warning", "backups", "the newest backup %s is incomplete: no .%s", n.name, n.missing or "?")
        elseif n.trailer == false then
          reason(f, "warning", "backups", "the newest backup %s is truncated: pg_dumpall's completion trailer is missing", n.name)
        end
        local due, why = backup_due(bk, now)
        bk.due = due and cron.iso(due) or nil
        if due and n.time and cron.epoch(n.time) < due - 300 then
          reason(f, "warning", "backups", "the newest backup %s is older than its schedule %q (%s) says: one was due at %s",
            n.name, bk.cronjob.schedule, bk.cronjob.name, cron.iso(due))
        elseif why then
          reason(f, "warning", "backups", "the schedule of %s is not read: %s", bk.cronjob.name, why)
        end
      end
      if bk.cronjob and bk.cronjob.suspend then
        reason(f, "warning", "backups", "cronjob %s is suspended: no nightly backups are made", bk.cronjob.name)
      elseif not bk.cronjob and f.postgresql and f.postgresql.found then
        reason(f, "warning", "backups", "no backup CronJob of %s in namespace %s (kubectl get cronjobs -n %s)", cluster, ns, ns)
      end
    end
  end
  local verdict = "healthy"
  for _, r in ipairs(f.reasons) do
    local v = r.severity == "warning" and "healthy" or r.severity
    if RANK[v] and RANK[v] > RANK[verdict] then verdict = v end
  end
  f.verdict = verdict
  return f
end

------------------------------------------------------------------------------------------------------
-- collecting one service

local function new_facts(name)
  return {
    service = name, verdict = "unknown", reasons = array(), pods = array(), secrets = array(),
    replication = array(), databases = array(), dependants = array(), runs = array(), errors = array(),
    backups = {},
  }
end

-- collect(name | svc, opts) -> facts (judged)
function M.collect(name, opts)
  opts = opts or {}
  local t0 = sys.now()
  local now = opts.now or os.time()
  local svc, proc
  if type(name) == "table" then
    svc, proc = name, opts.procedure
  else
    svc, proc = M.service(name)
  end
  local f = new_facts(type(name) == "string" and name or svc and svc.service)
  f.time = cron.iso(now)
  local function done()
    f.elapsed = math.floor((sys.now() - t0) * 1000 + 0.5) / 1000
    return M.judge(f, now)
  end
  if not svc then
    f.errors[#f.errors + 1] = { subject = "service", message = text_of(proc) }
    return done()
  end
  f.service, f.namespace, f.cluster = svc.service, svc.namespace, svc.cluster
  local site, serr = load_site(opts)
  if not site then
    f.errors[#f.errors + 1] = { subject = "site", message = text_of(serr) }
    return done()
  end
  -- where the time went, per part (seconds): what to look at when a status is slow
  f.timings = {}
  local lap = sys.now()
  local function timed(part)
    local t = sys.now()
    f.timings[part] = math.floor((t - lap) * 1000 + 0.5) / 1000
    lap = t
  end
  -- pgr's runs need no cluster: read first, so they show even when the API does not answer
  if proc then
    M.collect_runs(f, proc, opts.state_dir or require("pgr.site").state_dir(site), opts)
    timed("runs")
  end
  local k, kerr = opts.k8s, nil
  if not k then k, kerr = M.k8s(site, svc.namespace) end
  if not k then
    f.errors[#f.errors + 1] = { subject = "Kubernetes", message = text_of(kerr) }
    return done()
  end
  -- a client passed in may default to another namespace: every call here names the service's
  local saved_ns = k.namespace
  k.namespace = svc.namespace
  local ok, secrets, err = pcall(collect_k8s, f, k, svc)
  timed("kubernetes")
  if ok and secrets then
    local pok, perr = pcall(collect_pg, f, svc, site, secrets)
    if not pok then f.errors[#f.errors + 1] = { subject = "PostgreSQL", message = text_of(perr) } end
    secrets = nil -- the passwords go with this table
    timed("postgresql")
  else
    f.errors[#f.errors + 1] = { subject = "Kubernetes", message = text_of(ok and err or secrets) }
  end
  local bok, berr = pcall(collect_backups, f, svc, site, k, now)
  if not bok then f.errors[#f.errors + 1] = { subject = "backups", message = text_of(berr), severity = "warning" } end
  timed("backups")
  k.namespace = saved_ns
  if not opts.k8s then k:close() end
  return done()
end

------------------------------------------------------------------------------------------------------
-- several services: one child process each (the clients are synchronous; processes overlap them)

local function worst(list)
  local v = "healthy"
  for _, f in ipairs(list) do
    if RANK[f.verdict] and RANK[f.verdict] > RANK[v] then v = f.verdict end
  end
  return v
end

local function unknown_facts(name, message)
  local f = new_facts(name)
  local svc = M.service(name)
  if svc then f.namespace, f.cluster = svc.namespace, svc.cluster end
  f.errors[#f.errors + 1] = { subject = "status", message = message }
  return M.judge(f)
end

-- report(names, opts) -> { schema=1, time=, verdict=, elapsed=, services={facts...} }
function M.report(names, opts)
  opts = opts or {}
  local t0 = sys.now()
  local out = { schema = 1, time = cron.iso(opts.now or os.time()), services = array() }
  if #names == 1 then
    out.services[1] = M.collect(names[1], opts)
  elseif #names > 1 then
    local core = require "pgr.fanout.core"
    local exe = assert(sys.executable())
    local timeout = opts.timeout or M.defaults.service_timeout
    local run <close> = core.new { fanout = #names, timeout = timeout, kill_grace = 1, max_output = 4 * 1024 * 1024 }
    for _, name in ipairs(names) do
      local argv = { exe, "status", "--json" }
      for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
      argv[#argv + 1] = name
      run:add(argv)
    end
    while true do
      local left, _, why = run:step(1.0)
      if why == "interrupted" then
        run:stop()
        error("interrupted!", 0)
      end
      if left == 0 then break end
    end
    for i, name in ipairs(names) do
      local res = run:result(i)
      local doc = res.stdout ~= "" and json.decode(res.stdout) or nil
      local f = type(doc) == "table" and type(doc.services) == "table" and doc.services[1] or nil
      if f then
        out.services[i] = M.judge(f)
      elseif res.outcome == "timed_out" then
        out.services[i] = unknown_facts(name, ("no answer within %d s (pgr status %s shows what is slow)"):format(timeout, name))
      else
        local why = (res.stderr or ""):gsub("%s+$", "")
        out.services[i] = unknown_facts(name, why ~= "" and why or ("pgr status %s ended with %s"):format(name,
          res.exit and ("exit " .. res.exit) or tostring(res.outcome)))
      end
    end
  end
  out.verdict = worst(out.services)
  out.elapsed = math.floor((sys.now() - t0) * 1000 + 0.5) / 1000
  return out
end

function M.exit_code(report)
  return M.EXIT[report.verdict] or M.EXIT.unknown
end

------------------------------------------------------------------------------------------------------
-- the screen

local function paint(verdict, text)
  local ui = require "pgr.ui"
  local colour = ({ healthy = "green", degraded = "yellow", down = "red", unknown = "magenta" })[verdict]
  return colour and ui.color(colour, text) or text
end

local function human_age(seconds)
  if not seconds then return "?" end
  if seconds < 3600 then return ("%d min"):format(seconds // 60) end
  if seconds < 86400 * 2 then return ("%.1f h"):format(seconds / 3600) end
  return ("%.1f days"):format(seconds / 86400)
end

local function backup_line(b)
  local ui = require "pgr.ui"
  local state
  if not b.complete then state = "incomplete (no ." .. tostring(b.missing) .. ")"
  elseif b.trailer == false then state = "truncated (no completion trailer)"
  elseif b.trailer == true then state = "complete"
  else state = b.layout == "operator" and "complete (gzip: trailer not read)" or "complete (trailer not read)" end
  return ("%s [%s], %s old, %s, %s"):format(b.name, b.layout or "?", human_age(b.age_seconds),
    b.size and ui.bytes(b.size) or "size ?", state)
end

local function service_lines(f, lines)
  local ui = require "pgr.ui"
  local head = ("%s (%s/%s): %s"):format(f.service or "?", f.namespace or "?", f.cluster or "?",
    paint(f.verdict, f.verdict:upper()))
  lines[#lines + 1] = head
  for _, r in ipairs(f.reasons) do
    local mark = r.severity == "warning" and "  ! " or "  - "
    lines[#lines + 1] = mark .. (r.severity == "warning" and "" or (r.severity .. ": ")) .. r.message
  end
  local function row(label, text) lines[#lines + 1] = ("  %-11s %s"):format(label, text) end
  local p = f.postgresql
  if p then
    if p.found then
      row("postgresql", ("%s instances, PostgreSQL %s, %s"):format(tostring(p.instances or "?"), tostring(p.version or "?"),
        tostring(p.status or "no status")))
    else
      row("postgresql", "not found")
    end
  end
  local reps = {}
  for _, r in ipairs(f.replication or {}) do reps[r.pod] = r end
  local w = 0
  for _, pod in ipairs(f.pods or {}) do w = math.max(w, #pod.name) end
  for i, pod in ipairs(f.pods or {}) do
    local bits = { ("%-" .. w .. "s"):format(pod.name), ("%-7s"):format(pod.role or "-"), pod.phase,
                   pod.ready and "ready" or "not-ready", ("%d restarts"):format(pod.restarts or 0), pod.node or "-" }
    local r = reps[pod.name]
    if r then
      if r.streaming then
        bits[#bits + 1] = ("streaming, lag %s%s"):format(ui.bytes(r.lag_bytes or 0),
          r.lag_seconds and (" / %.1f s"):format(r.lag_seconds) or "")
      elseif r.state then
        bits[#bits + 1] = "replication " .. r.state
      else
        bits[#bits + 1] = r.reachable == false and ("not streaming (" .. (r.error_class or "error") .. ")") or "not streaming"
      end
    elseif pod.role == "master" and f.master == pod.name then
      bits[#bits + 1] = f.master_reachable == false and "not accepting connections"
        or (f.server_version and ("PostgreSQL " .. f.server_version) or "")
    end
    row(i == 1 and "pods" or "", table.concat(bits, "  "))
  end
  if f.postgresql and f.postgresql.found and #(f.pods or {}) == 0 then row("pods", "none") end
  if #(f.secrets or {}) > 0 then
    local parts = {}
    for _, s in ipairs(f.secrets) do
      local state = not s.found and "no secret" or s.login == true and "ok" or s.login == false and ("FAILED: " .. (s.error or "?"))
        or "not tried"
      parts[#parts + 1] = ("%s %s"):format(s.username or s.user, state)
    end
    row("logins", table.concat(parts, ", "))
  end
  if #(f.databases or {}) > 0 then
    local parts = {}
    for _, d in ipairs(f.databases) do parts[#parts + 1] = ("%s %s"):format(d.name, ui.bytes(d.bytes or 0)) end
    row("databases", table.concat(parts, ", "))
  end
  local function wl(d)
    if not d.found then return ("%s %s not found"):format(d.kind, d.name) end
    if d.kind == "job" then
      return ("job %s %s"):format(d.name, d.failed and "failed" or d.complete and "complete" or "running")
    end
    return ("%s %s %d/%d ready"):format(d.kind, d.name, d.ready or 0, d.desired or 0)
  end
  if f.client then row("client", wl(f.client)) end
  if #(f.dependants or {}) > 0 then
    local parts = {}
    for _, d in ipairs(f.dependants) do parts[#parts + 1] = wl(d) end
    row("dependants", table.concat(parts, ", "))
  end
  local bk = f.backups or {}
  if bk.checked then
    row("backups", bk.newest and ("newest " .. backup_line(bk.newest)) or "no nightly backup")
    if bk.pgr then row("", "pgr's newest " .. backup_line(bk.pgr)) end
    if bk.cronjob then
      row("", ("cronjob %s %q%s%s"):format(bk.cronjob.name, tostring(bk.cronjob.schedule),
        bk.cronjob.suspend and " (suspended)" or "", bk.due and (", last due " .. bk.due) or ""))
    end
  elseif bk.checked == false then
    row("backups", "not checked")
  end
  for i, r in ipairs(f.runs or {}) do
    row(i == 1 and "runs" or "", ("%s %s%s"):format(r.id, r.running and ("running (pid " .. r.pid .. ")") or "stopped",
      r.step and (" at step %d/%d: %s"):format(r.step, r.steps or 0, r.step_name or "?") or ""))
    if not r.running then row("", "continue with: " .. r.resume) end
  end
  local l = f.lease
  if l and l.holder then
    row(#(f.runs or {}) == 0 and "runs" or "", ("lease %s held by %s (pgr %s), renewed %s%s"):format(l.name, l.holder,
      l.command or "?", l.renewed_ago and (l.renewed_ago .. " s ago") or "?",
      (l.expired and ", expired") or (l.alive == false and ", its process is gone") or ""))
  end
  if #(f.runs or {}) == 0 and not (l and l.holder) and f.last_run then
    row("runs", ("last %s: %s%s"):format(f.last_run.id, tostring(f.last_run.status),
      f.last_run.finished and (" at " .. f.last_run.finished) or ""))
  end
end

function M.format(report)
  local lines = {}
  for i, f in ipairs(report.services) do
    if i > 1 then lines[#lines + 1] = "" end
    service_lines(f, lines)
  end
  if #report.services > 1 then
    local counts, names = {}, {}
    for _, f in ipairs(report.services) do
      counts[f.verdict] = (counts[f.verdict] or 0) + 1
      names[f.verdict] = names[f.verdict] or {}
      table.insert(names[f.verdict], f.service)
    end
    local parts = {}
    for _, v in ipairs({ "healthy", "degraded", "down", "unknown" }) do
      if counts[v] then
        parts[#parts + 1] = v == "healthy" and ("%d healthy"):format(counts[v])
          or ("%d %s (%s)"):format(counts[v], v, table.concat(names[v], ", "))
      end
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = ("%d services: %s — %s in %.1f s"):format(#report.services, table.concat(parts, ", "),
      paint(report.verdict, report.verdict:upper()), report.elapsed or 0)
  end
  return table.concat(lines, "\n")
end

return M
