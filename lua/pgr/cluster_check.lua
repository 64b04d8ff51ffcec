-- pgr.cluster_check: what pgr checks of the Zalando cluster it restored, beyond "pods Ready" and
-- "postgresql Running" — neither of which says PostgreSQL works: without the operator's readiness
-- probe (off by default) a pod is Ready once its container started, and `Running` after a scale-out
-- says nothing of the new replicas.
--
--   check.operator_config(ctx) -> cfg | nil, note
--       the operator's settings where readable: its OperatorConfiguration object, else its ConfigMap
--       postgres-operator; cfg = { source=, enable_persistent_volume_claim_deletion=bool|nil, ... }
--   check.pvc_deletion(ctx) -> note | nil, err      (a preflight step: refuses when it is off)
--   check.master_accepts(ctx) -> note | nil, err    waits until the master's PostgreSQL takes a login
--   check.running(ctx) -> note | nil, err           waits for PostgresClusterStatus Running; a SyncFailed
--       left by an operator sync that ran while the restore changed passwords is accepted once postgres
--       logs in with its secret's password (what the operator's next sync uses)
--   check.replicas_stream(ctx, instances) -> note | nil, err
--       every replica of `instances` streams from the master (pg_stat_replication, lag within
--       check.defaults.max_lag); a replica that does not names the cause pgr can read (the standby
--       password, a missing secret, its log's error) and what to do.
-- ctx is the runbook context of pgr.restore (ctx.k8s, ctx.svc).
local errors = require "pgr.errors"
local json = require "pgr.json"
local sys = require "pgr.sys"

local M = {}

-- Policy a site may tune.
M.defaults = {
  max_lag = 16 * 1024 * 1024,   -- bytes a replica may be behind the master's current WAL position
  replica_timeout = 600,        -- seconds for every replica to stream
  master_timeout = 600,         -- seconds for the master to accept connections
  poll = 1,                     -- seconds between looks
}

-- The names the operator's configuration goes by: the chart names both after its release
-- (postgres-operator); the operator's own manifests name the object postgresql-operator-configuration.
M.CONFIGMAP = "postgres-operator"
M.OBJECTS = { "postgres-operator", "postgresql-operator-configuration", "postgresql-operator-default-configuration" }
M.HOME = "services"   -- where CSM runs the operator

local function restore() return require "pgr.restore" end

local function fail(code, fmt, ...)
  return nil, errors.new(code, fmt:format(...))
end

-- obj.a.b... of decoded JSON, nil where a level is missing or null
local field = require("pgr.k8s").field
local spilo = require("pgr.spilo")

local function bool(v)
  if type(v) == "boolean" then return v end
  if type(v) == "string" then
    local l = v:lower()
    if l == "true" then return true end
    if l == "false" then return false end
  end
  return nil
end

local function is_auth_error(err)
  return type(err) == "table" and (err.sqlstate == "28P01" or tostring(err.message or err):find("password authentication failed", 1, true) ~= nil)
end

-- Operator configuration ------------------------------------------------------------------------------

local KEYS = { "enable_persistent_volume_claim_deletion", "enable_secrets_deletion", "enable_readiness_probe" }

local function from_object(o)
  local conf = field(o, "configuration") or {}
  local cfg = { source = ("operatorconfiguration %s/%s"):format(field(o, "metadata", "namespace") or "?",
    field(o, "metadata", "name") or "?") }
  for _, k in ipairs(KEYS) do cfg[k] = bool(field(conf, "kubernetes", k)) end
  return cfg
end

local function from_configmap(o)
  local cfg = { source = ("configmap %s/%s"):format(field(o, "metadata", "namespace") or "?", M.CONFIGMAP) }
  for _, k in ipairs(KEYS) do cfg[k] = bool(field(o, "data", k)) end
  return cfg
end

local function unreadable(err)
  local k8s = require "pgr.k8s"
  return type(err) == "table" and (err.code == 403 or err.code == 404 or err.code == "unknown_resource"
    or k8s.is_not_found(err))
end

function M.operator_config(ctx)
  local k = ctx.k8s
  -- the CRD-based configuration wins where the cluster has one (an OperatorConfiguration object)
  local objs, err = k:list("operatorconfigurations", { all_namespaces = true })
  if objs and #objs > 0 then
    local by_name = {}
    for _, o in ipairs(objs) do by_name[field(o, "metadata", "name") or ""] = o end
    local pick = objs[1]
    for i = #M.OBJECTS, 1, -1 do pick = by_name[M.OBJECTS[i]] or pick end
    return from_object(pick)
  elseif not objs and not unreadable(err) then
    return nil, err
  end
  local cm
  cm, err = k:get("configmap", M.CONFIGMAP, { namespace = M.HOME })
  if cm then return from_configmap(cm) end
  if not unreadable(err) then return nil, err end
  local list
  list, err = k:list("configmaps", { all_namespaces = true, fields = "metadata.name=" .. M.CONFIGMAP })
  if list and #list > 0 then return from_configmap(list[1]) end
  if not list and not unreadable(err) then return nil, err end
  return nil, ("neither an OperatorConfiguration object nor a ConfigMap %s is readable here%s"):format(M.CONFIGMAP,
    err and (" (" .. tostring(err.message or err) .. ")") or "")
end

-- The preflight step of a restore that deletes and re-creates the cluster.
function M.pvc_deletion(ctx)
  local cfg, note = M.operator_config(ctx)
  if not cfg then
    if type(note) == "table" then return nil, note end
    require("pgr.ui").warn(("the operator's configuration cannot be checked: %s; make sure its "
      .. "enable_persistent_volume_claim_deletion is not false, or the re-created %s starts on the old data"):format(note,
      ctx.svc.cluster))
    return "not readable: " .. note
  end
  if cfg.enable_persistent_volume_claim_deletion == false then
    return fail("operator", "the operator keeps the volumes of a deleted cluster (enable_persistent_volume_claim_deletion "
      .. "is false in %s): the postgresql %s re-created by this restore would start on its old data, not empty. "
      .. "Set enable_persistent_volume_claim_deletion to true there and restart the operator (kubectl rollout restart "
      .. "deployment postgres-operator -n %s), then run pgr again; nothing was changed", cfg.source, ctx.svc.cluster,
      cfg.source:match("^%S+ ([^/]+)/") or M.HOME)
  end
  return ("%s: enable_persistent_volume_claim_deletion %s"):format(cfg.source,
    cfg.enable_persistent_volume_claim_deletion == nil and "not set (the operator's default: true)" or "true")
end

-- Waits -------------------------------------------------------------------------------------------

local function poll(ctx, describe, timeout, fn)
  local deadline = sys.now() + timeout
  local ui = require "pgr.ui"
  local t0, last = sys.now(), nil
  while true do
    local done, note, err = fn()
    if done then
      if ui.clear_status then ui.clear_status() end
      return done, note
    end
    if err then
      if ui.clear_status then ui.clear_status() end
      return nil, err
    end
    last = note
    if sys.now() >= deadline then
      if ui.clear_status then ui.clear_status() end
      return nil, errors.new("timeout", ("gave up after %d s waiting %s%s"):format(timeout, describe,
        last and (": " .. last) or ""), { last = last })
    end
    ui.status(("waiting %s (%ds%s)"):format(describe, math.floor(sys.now() - t0), last and ("; " .. last) or ""))
    sys.sleep(M.defaults.poll)
  end
end

function M.master_accepts(ctx)
  local svc = ctx.svc
  if ctx.dry_run then return "skipped in a dry run" end
  return poll(ctx, "for the master of " .. svc.cluster .. " to accept connections", M.defaults.master_timeout, function()
    local conn, err = restore().admin(ctx, "postgres")
    if conn then
      local rows = conn:query("SELECT pg_is_in_recovery() AS standby")
      conn:close()
      if rows and rows[1] and rows[1].standby == false then return true, "the master accepts connections" end
      return false, "the master pod's server is still in recovery"
    end
    -- a password the server refuses is no matter of waiting
    if is_auth_error(err) then return nil, nil, err end
    return false, tostring(err and err.message or err)
  end)
end

-- Whether postgres logs in to the master with its secret's password (what the operator uses).
local function operator_can_log_in(ctx)
  local s, err = ctx.k8s:secret(restore().secret_name(ctx.svc, "postgres"))
  if not s then return nil, err end
  ctx:secret(s.password)
  local conn
  conn, err = restore().connect(ctx, { user = "postgres", password = s.password, dbname = "postgres" })
  if not conn then return nil, err end
  conn:close()
  return true
end

function M.running(ctx)
  local svc = ctx.svc
  local note
  local ok, err = ctx.k8s:wait_for("postgresql", svc.cluster, function(o)
    local phase = field(o, "status", "PostgresClusterStatus")
    if phase == "Running" then return true end
    if phase == "SyncFailed" then
      -- an operator sync ran while the restore changed the passwords and could not log in; its next
      -- one (every repair_period) sets Running again if postgres logs in with its secret's password now
      local can, why = operator_can_log_in(ctx)
      if can then
        note = "the operator's status is SyncFailed (a sync ran while the restore changed the passwords); postgres "
          .. "now logs in with its secret's password, so its next sync sets Running again"
        return true
      end
      return false, "SyncFailed, and postgres does not log in with its secret's password: " .. tostring(why and why.message or why)
    end
    return false, tostring(phase)
  end, { timeout = require("pgr.restore").defaults.wait_timeout, describe = "postgresql " .. svc.cluster .. " to be Running" })
  if not ok then return nil, err end
  if note then
    require("pgr.ui").warn(note)
    ctx:log(note)
  end
  return note or true
end

-- Replication -------------------------------------------------------------------------------------------

local function pod_waiting(p)
  for _, cs in ipairs(field(p, "status", "containerStatuses") or {}) do
    local w = field(cs, "state", "waiting")
    if w and w.reason and w.reason ~= "ContainerCreating" then return w.reason, w.message end
  end
end

-- The line of a pod's log that says why it is no replica (pg_basebackup's or the server's error).
local function log_cause(ctx, pod)
  local text = ctx.k8s:pod_log(pod, { container = "postgres", tail = 200 })
  if not text then return nil end
  -- pg_basebackup's error (the server's refusal of its first, TLS, attempt) says most, then any other
  -- refusal (FATAL), then Patroni's ERROR
  local best = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("pg_basebackup: error", 1, true) then best[1] = line
    elseif line:find("FATAL:", 1, true) then best[2] = line
    elseif line:find("ERROR:", 1, true) then best[3] = line end
  end
  local line = best[1] or best[2] or best[3]
  return line and (line:gsub("^%s+", ""):sub(1, 300))
end

-- Why the replicas listed do not stream: a definite cause pgr can name, or nil.
local function diagnose(ctx, missing)
  local svc = ctx.svc
  local r = restore()
  -- the standby role's password in the database against its secret: the replicas log in with the
  -- secret's password they got at their start
  local s = ctx.k8s:secret(r.secret_name(svc, "standby"))
  local standby_bad
  if s and s.password then
    ctx:secret(s.password)
    local conn, err = r.connect(ctx, { user = s.username or "standby", password = s.password, dbname = "postgres" })
    if conn then conn:close() elseif is_auth_error(err) then standby_bad = true end
  end
  local lines = {}
  for _, p in ipairs(missing) do
    local name = field(p, "metadata", "name")
    local reason, msg = pod_waiting(p)
    if reason then
      lines[#lines + 1] = ("%s: its container waits: %s%s"):format(name, reason, msg and (" (" .. msg .. ")") or "")
    else
      local cause = log_cause(ctx, name)
      if cause then lines[#lines + 1] = ("%s: %s"):format(name, cause) end
    end
  end
  if standby_bad then
    local names = {}
    for _, p in ipairs(missing) do names[#names + 1] = field(p, "metadata", "name") end
    return ("the standby role's password in the database is not the one in secret %s, which the replicas log in with "
      .. "(%s). The dump sets the role's password to the backup's; here the secret holds another. Set the role's password to "
      .. "the secret's (as postgres on the master: ALTER ROLE standby PASSWORD '<the password in %s>'), then delete the "
      .. "replica pods so they start again (kubectl delete pod -n %s %s), and run pgr again with --resume; or restore "
      .. "with the manifest taken with this dump"):format(r.secret_name(svc, "standby"),
      #lines > 0 and table.concat(lines, "; ") or "a login as standby with it fails", r.secret_name(svc, "standby"),
      svc.namespace, table.concat(names, " "))
  end
  for _, p in ipairs(missing) do
    local reason, msg = pod_waiting(p)
    if reason == "CreateContainerConfigError" then
      return ("replica %s cannot start: %s (a secret its container needs is missing: kubectl get secrets -n %s)")
        :format(field(p, "metadata", "name"), msg or reason, svc.namespace)
    end
  end
  return nil, lines
end

function M.replicas_stream(ctx, instances)
  local svc = ctx.svc
  if ctx.dry_run then return "skipped in a dry run" end
  local want = (instances or 1) - 1
  if want <= 0 then return "no replica to check (numberOfInstances 1)" end
  local last_diag = 0
  local final
  local ok, res = poll(ctx, ("for %d replica%s of %s to stream from the master"):format(want, want == 1 and "" or "s",
    svc.cluster), M.defaults.replica_timeout, function()
    local master, merr = restore().master(ctx)
    if not master then return false, tostring(merr and merr.message or merr) end
    local pods, perr = ctx.k8s:list("pods", { labels = spilo.selector(svc.cluster) })
    if not pods then return nil, nil, perr end
    local replicas = {}
    for _, p in ipairs(pods) do
      if field(p, "metadata", "uid") ~= field(master, "metadata", "uid") and not field(p, "metadata", "deletionTimestamp") then
        replicas[#replicas + 1] = p
      end
    end
    local conn, cerr = restore().admin(ctx, "postgres")
    if not conn then
      if is_auth_error(cerr) then return nil, nil, cerr end
      return false, tostring(cerr and cerr.message or cerr)
    end
    local rows, qerr = conn:query("SELECT application_name AS name, state, "
      .. "COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint AS lag FROM pg_stat_replication")
    conn:close()
    if not rows then return nil, nil, qerr end
    local by_name = {}
    for _, row in ipairs(rows) do by_name[row.name] = row end
    local streaming, missing, lagging = 0, {}, {}
    for _, p in ipairs(replicas) do
      local row = by_name[field(p, "metadata", "name")]
      if row and row.state == "streaming" and row.lag >= 0 and row.lag <= M.defaults.max_lag then
        streaming = streaming + 1
      elseif row and row.state == "streaming" then
        lagging[#lagging + 1] = ("%s (%s behind)"):format(field(p, "metadata", "name"), require("pgr.ui").bytes(row.lag))
      else
        missing[#missing + 1] = p
      end
    end
    if streaming >= want and #replicas >= want then
      final = ("%d replica%s stream from %s (lag within %s)"):format(streaming, streaming == 1 and "" or "s",
        field(master, "metadata", "name"), require("pgr.ui").bytes(M.defaults.max_lag))
      return true, final
    end
    -- a cause that waiting cannot cure ends the wait at once
    if #missing > 0 and sys.now() - last_diag >= 5 then
      last_diag = sys.now()
      local cause = diagnose(ctx, missing)
      if cause then return nil, nil, errors.new("replication", cause) end
    end
    local bits = { ("%d/%d streaming"):format(streaming, want) }
    if #replicas < want then bits[#bits + 1] = ("%d replica pod%s"):format(#replicas, #replicas == 1 and "" or "s") end
    if #lagging > 0 then bits[#bits + 1] = "lagging: " .. table.concat(lagging, ", ") end
    return false, table.concat(bits, "; ")
  end)
  if ok then return res end
  local err = res
  if type(err) == "table" and err.code == "timeout" then
    -- say what each replica shows, as far as pgr can read it
    local pods = ctx.k8s:list("pods", { labels = spilo.selector(svc.cluster) }) or {}
    local master = restore().master(ctx)
    local missing = {}
    for _, p in ipairs(pods) do
      if not master or field(p, "metadata", "uid") ~= field(master, "metadata", "uid") then missing[#missing + 1] = p end
    end
    local _, lines = diagnose(ctx, missing)
    local states = {}
    for _, p in ipairs(missing) do
      local st = field(p, "metadata", "annotations", "status")
      local ok2, d = pcall(json.decode, st or "")
      states[#states + 1] = ("%s: %s"):format(field(p, "metadata", "name"),
        ok2 and type(d) == "table" and (tostring(d.state) .. "/" .. tostring(d.role)) or "no Patroni status")
    end
    err.message = err.message .. ". Replicas: " .. (#states > 0 and table.concat(states, "; ") or "none")
      .. ((lines and #lines > 0) and (". Their logs: " .. table.concat(lines, "; ")) or "")
      .. (". Look at kubectl logs -n %s <pod> and the master's pg_stat_replication; pgr run --resume checks again"):format(svc.namespace)
  end
  return nil, err
end

return M
