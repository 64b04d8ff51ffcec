-- pgr.drill: proves a backup restores, without touching the live cluster — a scratch postgresql
-- pgr-drill-<cluster> restored with `pgr run`'s own engine and policy, checked, always deleted.
--
--   local report = drill.run{ proc = <a restore procedure>, site = <site>, source = { backup=, dump=,
--                             manifest=, jobs= }, state_dir = DIR }
--   report: { service=, namespace=, cluster=, scratch=, backup = { name=, source=, layout=, size=,
--             age_seconds=, dumped_from= }, phases = { { name=, seconds=, ok=, note= } ... },
--             checks = { { name=, ok=, detail= } ... }, result = "pass"|"fail"|"refused"|"interrupted",
--             reasons = { text ... }, exit = 0|1|3|130, seconds= }
--
-- The phases: the checks `pgr run` makes before it changes anything, as far as they only read
-- (backup complete, manifest, versions, the service's own schema checks), plus the API verbs the
-- drill needs and whether the dump is this service's at all; a scratch cluster a killed drill left
-- behind is removed; the scratch cluster is created (one instance, the live spec's version,
-- resources, users and databases; team "pgr"; labelled app.kubernetes.io/managed-by=pgr); the dump
-- is streamed by restore.stream_dump, which fails on any error the policy does not expect; then
-- every table's row count is compared with the dump's COPY count, and each manifest user logs in
-- with the manifest's password; the scratch cluster, its pods, volumes and secrets are deleted —
-- after a failure and after Ctrl-C too (a second Ctrl-C stops that; the next drill removes it).
--
-- Never touched: the live postgresql, its pods, secrets and client. They are read (the spec, the
-- schema version, the table names); every write and delete names the scratch cluster, and a
-- postgresql of the scratch name that pgr did not label is refused, not deleted.
-- The scratch cluster gets new secrets from the operator; the dump sets the roles' passwords; the
-- drill checks with its own superuser (made before the dump, unknown to it), so a wrong manifest
-- shows as logins that fail, not as a drill that cannot look.
local errors = require "pgr.errors"
local json = require "pgr.json"
local sys = require "pgr.sys"
local ui = require "pgr.ui"
local k8s = require "pgr.k8s"
local runbook = require "pgr.runbook"
local restore = require "pgr.restore"

local M = {}

M.PREFIX = "pgr-drill-"
M.TEAM = "pgr"
M.LABEL_MANAGED = "app.kubernetes.io/managed-by"
M.LABEL_OF = "pgr/drill-of"
-- the operator's limit on a cluster name
M.MAX_NAME = 53

-- What the drill asks of the API (kubectl auth can-i), checked before anything is made.
M.VERBS = {
  { "get", "postgresqls" }, { "watch", "postgresqls" }, { "create", "postgresqls" }, { "delete", "postgresqls" },
  { "list", "pods" }, { "watch", "pods" },
  { "get", "secrets" }, { "list", "secrets" }, { "watch", "secrets" }, { "delete", "secrets" },
  { "list", "persistentvolumeclaims" }, { "watch", "persistentvolumeclaims" }, { "delete", "persistentvolumeclaims" },
  { "get", "leases" }, { "create", "leases" }, { "update", "leases" },
}

-- Spec fields a scratch cluster must not carry: they act outside it (clone or stream from another
-- cluster, write logical backups to the bucket, change data streams, load balancers, poolers).
M.DROP_SPEC = { "clone", "standby", "streams", "logicalBackupSchedule" }
M.FALSE_SPEC = { "enableLogicalBackup", "enableConnectionPooler", "enableReplicaConnectionPooler",
                 "enableMasterLoadBalancer", "enableReplicaLoadBalancer" }

M.PHASES = {
  "Check the backup, the manifest and the API (reads only)",
  "Remove a scratch cluster an earlier drill left behind",
  "Create the scratch cluster %s (one instance) and wait until it is Running",
  "Stream the dump into the scratch cluster",
  "Verify the scratch cluster: row counts, logins",
  "Delete the scratch cluster and wait until it is gone",
}
local SHORT = { "checks", "clean-up", "create", "restore", "verify", "delete" }

function M.scratch_name(cluster) return M.PREFIX .. cluster end

local function fail(code, fmt, ...)
  return nil, errors.new(code, fmt:format(...))
end

local field = k8s.field

local err_text, is_interrupt, traceback = runbook.err_text, runbook.is_interrupt, runbook.traceback

-- Errors of the surroundings, not of the backup: the drill could not be run (exit 3).
local ENV_CODES = { connect = true, resolve = true, tls = true, timeout = true, transfer = true, forbidden = true,
                    site = true, missing = true, credentials = true, kubeconfig = true, lease_held = true,
                    lease = true, scratch = true, locked = true }
local function env_error(e)
  if type(e) ~= "table" then return false end
  if type(e.code) == "number" then return e.code ~= 422 end
  return ENV_CODES[e.code] == true
end

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(n)
  f:close()
  return (raw:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local spilo_selector = require("pgr.spilo").selector

-- A table name as pg_dump writes it in COPY (public.system, public."user"): checked before it is
-- put into SQL; nil when it is anything else.
local function qualified_name(s)
  local parts, i = {}, 1
  while true do
    if i > #s then return nil end -- empty, or a trailing dot
    local part, j
    if s:sub(i, i) == '"' then
      local k = i + 1
      local buf = {}
      while true do
        local c = s:sub(k, k)
        if c == "" then return nil end
        if c == '"' then
          if s:sub(k + 1, k + 1) == '"' then buf[#buf + 1] = '"' k = k + 2
          else break end
        else
          buf[#buf + 1] = c
          k = k + 1
        end
      end
      part, j = table.concat(buf), k + 1
    else
      local w = s:match("^[%a_][%w_$]*", i)
      if not w then return nil end
      part, j = w, i + #w
    end
    parts[#parts + 1] = part
    if j > #s then break end
    if s:sub(j, j) ~= "." then return nil end
    i = j + 1
  end
  if #parts < 1 or #parts > 2 then return nil end
  return parts
end
M.qualified_name = qualified_name

-- Scratch cluster ------------------------------------------------------------------------------------

-- The scratch postgresql: the live spec (version, resources, volume, users, databases) with one
-- instance, team pgr, and nothing that reaches outside it.
function M.scratch_object(live, scratch, cluster)
  local spec = k8s.deepcopy(field(live, "spec") or {})
  spec.numberOfInstances = 1
  spec.teamId = M.TEAM
  for _, f in ipairs(M.DROP_SPEC) do spec[f] = nil end
  for _, f in ipairs(M.FALSE_SPEC) do if spec[f] ~= nil then spec[f] = false end end
  return {
    apiVersion = "acid.zalan.do/v1", kind = "postgresql",
    metadata = { name = scratch, namespace = field(live, "metadata", "namespace"),
                 labels = { [M.LABEL_MANAGED] = "pgr", [M.LABEL_OF] = cluster, team = M.TEAM } },
    spec = spec,
  }
end

local function wait_gone(k, kind, selector, timeout)
  return k:wait_for(kind, selector, function(list)
    if #list == 0 then return true end
    return false, #list .. " left"
  end, { timeout = timeout, describe = ("%s %s to be gone"):format(kind, selector) })
end

-- Removes the scratch cluster and everything the operator made for it: its pods, volumes (with
-- PVC deletion off, a cluster made again of the same name would start on the old data) and
-- secrets. Returns what was found ("nothing" or a list) | nil, err.
function M.remove_scratch(k, scratch, timeout)
  timeout = timeout or restore.defaults.wait_timeout
  local found = {}
  local obj, err = k:get("postgresql", scratch)
  if obj then
    if field(obj, "metadata", "labels", M.LABEL_MANAGED) ~= "pgr" then
      return fail("scratch", "postgresql %s/%s exists and is not pgr's (no label %s=pgr): pgr drill will not "
        .. "delete it; remove or rename it yourself (kubectl get postgresql %s -n %s -o yaml)",
        tostring(field(obj, "metadata", "namespace")), scratch, M.LABEL_MANAGED, scratch,
        tostring(field(obj, "metadata", "namespace")))
    end
    found[#found + 1] = "postgresql"
    local ok, derr = k:delete("postgresql", scratch, { ignore_not_found = true, wait = true, timeout = timeout })
    if not ok then return nil, derr end
  elseif not k8s.is_not_found(err) then
    return nil, err
  end
  local sel = spilo_selector(scratch)
  local pods
  pods, err = k:list("pods", { labels = sel })
  if not pods then return nil, err end
  if #pods > 0 then found[#found + 1] = #pods .. " pods" end
  local ok, werr = k:pods_gone(sel, { timeout = timeout })
  if not ok then return nil, werr end
  for _, kind in ipairs { "persistentvolumeclaims", "secrets" } do
    local items, lerr = k:list(kind, { labels = sel })
    if not items then return nil, lerr end
    if #items > 0 then found[#found + 1] = ("%d %s"):format(#items, kind) end
    for _, it in ipairs(items) do
      local dok, derr = k:delete(kind, it.metadata.name, { ignore_not_found = true })
      if not dok then return nil, derr end
    end
    ok, werr = wait_gone(k, kind, sel, timeout)
    if not ok then return nil, werr end
  end
  return #found > 0 and table.concat(found, ", ") or "nothing"
end

local function create_scratch(ctx, report)
  local svc = ctx.svc
  local live, err = ctx.k8s:get("postgresql", svc.cluster)
  if not live then return nil, err end
  local obj = M.scratch_object(live, report.scratch, svc.cluster)
  report.created = true -- from here on, the clean-up must look
  local made
  made, err = ctx.k8s:create(obj)
  if not made then return nil, err end
  local timeout = restore.defaults.wait_timeout
  local pods, perr = ctx.k8s:pods_ready(spilo_selector(report.scratch, "master"), 1, { timeout = timeout })
  if not pods then return nil, perr end
  local ok, werr = ctx.k8s:wait_for("postgresql", report.scratch, function(o)
    local st = field(o, "status", "PostgresClusterStatus")
    if st == "Running" then return true end
    if st == "CreateFailed" or st == "Invalid" or st == "SyncFailed" then
      return nil, errors.new("scratch_failed", ("the operator reports the scratch cluster %s as %s (kubectl describe "
        .. "postgresql %s -n %s)"):format(report.scratch, st, report.scratch, svc.namespace))
    end
    return false, st
  end, { timeout = timeout, describe = "postgresql " .. report.scratch .. " to be Running" })
  if not ok then return nil, werr end
  return ("PostgreSQL %s"):format(tostring(field(live, "spec", "postgresql", "version") or "?"))
end

-- Checks ---------------------------------------------------------------------------------------------

local function check(report, name, ok, detail)
  report.checks[#report.checks + 1] = { name = name, ok = ok, detail = detail }
  if ok == false then report.reasons[#report.reasons + 1] = name .. ": " .. tostring(detail) end
end

-- The dump is this service's: it creates the databases and roles the live postgresql declares, and
-- in each of those databases it holds some of the live cluster's tables.
local function same_service(ctx, info)
  local svc = ctx.svc
  local live, err = ctx.k8s:get("postgresql", svc.cluster)
  if not live then return nil, err end
  local made, roles = {}, {}
  for _, d in ipairs(info.databases or {}) do made[d] = true end
  for _, r in ipairs(info.roles or {}) do roles[r] = true end
  local missing = {}
  local dbs = {}
  for db in pairs(field(live, "spec", "databases") or {}) do
    dbs[#dbs + 1] = db
    if not made[db] then missing[#missing + 1] = "database " .. db end
  end
  table.sort(dbs)
  local users = {}
  for u in pairs(field(live, "spec", "users") or {}) do users[#users + 1] = u end
  for _, u in ipairs(svc.users) do users[#users + 1] = u end
  table.sort(users)
  local seen, nroles = {}, 0
  for _, u in ipairs(users) do
    if not seen[u] then
      nroles = nroles + 1
      if not roles[u] then missing[#missing + 1] = "role " .. u end
    end
    seen[u] = true
  end
  if #missing > 0 then
    table.sort(missing)
    return fail("other_service", "the dump does not create %s, which %s/%s has: is it a dump of another service?",
      table.concat(missing, ", "), svc.namespace, svc.cluster)
  end
  -- the tables, database by database, against the live cluster's (read as postgres)
  local by_db = {}
  for _, c in ipairs(info.copies or {}) do
    local parts = qualified_name(c.table)
    if parts then
      by_db[c.database] = by_db[c.database] or {}
      by_db[c.database][#parts == 2 and (parts[1] .. "." .. parts[2]) or ("public." .. parts[1])] = true
    end
  end
  local pw
  local sec = ctx.k8s:secret(restore.secret_name(svc, "postgres"))
  pw = sec and sec.password
  if pw then ctx:secret(pw) end
  local compared = 0
  for _, db in ipairs(dbs) do
    local conn, cerr = restore.connect(ctx, { user = "postgres", password = pw, dbname = db })
    if not conn then
      return ("databases and roles match; the live tables were not compared (%s)"):format(err_text(cerr))
    end
    local rows, qerr = conn:query("SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n "
      .. "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
      .. "'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1")
    conn:close()
    if not rows then return nil, qerr end
    local have, common = {}, 0
    for _, r in ipairs(rows) do
      have[#have + 1] = r.name
      if (by_db[db] or {})[r.name] then common = common + 1 end
    end
    if #have > 0 and common == 0 then
      local theirs = {}
      for t in pairs(by_db[db] or {}) do theirs[#theirs + 1] = t end
      table.sort(theirs)
      return fail("other_service", "database %s: the dump holds none of the live cluster's %d tables (live: %s; "
        .. "dump: %s): is it a dump of another service?", db, #have, table.concat(have, ", ", 1, math.min(#have, 5)),
        #theirs > 0 and table.concat(theirs, ", ", 1, math.min(#theirs, 5)) or "no tables")
    end
    compared = compared + 1
  end
  return ("%d database(s) and %d role(s) of %s; tables compared in %d database(s)"):format(#dbs, nroles,
    svc.cluster, compared)
end

local function can_i(ctx)
  local denied = {}
  for _, v in ipairs(M.VERBS) do
    local allowed, err = ctx.k8s:can_i(v[1], v[2], ctx.svc.namespace)
    if allowed == nil then return nil, err end
    if not allowed then denied[#denied + 1] = v[1] .. " " .. v[2] end
  end
  if #denied > 0 then
    return fail("forbidden", "not allowed in namespace %s: %s (kubectl auth can-i ... -n %s)", ctx.svc.namespace,
      table.concat(denied, ", "), ctx.svc.namespace)
  end
  return ("%d verbs allowed"):format(#M.VERBS)
end

-- Phase 1: every read-only check; the first failure ends the phase (its error says why).
local function checks(ctx, proc, report)
  local note, err = can_i(ctx)
  if not note then return nil, err end
  check(report, "the API allows what a drill needs", true, note)
  local compared = false
  for _, s in ipairs(proc.steps) do
    if s.drill then
      local res = table.pack(pcall(s.run, ctx))
      if not res[1] then
        if is_interrupt(res[2]) then error(res[2], 0) end
        check(report, s.name, false, err_text(res[2]))
        return nil, res[2]
      end
      local r1, r2 = res[2], res[3]
      if r1 == false or (r1 == nil and r2 ~= nil) then
        r2 = r2 or errors.new("check", "the check reported failure")
        check(report, s.name, false, err_text(r2))
        return nil, r2
      end
      check(report, s.name, true, type(r1) == "string" and r1 or nil)
      -- as soon as the dump was read: is it this service's at all (before the checks that would
      -- only stumble over another service's data)
      if ctx._dump_info and not compared then
        compared = true
        note, err = same_service(ctx, ctx._dump_info)
        if not note then
          check(report, "the dump is of " .. ctx.svc.cluster, false, err_text(err))
          return nil, err
        end
        check(report, "the dump is of " .. ctx.svc.cluster, true, note)
      end
    end
  end
  return ("%d checks passed"):format(#report.checks)
end

-- The drill's own superuser in the scratch cluster, made before the dump (which cannot know it):
-- the checks read with it whatever passwords the dump set.
local function make_checker(ctx)
  local pg = require "pgr.pg"
  local conn, err = restore.admin(ctx, "postgres")
  if not conn then return nil, err end
  local name = "pgr_drill_" .. random_hex(4)
  local pw = ctx:secret(random_hex(24))
  local ok, e = conn:exec(("CREATE ROLE %s LOGIN SUPERUSER"):format(pg.quote_ident(name)))
  if ok then ok, e = conn:set_password(name, pw) end
  conn:close()
  if not ok then return nil, e end
  ctx._checker = { user = name, password = pw }
  return true
end

local function stream(ctx, report)
  local ok, err = make_checker(ctx)
  if not ok then return nil, err end
  local note, res = restore.stream_dump(ctx)
  if not note then return nil, res end
  if type(res) == "table" then
    report.restore = { statements = res.statements, copy_rows = res.copy_rows, skipped = res.skipped,
                       expected_errors = res.errors and res.errors.count or 0, bytes = res.bytes }
  end
  check(report, "the dump restores with no unexpected error", true,
    report.restore and ("%d statements, %d COPY rows, %d expected errors"):format(report.restore.statements or 0,
      report.restore.copy_rows or 0, report.restore.expected_errors) or note)
  return note
end

local function row_counts(ctx, report)
  local pg = require "pgr.pg"
  local chk = ctx._checker
  local by_db, order = {}, {}
  for _, c in ipairs((ctx._dump_info or {}).copies or {}) do
    if not by_db[c.database] then
      by_db[c.database] = {}
      order[#order + 1] = c.database
    end
    table.insert(by_db[c.database], c)
  end
  local tables, rows, bad = 0, 0, {}
  for _, db in ipairs(order) do
    local conn, err = restore.connect(ctx, { user = chk.user, password = chk.password, dbname = db })
    if not conn then
      bad[#bad + 1] = ("database %s: %s"):format(db, err_text(err))
    else
      for _, c in ipairs(by_db[db]) do
        local parts = qualified_name(c.table)
        if not parts then
          bad[#bad + 1] = ("%s: %s is not a table name pgr can read"):format(db, c.table)
        else
          for i, p in ipairs(parts) do parts[i] = pg.quote_ident(p) end
          local r, qerr = conn:query("SELECT count(*) AS n FROM ONLY " .. table.concat(parts, "."))
          if not r then
            bad[#bad + 1] = ("%s: %s: %s"):format(db, c.table, err_text(qerr))
          else
            local have = math.tointeger(r[1].n)
            if have ~= math.tointeger(c.rows) then
              bad[#bad + 1] = ("%s: %s has %s rows, the dump's COPY has %s"):format(db, c.table, tostring(have),
                tostring(c.rows))
            end
            tables, rows = tables + 1, rows + (have or 0)
          end
        end
      end
      conn:close()
    end
  end
  if #bad > 0 then
    check(report, "every table's row count equals the dump's COPY count", false,
      table.concat(bad, "; ", 1, math.min(#bad, 5)) .. (#bad > 5 and ("; and %d more"):format(#bad - 5) or ""))
  else
    check(report, "every table's row count equals the dump's COPY count", true,
      ("%d tables in %d databases, %d rows"):format(tables, #order, rows))
  end
end

-- A failed login, in a few words (libpq's message repeats itself for each sslmode it tried).
local function login_error(e)
  local t = err_text(e)
  if t:find("password authentication failed", 1, true) then return "password authentication failed" end
  return (t:match("FATAL:%s*([^\n]+)") or t:match("^[^\n]+") or t)
end

local function logins(ctx, live, report)
  local users = live.users
  local bad, good = {}, 0
  local m = ctx._manifest
  if m then
    local base64 = require "pgr.base64"
    for _, user in ipairs(users) do
      local doc = m.by_name[restore.secret_name(live, user)]
      local b64 = field(doc, "data", "password")
      local pw = b64 and base64.decode(b64) or field(doc, "stringData", "password")
      if not pw then
        bad[#bad + 1] = user .. " (no password in the manifest)"
      else
        ctx:secret(pw)
        local conn, err = restore.connect(ctx, { user = user, password = pw, dbname = "postgres" })
        if conn then conn:close() good = good + 1 else bad[#bad + 1] = ("%s (%s)"):format(user, login_error(err)) end
      end
    end
    if #bad > 0 then
      check(report, "each user of the manifest logs in with the manifest's password", false,
        "cannot log in: " .. table.concat(bad, "; "))
    else
      check(report, "each user of the manifest logs in with the manifest's password", true,
        ("%d users: %s"):format(good, table.concat(users, ", ")))
    end
    return
  end
  -- Without a manifest the dump's passwords are unknown: pgr run sets each user's password from the
  -- current secrets, so the drill checks what that needs — the role is there, may log in, and does
  -- once a password is set (a fresh one, not the live secret's).
  local chk = ctx._checker
  local admin, err = restore.connect(ctx, { user = chk.user, password = chk.password, dbname = "postgres" })
  if not admin then
    check(report, "each user logs in", false, err_text(err))
    return
  end
  for _, user in ipairs(users) do
    local rows = admin:query("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", user)
    if not rows or not rows[1] then
      bad[#bad + 1] = user .. " (no such role)"
    elseif not rows[1].rolcanlogin then
      bad[#bad + 1] = user .. " (NOLOGIN)"
    else
      local pw = ctx:secret(random_hex(16))
      local ok, serr = admin:set_password(user, pw)
      local conn, cerr
      if ok then conn, cerr = restore.connect(ctx, { user = user, password = pw, dbname = "postgres" }) end
      if conn then conn:close() good = good + 1 else bad[#bad + 1] = ("%s (%s)"):format(user, login_error(serr or cerr)) end
    end
  end
  admin:close()
  local name = "each user logs in once its password is set (no manifest: the dump's passwords are not checked; "
    .. "pgr run would set them from the current secrets)"
  if #bad > 0 then check(report, name, false, "cannot log in: " .. table.concat(bad, "; "))
  else check(report, name, true, ("%d users: %s"):format(good, table.concat(users, ", "))) end
end

local function verify(ctx, live, report)
  local before = #report.reasons
  row_counts(ctx, report)
  logins(ctx, live, report)
  if #report.reasons > before then
    return nil, errors.new("verify", table.concat(report.reasons, "; ", before + 1))
  end
  return "row counts and logins as the backup says"
end

-- What the report says of the backup.
local function backup_info(ctx)
  local b, info, out = ctx.state.backup, ctx._dump_info, {}
  local taken
  if b then
    out.name, out.layout, out.size = b.name, b.layout, b.size
    out.source = ("s3://%s/%s"):format(b.bucket, b.dump)
    out.manifest = b.manifest and ("s3://%s/%s"):format(b.bucket, b.manifest) or nil
    taken = b.time and require("pgr.lease").parse_time(b.time .. "Z")
  elseif ctx.source.dump then
    local st = sys.stat(ctx.source.dump)
    out.name = ctx.source.dump:match("[^/]+$")
    out.source, out.layout, out.manifest = ctx.source.dump, "file", ctx.source.manifest
    out.size = st and st.size
    taken = st and st.mtime
  end
  if taken then
    out.taken = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(taken))
    out.age_seconds = math.max(0, math.floor(sys.time() - taken))
  end
  if info then out.dumped_from = info.dumped_from end
  return out
end

-- Runs one drill; returns the report (report.exit is the exit code).
function M.run(opts)
  local proc, site = assert(opts.proc, "drill.run{proc=}"), opts.site or require("pgr.site").defaults()
  local live = assert(proc.service, "drill.run: a restore procedure (restore.procedure{...})")
  local t_start = sys.now()
  local report = { service = live.service, namespace = live.namespace, cluster = live.cluster,
                   scratch = M.scratch_name(live.cluster), phases = {}, checks = {}, reasons = {} }
  local function finish(result, code)
    report.result, report.exit, report.seconds = result, code, sys.now() - t_start
    return report
  end
  if #report.scratch > M.MAX_NAME then
    report.reasons[1] = ("the scratch cluster's name %s is longer than the operator's %d characters"):format(
      report.scratch, M.MAX_NAME)
    return finish("refused", 3)
  end

  -- One pgr per cluster in this state directory (the lock), and on the cluster (the lease).
  local state_dir = opts.state_dir or require("pgr.site").state_dir(site)
  local ok, err = sys.mkdir(state_dir .. "/locks")
  if not ok then
    report.reasons[1] = ("cannot use the state directory %s: %s"):format(state_dir, err_text(err))
    return finish("refused", 3)
  end
  local lock_path = runbook.lock_path(state_dir, proc)
  local lock, lerr = sys.lock(lock_path)
  if not lock then
    report.reasons[1] = type(lerr) == "table" and lerr.code == "locked"
      and ("another pgr (pid %s) is working on %s from this state directory (lock %s)"):format(
        lerr.holder ~= "" and lerr.holder or "?", proc.cluster, lock_path) or err_text(lerr)
    return finish("refused", 3)
  end
  local function unlock()
    local f = io.open(lock_path, "w")
    if f then f:close() end
    lock:unlock()
  end

  local ctx = runbook.context(proc, { site = site, source = opts.source or {} })
  local restore_redactor = ui.set_redactor(ctx._redact.apply)
  local function done(result, code)
    ui.set_redactor(restore_redactor)
    if ctx._s3 then ctx._s3:close() end
    if ctx.k8s then ctx.k8s:close() end
    unlock()
    return finish(result, code)
  end
  local sok, serr = proc.setup(ctx)
  if not sok then
    report.reasons[1] = err_text(serr)
    return done("refused", 3)
  end
  local id = ("drill-%s-%s-%d"):format((proc.cluster:gsub("[^%w_.-]", "_")), os.date("!%Y%m%dT%H%M%S"), sys.getpid())
  local held, herr = require("pgr.lease").hold({ site = site, namespace = live.namespace, cluster = live.cluster,
    run = id, lock = lock_path, command = "drill", k8s = ctx.k8s })
  if not held then
    report.reasons[1] = err_text(herr)
    report.holder = type(herr) == "table" and herr.holder or nil
    return done("refused", 3)
  end
  if held.took then ui.warn(("took over the lease of %s from %s: %s"):format(proc.cluster, held.took.identity, held.took.why)) end

  local n = #M.PHASES
  local function phase(i, fn)
    local name = M.PHASES[i]:format(report.scratch)
    ui.step_start(i, n, name)
    local t0 = sys.now()
    local res = table.pack(xpcall(fn, traceback))
    local secs = sys.now() - t0
    local good = res[1] and res[2] ~= false and not (res[2] == nil and res[3] ~= nil)
    local e = (not res[1]) and res[2] or res[3]
    local note = good and type(res[2]) == "string" and res[2] or nil
    report.phases[#report.phases + 1] = { name = SHORT[i], title = name, seconds = secs, ok = good, note = note,
                                          error = not good and (is_interrupt(e) and "interrupted" or err_text(e)) or nil }
    if good then ui.step_done(i, n, name, secs, note)
    else ui.step_failed(i, n, name, secs, is_interrupt(e) and "interrupted" or err_text(e)) end
    return good, e
  end
  -- what a failed phase makes of the drill
  local outcome
  local function failed(e, refused)
    if is_interrupt(e) then
      report.reasons[#report.reasons + 1] = ("interrupted during the %s phase"):format(report.phases[#report.phases].name)
      outcome = { "interrupted", 130 }
      return
    end
    if #report.reasons == 0 or not tostring(report.reasons[#report.reasons]):find(err_text(e), 1, true) then
      report.reasons[#report.reasons + 1] = err_text(e)
    end
    outcome = (refused or env_error(e)) and { "refused", 3 } or { "fail", 1 }
  end

  local good, e = phase(1, function() return checks(ctx, proc, report) end)
  report.backup = backup_info(ctx)
  local cleanup_pending = false
  if not good then failed(e) end
  if not outcome then
    cleanup_pending = true
    good, e = phase(2, function()
      local what, rerr = M.remove_scratch(ctx.k8s, report.scratch)
      if not what then return nil, rerr end
      return what == "nothing" and "none found" or ("removed " .. what)
    end)
    if good then cleanup_pending = false else failed(e, true) end
  end
  if not outcome then
    good, e = phase(3, function() return create_scratch(ctx, report) end)
    if not good then failed(e) end
    if outcome and outcome[2] == 3 then outcome = { "fail", 1 } end -- something was made: a failed drill
  end
  if not outcome then
    ctx.svc = setmetatable({ cluster = report.scratch, scratch = true, hooks = {} }, { __index = live })
    good, e = phase(4, function() return stream(ctx, report) end)
    if not good then failed(e) outcome[2] = outcome[2] == 3 and 1 or outcome[2] end
  end
  if not outcome then
    good, e = phase(5, function() return verify(ctx, live, report) end)
    if not good then failed(e) outcome[2] = outcome[2] == 3 and 1 or outcome[2] end
  end
  ctx.svc = live
  if report.created or cleanup_pending then
    good, e = phase(6, function()
      local what, rerr = M.remove_scratch(ctx.k8s, report.scratch)
      if not what then return nil, rerr end
      return "removed " .. what
    end)
    if not good then
      report.reasons[#report.reasons + 1] = ("the scratch cluster %s/%s may be left behind (the next drill removes "
        .. "it): %s"):format(live.namespace, report.scratch, is_interrupt(e) and "interrupted" or err_text(e))
      if not outcome then outcome = is_interrupt(e) and { "interrupted", 130 } or { "fail", 1 } end
    end
  else
    ui.step_skipped(n, n, M.PHASES[n], "no scratch cluster was made")
  end
  local rok, rerr = held:release()
  if not rok then ui.warn("the lease was not released (it expires by itself): " .. err_text(rerr)) end
  if not outcome then return done("pass", 0) end
  return done(outcome[1], outcome[2])
end

-- Report ---------------------------------------------------------------------------------------------

local function age(s)
  if not s then return "age unknown" end
  if s < 120 then return ("%d s ago"):format(s) end
  if s < 7200 then return ("%d min ago"):format(s // 60) end
  if s < 172800 then return ("%d h ago"):format(s // 3600) end
  return ("%d days ago"):format(s // 86400)
end

-- The report for a person: lines.
function M.describe(r)
  local lines = {}
  local verdict = ({ pass = "PASS", fail = "FAIL", refused = "NOT RUN", interrupted = "INTERRUPTED" })[r.result] or r.result
  lines[#lines + 1] = ("drill of %s (%s/%s): %s in %s"):format(r.service, r.namespace, r.cluster, verdict,
    ui.duration(r.seconds or 0))
  local b = r.backup
  if b and b.name then
    lines[#lines + 1] = ("  backup   %s (%s), %s, taken %s%s"):format(b.name, b.source or "?",
      b.size and ui.bytes(b.size) or "size unknown", age(b.age_seconds),
      b.dumped_from and (", PostgreSQL " .. b.dumped_from:match("^%S+")) or "")
  end
  if #r.phases > 0 then
    local parts = {}
    for _, p in ipairs(r.phases) do
      parts[#parts + 1] = ("%s %s%s"):format(p.name, ui.duration(p.seconds), p.ok and "" or " (failed)")
    end
    lines[#lines + 1] = "  phases   " .. table.concat(parts, ", ")
  end
  for i, c in ipairs(r.checks) do
    lines[#lines + 1] = ("  %s %s %s%s"):format(i == 1 and "checks" or "      ", c.ok and "ok  " or "FAIL", c.name,
      c.detail and (": " .. c.detail) or "")
  end
  for i, why in ipairs(r.reasons) do
    lines[#lines + 1] = ("  %s %s"):format(i == 1 and "because" or "       ", why)
  end
  return lines
end

-- The report as JSON (the --json event).
function M.event(r)
  return { event = "drill_report", service = r.service, namespace = r.namespace, cluster = r.cluster,
           scratch = r.scratch, result = r.result, exit = r.exit, seconds = r.seconds, backup = r.backup or json.null,
           phases = r.phases, checks = r.checks, reasons = r.reasons, restore = r.restore, holder = r.holder }
end

return M
