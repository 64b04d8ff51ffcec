-- pgr.restore: the common "Restore Postgres" procedure of a Zalando cluster as runbook steps,
-- parameterised by a service table; services add or replace steps through hooks, nothing here is theirs.
--
-- restore.procedure(svc) -> a pgr.runbook procedure. svc:
--   service   "spire"                       title  "Restore Postgres for Spire"
--   namespace "spire"                       cluster "spire-postgres" (the postgresql object)
--   client    { kind = "statefulset", name = "spire-server", selector = "app.kubernetes.io/name=spire-server" }
--   users     { "postgres", "service_account", "spire", "standby" }   (their secrets are the credentials)
--   recreate  true (default): delete and re-create the cluster | false: restore into it in place (SLS)
--   restart   "master" (default) | "all": which database pods are restarted after the secrets
--   backup_prefix  S3 key prefix of the backups (default: the cluster name)
--   verbs     extra { verb, resource } pairs the preflight checks with can_i
--   hooks = { preflight = {steps}, before_restore = {steps}, after_restore = {steps}, after = {steps} }
--     before_restore: after the client is scaled to 0 and before the cluster is deleted (or, in place,
--     before the dump); after_restore: after the dump, before the secrets; after: the service's own
--     last steps. A hook step is { name=, run=fn(ctx), destructive=, touches= } or { "name", fn }.
--
-- Helpers for service steps (ctx is the runbook context; ctx.k8s, ctx.svc are set up here):
--   restore.secret_name(svc, user)              "service-account.spire-postgres.credentials"
--   restore.master(ctx) -> pod | nil, err        the pod labelled spilo-role=master
--   restore.connect(ctx, {user=, password=, dbname=}) -> conn | nil, err   to the master pod's IP
--   restore.admin(ctx, dbname) -> conn | nil, err       as postgres, trying every password we know
--   restore.rerun_job(ctx, name, {timeout=})    replace --force a Job and wait for Complete
--   restore.restart_rollout(ctx, kind, name)     rollout restart + rollout status
--   restore.restart_rollouts(ctx, {{kind, name}...})  all restarted first, then each waited for
--   restore.start_rollouts(ctx, list) / restore.wait_rollouts(ctx, list)   the same in two steps, so
--                                                other work runs while they roll out
--   restore.command(ctx, name) -> output | nil, err   a site command (argv, no shell) on this machine
--   restore.site_step(name) -> { uses=, run= }        the same, as a service's step (a hook's second item)
--   restore.on_nodes(ctx, name) -> result | nil, err  a site command on every node of site.nodes
--   restore.dump_copy_value(ctx, table, column) -> value | nil, err   from the backup's COPY block
local errors = require "pgr.errors"
local json = require "pgr.json"
local sys = require "pgr.sys"
local runbook = require "pgr.runbook"
local site_mod = require "pgr.site"

local M = {}

-- Policy a site may tune (seconds).
M.defaults = {
  wait_timeout = 600,       -- pods to go, the cluster to run, the client to be ready
  job_timeout = 300,        -- a loader job to complete (the runbook's 5 minutes)
  command_timeout = 300,
}

-- Which errors of the dump are expected is pgr.restorepolicy's to say (its header explains each
-- class); a service may add rules of its own (svc.expected_errors, { sqlstate=, statement=, why= }).
local function restore_policy(ctx)
  return require("pgr.restorepolicy").new { creates = ctx.state.dump_databases, extra = ctx.svc.expected_errors }
end

local function lazy(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  return nil, errors.new("missing", ("%s is not part of this pgr build"):format(name))
end

local function fail(code, fmt, ...)
  return nil, errors.new(code, fmt:format(...))
end

-- obj.a.b... of decoded JSON, nil where a level is missing or null
local field = require("pgr.k8s").field

local spilo = require("pgr.spilo")

function M.secret_name(svc, user)
  return spilo.secret_name(svc.cluster, user)
end

local function wait_opts(ctx, describe, timeout)
  return { timeout = timeout or M.defaults.wait_timeout, describe = describe }
end

-- Sources ---------------------------------------------------------------------------------------------

-- Where the dump and the manifest come from: ctx.source.dump/manifest (local files) or S3
-- (ctx.state.backup chosen in preflight). Returns {kind="file", path=} or {kind="s3", key=, size=}.
local function dump_ref(ctx)
  if ctx.source.dump then return { kind = "file", path = ctx.source.dump } end
  local b = ctx.state.backup
  if b then return { kind = "s3", bucket = b.bucket, key = b.dump, size = b.size } end
  return nil, errors.new("source", "no backup was chosen (the preflight step records it)")
end

local function s3_client(ctx)
  if ctx._s3 then return ctx._s3 end
  local s3, err = lazy("pgr.s3")
  if not s3 then return nil, err end
  local c, cfg = s3.connect({ site = ctx.site, k8s = ctx.k8s })
  if not c then return nil, cfg end
  ctx._s3, ctx._s3cfg = c, cfg
  return c
end

-- A whole (small) object as a string: the manifest.
local function s3_string(ctx, bucket, key)
  local c, err = s3_client(ctx)
  if not c then return nil, err end
  local r
  r, err = c:open(bucket, key)
  if not r then return nil, err end
  local parts = {}
  while true do
    local chunk, rerr = r:read(65536)
    if not chunk then
      r:close()
      if rerr then return nil, rerr end
      break
    end
    parts[#parts + 1] = chunk
  end
  return table.concat(parts)
end

-- A source pg.restore and pg.inspect accept: a path, or a reader with :read(n).
local function open_dump(ctx)
  local ref, err = dump_ref(ctx)
  if not ref then return nil, err end
  if ref.kind == "file" then
    local st = sys.stat(ref.path)
    return ref.path, st and st.size or nil, ref.path
  end
  local c
  c, err = s3_client(ctx)
  if not c then return nil, err end
  local reader
  local cfg = ctx._s3cfg or {}
  reader, err = c:open(ref.bucket, ref.key, { resumes = cfg.resumes, readahead = cfg.readahead })
  if not reader then return nil, err end
  return reader, ref.size or reader.size, ("s3://%s/%s"):format(ref.bucket, ref.key)
end

local function read_manifest(ctx)
  if ctx.saved["manifest.yaml"] then return ctx.saved["manifest.yaml"] end
  if ctx.source.manifest then
    local f, err = io.open(ctx.source.manifest, "rb")
    if not f then return fail("manifest", "cannot read the manifest: %s", err) end
    local s = f:read("a")
    f:close()
    return s
  end
  local b = ctx.state.backup
  if b and b.manifest then
    return s3_string(ctx, b.bucket, b.manifest)
  end
  return nil
end

-- The manifest's documents, checked: Secrets of this namespace, holding every user's secret.
local function parse_manifest(svc, text)
  local yaml, err = lazy("pgr.yaml")
  if not yaml then return nil, err end
  local docs
  docs, err = yaml.decode(text)
  if not docs then return fail("manifest", "the manifest does not parse: %s", tostring(err)) end
  local by_name, list = {}, {}
  local function add(doc)
    if doc == nil or doc == json.null then return true end
    if doc.kind == "List" and doc.items then
      for _, d in ipairs(doc.items) do add(d) end
      return true
    end
    if doc.kind ~= "Secret" then
      return fail("manifest", "the manifest holds a %s; only Secrets are expected", tostring(doc.kind))
    end
    local ns = field(doc, "metadata", "namespace")
    local name = field(doc, "metadata", "name")
    -- each name reaches an API path (the secret is deleted, then applied): a name the API would
    -- refuse ('..', '.', a '/') must never get that far
    local k8s = require "pgr.k8s"
    local good, why = k8s.valid_dns_subdomain(name)
    if not good then
      return fail("manifest", "the manifest's secret #%d has the name %s, which is not a valid Secret name (%s): "
        .. "is the manifest corrupt or tampered with?", #list + 1, type(name) == "string" and ("%q"):format(name)
        or tostring(name), why)
    end
    if ns then
      good, why = k8s.valid_dns_label(ns)
      if not good then
        return fail("manifest", "the manifest's secret %s has the namespace %q, which is not a valid namespace (%s)",
          name, tostring(ns), why)
      end
    end
    if ns and ns ~= svc.namespace then
      return fail("manifest", "the manifest's secret %s is in namespace %s, not %s: is it another service's?",
        tostring(name), ns, svc.namespace)
    end
    by_name[name] = doc
    list[#list + 1] = doc
    return true
  end
  for _, doc in ipairs(docs) do
    local ok, e = add(doc)
    if not ok then return nil, e end
  end
  local missing = {}
  for _, user in ipairs(svc.users) do
    local name = M.secret_name(svc, user)
    if not by_name[name] then missing[#missing + 1] = name end
  end
  if #missing > 0 then
    return fail("manifest", "the manifest does not hold the credentials of %s/%s: missing %s (is it the "
      .. "manifest of another cluster?)", svc.namespace, svc.cluster, table.concat(missing, ", "))
  end
  return { by_name = by_name, list = list }
end

local function manifest_password(ctx, user)
  local m = ctx._manifest
  if not m then return nil end
  local doc = m.by_name[M.secret_name(ctx.svc, user)]
  local b64 = field(doc, "data", "password")
  if not b64 then return field(doc, "stringData", "password") end
  local base64 = lazy("pgr.base64")
  return base64 and base64.decode(b64) or nil
end

-- PostgreSQL ------------------------------------------------------------------------------------------

function M.master(ctx)
  local pods, err = ctx.k8s:list("pods", { labels = spilo.selector(ctx.svc.cluster, "master") })
  if not pods then return nil, err end
  for _, p in ipairs(pods) do
    if field(p, "status", "podIP") and not field(p, "metadata", "deletionTimestamp") then return p end
  end
  return fail("no_master", "no running master pod of %s/%s (kubectl get pods -n %s -l %s)", ctx.svc.namespace,
    ctx.svc.cluster, ctx.svc.namespace, spilo.selector(ctx.svc.cluster, "master"))
end

-- Whether the cluster keeps SCRAM verifiers, as its postgresql object says (password_encryption, else
-- PostgreSQL 14+): only then can a login use channel binding. Unknown is taken as SCRAM.
local function uses_scram(ctx)
  if ctx._pg_scram == nil then
    local obj = ctx.saved and ctx.saved["postgresql.json"]
    if not obj and ctx.k8s and ctx.svc.cluster then obj = ctx.k8s:get("postgresql", ctx.svc.cluster) end
    local pe = field(obj, "spec", "postgresql", "parameters", "password_encryption")
    local v = tonumber(field(obj, "spec", "postgresql", "version"))
    if pe then ctx._pg_scram = pe == "scram-sha-256"
    elseif v then ctx._pg_scram = v >= 14
    else ctx._pg_scram = true end
  end
  return ctx._pg_scram
end

-- TLS as the site asks (pgr.security.pg_tls: require, with channel binding, unless it says more or less)
local function conn_params(ctx, pod, opts)
  local tls = require("pgr.security").pg_tls(ctx.site, ctx.svc, uses_scram(ctx))
  return {
    host = field(pod, "status", "podIP"), port = tostring(ctx.svc.port or 5432),
    user = opts.user or "postgres", password = opts.password, dbname = opts.dbname or "postgres",
    connect_timeout = "10", sslmode = tls.sslmode, channel_binding = tls.channel_binding,
    sslrootcert = tls.sslrootcert, application_name = "pgr",
  }
end
M.conn_params = conn_params

function M.connect(ctx, opts)
  local pg, err = lazy("pgr.pg")
  if not pg then return nil, err end
  local pod
  pod, err = M.master(ctx)
  if not pod then return nil, err end
  local conn
  conn, err = pg.connect(conn_params(ctx, pod, opts))
  if not conn then return nil, require("pgr.security").pg_hint(err) end
  return conn
end

local function current_password(ctx, user)
  local s, err = ctx.k8s:secret(M.secret_name(ctx.svc, user))
  if not s then return nil, err end
  return ctx:secret(s.password), s.username
end

-- As postgres: the current secret's password, then the manifest's, then the one saved before
-- the run (after a partial restore the role may carry the dump's password).
function M.admin(ctx, dbname)
  local tried, last = {}, nil
  local candidates = {}
  local cur = current_password(ctx, "postgres")
  if cur then candidates[#candidates + 1] = cur end
  local mp = manifest_password(ctx, "postgres")
  if mp then candidates[#candidates + 1] = ctx:secret(mp) end
  local saved = ctx.saved["secrets.json"]
  local sp = saved and saved[M.secret_name(ctx.svc, "postgres")]
  if sp and sp.password then candidates[#candidates + 1] = ctx:secret(sp.password) end
  for _, pw in ipairs(candidates) do
    if not tried[pw] then
      tried[pw] = true
      local c, err = M.connect(ctx, { user = "postgres", password = pw, dbname = dbname })
      if c then return c end
      last = err
      if not (type(err) == "table" and (err.sqlstate == "28P01" or tostring(err):find("password", 1, true))) then
        return nil, err
      end
    end
  end
  return nil, last or errors.new("auth", "no password for postgres")
end

-- Kubernetes helpers ------------------------------------------------------------------------------------

function M.rerun_job(ctx, name, opts)
  opts = opts or {}
  -- replace --force deletes the job before it creates it again: a run killed in between finds no
  -- job on --resume, so its spec is saved first and a resumed step re-creates it from that copy
  local key = ("job-%s.json"):format(name)
  local job = ctx.saved[key]
  if not job then
    local err
    job, err = ctx.k8s:get("job", name)
    if not job then return nil, err end
    ctx:save(key, job)
  end
  return ctx:write(("re-run job %s/%s (replace --force)"):format(ctx.svc.namespace, name), function()
    local created, cerr = ctx.k8s:replace_force(job, { timeout = opts.timeout or M.defaults.job_timeout })
    if not created then return nil, cerr end
    local uid = field(created, "metadata", "uid")
    return ctx.k8s:wait_for("job", name, function(o)
      if not o or field(o, "metadata", "uid") ~= uid then return false, "not created yet" end
      for _, c in ipairs(field(o, "status", "conditions") or {}) do
        if c.type == "Complete" and c.status == "True" then return true end
        if c.type == "Failed" and c.status == "True" then
          return nil, errors.new("job", ("job %s failed: %s"):format(name, tostring(c.message or c.reason)))
        end
      end
      return false, "running"
    end, wait_opts(ctx, "job " .. name .. " to complete", opts.timeout or M.defaults.job_timeout))
  end)
end

-- Restarts several workloads (kubectl rollout restart) without waiting: a later step can run while
-- they roll out, and M.wait_rollouts waits for them. list: { { "daemonset", "spire-agent" }, ... }
function M.start_rollouts(ctx, list)
  for _, w in ipairs(list) do
    local ok, err = ctx:write(("rollout restart %s %s/%s"):format(w[1], ctx.svc.namespace, w[2]), function()
      return ctx.k8s:rollout_restart(w[1], w[2])
    end)
    if not ok then return nil, err end
  end
  return true
end

-- Waits for each rollout of list to complete (kubectl rollout status); one already done returns at once.
function M.wait_rollouts(ctx, list)
  for _, w in ipairs(list) do
    local ok, err = ctx:wait("for the rollout of " .. w[1] .. " " .. w[2], function()
      return ctx.k8s:rollout_status(w[1], w[2], { timeout = M.defaults.wait_timeout })
    end)
    if not ok then return nil, err end
  end
  return true
end

-- Restarts several workloads at once, then waits for each rollout: they roll out side by side.
function M.restart_rollouts(ctx, list)
  local ok, err = M.start_rollouts(ctx, list)
  if not ok then return nil, err end
  return M.wait_rollouts(ctx, list)
end

function M.restart_rollout(ctx, kind, name)
  local ok, err = ctx:write(("rollout restart %s %s/%s"):format(kind, ctx.svc.namespace, name), function()
    return ctx.k8s:rollout_restart(kind, name)
  end)
  if not ok then return nil, err end
  return ctx:wait("for the rollout of " .. kind .. " " .. name, function()
    return ctx.k8s:rollout_status(kind, name, { timeout = M.defaults.wait_timeout })
  end)
end

-- Commands --------------------------------------------------------------------------------------------

-- How long a site command may run on this machine before it is killed (seconds).
M.COMMAND_TIMEOUT = 600

-- Runs a site command on this machine as an argv — spawned directly, no shell in between — with a
-- bound on its time. Returns output, note (note: "skipped ..." when the site disables the command)
-- | nil, err (err.output, err.exit).
function M.command(ctx, name)
  local argv, err = site_mod.command(ctx.site, name)
  if err then return nil, err end
  if not argv then return "", "skipped (the site's commands." .. name .. " is false)" end
  if ctx.dry_run then
    ctx:write("run " .. table.concat(argv, " "))
    return "", "would run"
  end
  local core, lerr = lazy("pgr.fanout.core")
  if not core then return nil, lerr end
  ctx:log("run: " .. table.concat(argv, " "))
  local run <close> = core.new { fanout = 1, timeout = M.COMMAND_TIMEOUT,
    env_drop = require("pgr.security").CHILD_ENV_DROP }
  run:add(argv)
  while run:step(1) > 0 do require("pgr.heartbeat").beat() end
  local r = run:result(1)
  local out = (r.stdout or "") .. (r.stderr or "")
  if r.outcome == "spawn_failed" then
    return nil, errors.new("command", ("cannot run %s (commands.%s in the site file): %s")
      :format(argv[1], name, tostring(r.spawn_error)))
  end
  if r.outcome == "timed_out" then
    return nil, errors.new("command", ("%s (commands.%s) did not finish within %g s and was killed")
      :format(argv[1], name, M.COMMAND_TIMEOUT), { output = out })
  end
  if r.exit ~= 0 then
    local how = r.signal and ("was killed by signal " .. tostring(r.signal)) or ("exited " .. tostring(r.exit))
    return nil, errors.new("command", ("%s %s: %s"):format(argv[1], how, out:gsub("%s+$", ""):sub(-400)),
      { output = out, exit = r.exit })
  end
  return r.stdout or ""
end

-- A step function running site command NAME on this machine; its note is the command's own
-- ("skipped ..." when the site disables it) or "done". For a service's last steps.
function M.site_step(name)
  -- `uses` lets the preflight check that the site provides the command before anything changes
  return { uses = { name }, run = function(ctx)
    local out, note = M.command(ctx, name)
    if not out then return nil, note end
    return note or "done"
  end }
end

-- Returns result, summary ("3 ok") | true, "skipped ..." | nil, err.
function M.on_nodes(ctx, name)
  local argv, err = site_mod.command(ctx.site, name)
  if err then return nil, err end
  if not argv then return true, "skipped (the site's commands." .. name .. " is false)" end
  if not ctx.site.nodes then
    return nil, errors.new("site", "the site file has no nodes: set nodes = \"ncn-m00[1-3],...\" (etc/site.example.lua)")
  end
  local fanout
  fanout, err = lazy("pgr.fanout")
  if not fanout then return nil, err end
  return ctx:write(("run %s on %s"):format(table.concat(argv, " "), ctx.site.nodes), function()
    local ssh = ctx.site.ssh or {}
    local res, ferr = fanout.run({ hosts = ctx.site.nodes, argv = argv, user = ssh.user, port = ssh.port,
      identity = ssh.identity, ssh = ssh.program, ssh_options = ssh.options, fanout = ssh.fanout,
      timeout = ssh.timeout })
    if not res then return nil, ferr end
    if res.failed > 0 then
      return nil, errors.new("fanout", fanout.summary(res), { result = res })
    end
    return res, fanout.summary(res)
  end)
end

-- Runs SQL on the master as postgres in `dbname` (a change: a dry run only prints it).
function M.sql(ctx, dbname, sql)
  return ctx:write(("run on %s/%s: %s"):format(ctx.svc.cluster, dbname, sql), function()
    local conn, err = M.admin(ctx, dbname)
    if not conn then return nil, err end
    local ok, e = conn:exec(sql)
    conn:close()
    if not ok then return nil, e end
    return true
  end)
end

-- Stops connections to the databases and drops them (SLS's in-place restore).
function M.drop_databases(ctx, names)
  local pg, err = lazy("pgr.pg")
  if not pg then return nil, err end
  return ctx:write(("drop databases %s of %s"):format(table.concat(names, ", "), ctx.svc.cluster), function()
    local conn, cerr = M.admin(ctx, "postgres")
    if not conn then return nil, cerr end
    for _, db in ipairs(names) do
      local q = pg.quote_ident(db)
      for _, sql in ipairs({
        ("REVOKE CONNECT ON DATABASE %s FROM public"):format(q),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()")
          :format(pg.quote_literal(db)),
        ("DROP DATABASE IF EXISTS %s"):format(q),
      }) do
        local ok, e = conn:exec(sql)
        -- a database already dropped by an interrupted earlier attempt cannot be revoked from
        if not ok and not (type(e) == "table" and e.sqlstate == "3D000") then conn:close() return nil, e end
      end
    end
    conn:close()
    return true
  end)
end

-- Compares the deployed schema version (opts.query in opts.database as opts.user) with the value
-- in the dump's COPY block (opts.table, opts.column).
function M.schema_check(ctx, opts)
  local want, err = M.dump_copy_value(ctx, opts.table, opts.column)
  if want == nil then return nil, err end
  local pw
  pw, err = current_password(ctx, opts.user)
  if not pw then return nil, err end
  local conn
  conn, err = M.connect(ctx, { user = opts.user, password = pw, dbname = opts.database })
  if not conn then return nil, err end
  local rows, qerr = conn:query(opts.query)
  conn:close()
  if not rows then return nil, qerr end
  local row = rows[1]
  local have = row and select(2, next(row))
  if tostring(have) ~= tostring(want) then
    return fail("schema", "the backup's %s.%s is %s but the deployed service is at %s: this backup does not fit "
      .. "the deployed %s; restore a backup taken with this version", opts.table, opts.column, tostring(want),
      tostring(have), ctx.svc.service)
  end
  return ("schema version %s"):format(tostring(have))
end

-- Every container of every pod matching selector is ready (Keycloak's check).
function M.containers_ready(ctx, selector)
  return ctx:wait("for every container of the pods " .. selector .. " to be ready", function()
    return ctx.k8s:wait_for("pods", selector, function(list)
      if #list == 0 then return false, "no pods" end
      local waiting = 0
      for _, p in ipairs(list) do
        local statuses = field(p, "status", "containerStatuses") or {}
        local n = #(field(p, "spec", "containers") or {})
        local ready = 0
        for _, c in ipairs(statuses) do if c.ready then ready = ready + 1 end end
        if ready < math.max(n, 1) or field(p, "metadata", "deletionTimestamp") then waiting = waiting + 1 end
      end
      if waiting == 0 then return true end
      return false, ("%d pods not ready"):format(waiting)
    end, wait_opts(ctx, "every container of " .. selector .. " to be ready"))
  end)
end

-- Obtains a token from the site's Keycloak token endpoint: credentials from the site's
-- credentials_file (two lines: user, password) or asked on the terminal; never shown.
function M.keycloak_token(ctx)
  local kc = ctx.site.keycloak or {}
  if not kc.token_url then return "skipped (the site has no keycloak.token_url)" end
  if ctx.dry_run then
    ctx:write("POST a password grant to " .. kc.token_url)
    return true
  end
  -- said before the password is asked for
  require("pgr.security").check_endpoint(kc.token_url, "the Keycloak token endpoint", { insecure = kc.insecure,
    where = "keycloak.insecure in the site file", secret = "the Keycloak password" })
  local user, password
  if kc.credentials_file then
    local good, serr = require("pgr.security").secret_file(kc.credentials_file, "keycloak.credentials_file")
    if not good then return nil, serr end
    local f, err = io.open(kc.credentials_file, "r")
    if not f then return fail("keycloak", "cannot read keycloak.credentials_file: %s", tostring(err)) end
    user, password = f:read("l"), f:read("l")
    f:close()
  else
    if not sys.isatty("stdin") then
      return fail("keycloak", "no keycloak.credentials_file in the site file and no terminal to ask on")
    end
    io.stderr:write("Keycloak user: ")
    user = io.stdin:read("l")
    password = sys.read_password("Keycloak password: ")
  end
  if not user or not password then return fail("keycloak", "no Keycloak credentials") end
  ctx:secret(password)
  local http, err = lazy("pgr.http")
  if not http then return nil, err end
  local function form(v) return (v:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)) end
  local res
  res, err = http.request({ method = "POST", url = kc.token_url, timeout = 30, insecure = kc.insecure,
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
    body = ("grant_type=password&client_id=%s&username=%s&password=%s"):format(form(kc.client_id or "shasta"),
      form(user), form(password)) })
  if not res then return nil, err end
  local body = res.status == 200 and json.decode(res.body or "")
  if type(body) ~= "table" or type(body.access_token) ~= "string" then
    return fail("keycloak", "the token endpoint answered %s without an access_token", tostring(res.status))
  end
  ctx:secret(body.access_token)
  return "a token was obtained for " .. user
end

-- The column names of the dump's `COPY table (a, b, c) FROM stdin;` header: read from the source
-- until the header is found (pg.inspect gives the first row, not the columns).
local function copy_columns(ctx, table_name)
  local src, err = open_dump(ctx)
  if not src then return nil, err end
  local f, close
  if type(src) == "string" then
    f, err = io.open(src, "rb")
    if not f then return nil, errors.new("io", tostring(err)) end
    close = function() f:close() end
  else
    f, close = src, function() if src.close then src:close() end end
  end
  local head = "\nCOPY " .. table_name .. " ("
  local buf = "\n"
  while true do
    local chunk = f:read(65536)
    if not chunk then break end
    buf = buf .. chunk
    local a = buf:find(head, 1, true)
    if a then
      local b = buf:find(") FROM stdin;", a, true)
      if b then
        close()
        local cols = {}
        for c in buf:sub(a + #head, b - 1):gmatch("[^,%s]+") do cols[#cols + 1] = (c:gsub('^"(.*)"$', "%1")) end
        return cols
      end
    else
      buf = buf:sub(-(#head + 4096))
    end
  end
  close()
  return fail("schema", "the dump has no COPY %s", table_name)
end

-- The value of column `column` in the first row of the dump's COPY block of `table` (e.g.
-- public.system / schema_version), for the schema-version checks.
function M.dump_copy_value(ctx, table_name, column)
  local pg, err = lazy("pgr.pg")
  if not pg then return nil, err end
  local src
  src, err = open_dump(ctx)
  if not src then return nil, err end
  local info
  info, err = pg.inspect(src)
  if type(src) ~= "string" and src.close then src:close() end
  if not info then return nil, err end
  local block
  for _, c in ipairs(info.copies or {}) do
    if c.table == table_name then block = c break end
  end
  if not block or not block.first_row then
    return fail("schema", "the dump has no COPY data for %s", table_name)
  end
  local cols
  cols, err = copy_columns(ctx, table_name)
  if not cols then return nil, err end
  local values = {}
  for v in (block.first_row .. "\t"):gmatch("([^\t]*)\t") do values[#values + 1] = v end
  for i, c in ipairs(cols) do
    if c == column then
      if values[i] == "\\N" then return fail("schema", "%s.%s is NULL in the dump", table_name, column) end
      return values[i]
    end
  end
  return fail("schema", "the dump's COPY %s has no column %s", table_name, column)
end

-- The way back -----------------------------------------------------------------------------------------

-- Where the safety backup goes: the site's safety_backup ("s3" or a directory); by default S3 when
-- the site reaches it, else the state directory's backups/.
local function safety_destination(ctx)
  local sb = ctx.site and ctx.site.safety_backup
  if sb == "s3" or (type(sb) == "string" and sb:match("^/")) then return sb end
  local c = s3_client(ctx)
  if c then return "s3" end
  return site_mod.state_dir(ctx.site) .. "/backups"
end

-- Before anything changes, the live cluster is backed up where no retention reaches (pgr backup's
-- pg_dumpall -c + manifest), and the run remembers how to return to it (state way_back; the runbook
-- prints it at the end and with any failure). A cluster whose master does not answer cannot be
-- backed up: the run stops there, changing nothing, unless told to go on without a way back.
local function safety_backup(ctx)
  local svc = ctx.svc
  local kept = ctx.state.safety_backup
  if kept then return ("kept from run %s: %s"):format(tostring(kept.run or "?"), kept.url) end
  local off = ctx.options.no_safety_backup and "--no-safety-backup"
    or (ctx.site and ctx.site.safety_backup == false and "safety_backup = false in the site file")
  if off then
    require("pgr.ui").warn(("no safety backup (%s): if this restore goes wrong, there is no way back to the "
      .. "data %s/%s holds now"):format(off, svc.namespace, svc.cluster))
    ctx:_journal({ event = "safety_backup", step = ctx.step, skipped = off })
    return "skipped (" .. off .. ")"
  end
  local to = safety_destination(ctx)
  local where = to == "s3" and ("s3://%s/%s%s-*"):format(ctx._s3cfg and ctx._s3cfg.bucket or "postgres-backup",
    require("pgr.s3").PGR_PREFIX, svc.cluster) or (to .. "/" .. svc.cluster .. "-*")
  if ctx.dry_run then
    -- a read: the master answers and can dump (pg_dumpall --version would not ask the server)
    local pod, err = M.master(ctx)
    if not pod then return nil, err end
    local r, xerr = ctx.k8s:exec(pod, { "psql", "-U", "postgres", "-Atc", "select 1" },
      { container = require("pgr.backup").defaults.container, timeout = 60 })
    if not r then return nil, xerr end
    if r.code ~= 0 then return fail("safety_backup", "the master %s does not answer: %s", pod.metadata.name, r.stderr) end
    require("pgr.ui").line(("        would back up %s/%s to %s"):format(svc.namespace, svc.cluster, where))
    return "the master answers"
  end
  -- an upload a killed attempt left unfinished is aborted first: its parts are no backup
  local left = ctx.state.safety_upload
  if left and left.id then
    local c = s3_client(ctx)
    if c then c:abort_upload(left.bucket, left.key, left.id) end
    ctx:set("safety_upload", nil)
  end
  local res, err = require("pgr.backup").take {
    svc = svc, to = to, site = ctx.site, k8s = ctx.k8s, s3 = to == "s3" and s3_client(ctx) or nil,
    bucket = to == "s3" and ctx._s3cfg.bucket or nil,
    on_upload = function(id, key) ctx:set("safety_upload", { bucket = ctx._s3cfg.bucket, key = key, id = id }) end,
  }
  if not res then
    return fail("safety_backup", "cannot back up %s/%s before changing it: %s. Nothing has been changed. If its "
      .. "database is broken beyond dumping, run again with --no-safety-backup (or safety_backup = false in the "
      .. "site file): the restore then has no way back", svc.namespace, svc.cluster, tostring(err))
  end
  ctx:set("safety_upload", nil)
  ctx:set("safety_backup", { name = res.name, url = res.url, size = res.size,
                             run = ctx.run_dir and ctx.run_dir:match("[^/]+$") })
  ctx:set("way_back", res.restore_args)
  ctx:_journal({ event = "safety_backup", step = ctx.step, name = res.name, url = res.url, size = res.size,
                 seconds = res.seconds })
  return ("%s (%s)"):format(res.url, require("pgr.ui").bytes(res.size))
end

-- The common steps -----------------------------------------------------------------------------------

local function hook_steps(list)
  local out = {}
  for _, h in ipairs(list or {}) do
    if h.name then
      out[#out + 1] = h
    else
      -- { "name", fn | restore.site_step(...), destructive=, touches=, uses = { command, ... }, on_nodes= }
      local run, uses = h[2], h.uses
      if type(run) == "table" then run, uses = run.run, run.uses end
      out[#out + 1] = { name = h[1], run = run, destructive = h.destructive, touches = h.touches,
                        uses = uses, on_nodes = h.on_nodes }
    end
  end
  return out
end

-- The site commands the service's steps run: { { name = "spire_fix_storage", on_nodes = bool }, ... }
local function site_commands(svc)
  local list = {}
  for _, key in ipairs { "preflight", "before_restore", "after_restore", "after" } do
    for _, s in ipairs(hook_steps(svc.hooks and svc.hooks[key])) do
      for _, name in ipairs(s.uses or {}) do list[#list + 1] = { name = name, on_nodes = s.on_nodes } end
    end
  end
  return list
end

-- Whether program (a path, or a name looked up in PATH) is an executable file here.
local function program_found(program)
  local function exe(path)
    local st = sys.stat(path)
    return st and st.type == "file" and st.mode & 73 ~= 0 -- any x bit (0111)
  end
  if program:find("/", 1, true) then return exe(program) end
  for dir in (os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"):gmatch("[^:]+") do
    if exe(dir .. "/" .. program) then return true end
  end
  return false
end

local function verbs_needed(svc)
  local client = svc.client.kind
  local list = {
    { "get", "postgresqls" }, { "patch", "postgresqls" },
    { "list", "pods" }, { "watch", "pods" }, { "delete", "pods" },
    { "get", "secrets" }, { "delete", "secrets" }, { "create", "secrets" },
    { "get", client }, { "patch", client .. "/scale" },
    -- the cluster-side lock (pgr.lease)
    { "get", "leases" }, { "create", "leases" }, { "update", "leases" },
  }
  if svc.recreate ~= false then
    list[#list + 1] = { "delete", "postgresqls" }
    list[#list + 1] = { "create", "postgresqls" }
  end
  for _, v in ipairs(svc.verbs or {}) do list[#list + 1] = v end
  return list
end

local function preflight_steps(svc)
  local steps = {}
  steps[#steps + 1] = {
    name = "Check the Kubernetes API is reachable and allows every verb the procedure needs",
    preflight = true,
    touches = ("reads: SelfSubjectAccessReviews in %s"):format(svc.namespace),
    run = function(ctx)
      local denied = {}
      for _, v in ipairs(verbs_needed(svc)) do
        local allowed, err = ctx.k8s:can_i(v[1], v[2], svc.namespace)
        if allowed == nil then return nil, err end
        if not allowed then denied[#denied + 1] = v[1] .. " " .. v[2] end
      end
      if #denied > 0 then
        return fail("forbidden", "not allowed in namespace %s: %s (kubectl auth can-i ... -n %s)", svc.namespace,
          table.concat(denied, ", "), svc.namespace)
      end
      return ("%d verbs allowed"):format(#verbs_needed(svc))
    end,
  }
  steps[#steps + 1] = {
    name = "Find the backup and check it is complete",
    preflight = true,
    drill = true, -- pgr drill runs this check too (the checks that only read)
    touches = ("reads: the dump (--dump, or s3://%s/%s-*.psql)"):format("postgres-backup", svc.backup_prefix or svc.cluster),
    run = function(ctx)
      if not ctx.source.dump then
        local c, err = s3_client(ctx)
        if not c then return nil, err end
        local bucket = ctx._s3cfg.bucket
        local want = ctx.source.backup and ctx.source.backup:gsub("%.psql$", ""):gsub("%.manifest$", "")
          :gsub("%.sql%.gz$", "")
        local s3mod = require "pgr.s3"
        local list
        -- pgr's own backups (pgr/<cluster>-...) only when one is named: never chosen by default
        list, err = s3mod.list_backups(c, bucket, svc.backup_prefix or svc.cluster,
          { pgr = want ~= nil and want:sub(1, #s3mod.PGR_PREFIX) == s3mod.PGR_PREFIX })
        if not list then return nil, err end
        local chosen
        for _, b in ipairs(list) do
          -- the newest complete pair; a named backup is taken even without its manifest
          if (want == nil and b.complete) or (want and b.name == want) then chosen = b break end
        end
        if not chosen then
          return fail("backup", "no %s of %s in s3://%s (pgr backups %s lists them)",
            want and ("backup named " .. want) or "complete backup (.psql + .manifest, or the operator's "
              .. "logical backup)", svc.cluster, bucket, svc.cluster)
        end
        if not chosen.psql then return fail("backup", "backup %s has no .psql dump", chosen.name) end
        ctx:set("backup", { bucket = bucket, name = chosen.name, layout = chosen.layout, dump = chosen.psql.key,
                            manifest = chosen.manifest and chosen.manifest.key, size = chosen.size, time = chosen.time })
      end
      local pg, err = lazy("pgr.pg")
      if not pg then return nil, err end
      local src, size, label = open_dump(ctx)
      if not src then return nil, size end
      local info
      info, err = pg.inspect(src)
      if type(src) ~= "string" and src.close then src:close() end
      if not info then return nil, err end
      ctx._dump_info = info -- for pgr drill's row counts (not persisted)
      if info.format ~= "pg_dumpall" then
        return fail("backup", "%s is a %s script, not pg_dumpall's: the runbook restores a whole cluster's dump",
          label, tostring(info.format))
      end
      if not info.trailer then
        return fail("backup", "%s is truncated: pg_dumpall's completion trailer is missing (a backup job that "
          .. "failed half-way leaves such a dump; choose another: pgr backups %s)", label, svc.service)
      end
      local policy = require "pgr.restorepolicy"
      local drops_ok, why = policy.check_drops(info)
      if not drops_ok then return fail("backup", "%s: %s", label, why) end
      ctx:set("dump_databases", info.databases or {})
      ctx:set("dump_connects", info.connects or {})
      ctx:set("dump_header", { clean = info.clean, dumped_from = info.dumped_from, dumped_by = info.dumped_by })
      return ("%s, %s, %s"):format(label, size and require("pgr.ui").bytes(size) or "size unknown",
        policy.dump_label(info))
    end,
  }
  steps[#steps + 1] = {
    name = "Check the manifest holds the cluster's credential secrets",
    preflight = true,
    drill = true,
    touches = "reads: the manifest (--manifest, or the backup's .manifest)",
    run = function(ctx)
      local text, err = read_manifest(ctx)
      if not text then
        if err then return nil, err end
        return "no manifest: the passwords will be set from the current secrets"
      end
      local m
      m, err = parse_manifest(svc, text)
      if not m then return nil, err end
      ctx._manifest = m
      for _, doc in ipairs(m.list) do
        local pw = field(doc, "data", "password")
        if pw then ctx:secret(pw) end
      end
      ctx:save("manifest.yaml", text)
      ctx:set("manifest", true)
      return ("%d secrets"):format(#m.list)
    end,
  }
  steps[#steps + 1] = {
    name = ("Check the postgresql %s and the %s %s exist"):format(svc.cluster, svc.client.kind, svc.client.name),
    preflight = true,
    drill = true,
    touches = ("reads: postgresql %s/%s, %s %s"):format(svc.namespace, svc.cluster, svc.client.kind, svc.client.name),
    run = function(ctx)
      local pgo, err = ctx.k8s:get("postgresql", svc.cluster)
      -- gone is fine only when a run that deleted it left its copy to this one (pgr run --new)
      local recreatable = svc.recreate ~= false and ctx.saved["postgresql.json"]
      if not pgo and not (recreatable and require("pgr.k8s").is_not_found(err)) then return nil, err end
      local cl
      cl, err = ctx.k8s:get(svc.client.kind, svc.client.name)
      if not cl then return nil, err end
      -- the dump must not come from a newer PostgreSQL than the cluster it is restored into
      local version = field(pgo or ctx.saved["postgresql.json"], "spec", "postgresql", "version")
      local fits, why = require("pgr.restorepolicy").check_version(ctx.state.dump_header or {}, version)
      if not fits then return fail("version", "%s/%s: %s", svc.namespace, svc.cluster, why) end
      if not pgo then return ("%s is gone: it is created again from the copy saved by an earlier run"):format(svc.cluster) end
      return ("%s is %s, PostgreSQL %s"):format(svc.cluster, tostring(field(pgo, "status", "PostgresClusterStatus")),
        tostring(version or "of unknown version"))
    end,
  }
  if svc.recreate ~= false then
    steps[#steps + 1] = {
      name = "Check the operator deletes a deleted cluster's volumes (enable_persistent_volume_claim_deletion)",
      preflight = true,
      touches = "reads: the operator's OperatorConfiguration or ConfigMap postgres-operator",
      run = function(ctx) return require("pgr.cluster_check").pvc_deletion(ctx) end,
    }
  end
  local commands = site_commands(svc)
  if #commands > 0 then
    steps[#steps + 1] = {
      name = "Check the site file provides the commands and nodes the last steps run",
      preflight = true,
      touches = "reads: the site file, the programs it names",
      run = function(ctx)
        local problems, ran = {}, 0
        for _, c in ipairs(commands) do
          local argv, err = site_mod.command(ctx.site, c.name)
          if err then
            problems[#problems + 1] = tostring(err.message or err)
          elseif argv then
            ran = ran + 1
            if c.on_nodes then
              if not ctx.site.nodes then
                problems[#problems + 1] = ("commands.%s runs on the site's nodes, and the site file has no nodes "
                  .. "(nodes = \"ncn-m00[1-3],...\", or commands.%s = false to skip it)"):format(c.name, c.name)
              end
              local ssh = (ctx.site.ssh or {}).program or "ssh"
              if not program_found(ssh) then
                problems[#problems + 1] = ("%s (ssh.program, for commands.%s) is not found"):format(ssh, c.name)
              end
            elseif not program_found(argv[1]) then
              problems[#problems + 1] = ("%s (commands.%s) is not found or not executable here (install it, "
                .. "or set commands.%s = false in the site file to skip it)"):format(argv[1], c.name, c.name)
            end
          end
        end
        if #problems > 0 then return fail("site", "%s", table.concat(problems, "; ")) end
        return ("%d command(s) found, %d skipped by the site file"):format(ran, #commands - ran)
      end,
    }
  end
  for _, h in ipairs(hook_steps(svc.hooks and svc.hooks.preflight)) do
    h.preflight = true
    h.drill = true -- a service's own checks only read (HSM/SLS schema versions): pgr drill runs them too
    steps[#steps + 1] = h
  end
  return steps
end

local function drop_restored_databases(ctx)
  -- A restore cut short left some of the dump applied: start it again from clean databases.
  local pg = require "pgr.pg"
  local conn, err = M.admin(ctx, "template1")
  if not conn and tostring(err):find('database "template1" does not exist', 1, true) then
    -- a -c dump cut between its DROP DATABASE template1 and the CREATE: make it again, as the dump would
    local c, cerr = M.admin(ctx, "postgres")
    if not c then return nil, cerr end
    local ok, e = c:exec("CREATE DATABASE template1 WITH TEMPLATE = template0 IS_TEMPLATE = true")
    c:close()
    if not ok then return nil, e end
    conn, err = M.admin(ctx, "template1")
  end
  if not conn then return nil, err end
  local dbs = {}
  for _, db in ipairs(ctx.state.dump_databases or {}) do dbs[#dbs + 1] = db end
  for _, db in ipairs(ctx.state.dump_connects or {}) do
    if db == "postgres" then dbs[#dbs + 1] = db end
  end
  for _, db in ipairs(dbs) do
    if db ~= "template0" and db ~= "template1" then
      local ok, e = conn:exec(("DROP DATABASE IF EXISTS %s WITH (FORCE)"):format(pg.quote_ident(db)))
      if not ok then conn:close() return nil, e end
      if db == "postgres" then
        ok, e = conn:exec("CREATE DATABASE postgres")
        if not ok then conn:close() return nil, e end
      end
    end
  end
  conn:close()
  return true
end

-- The role the dump is streamed as (created for the stream, dropped after it): a name of this run's
-- own, so that no dump can hold it (a backup taken while an earlier run had left its loader behind
-- would otherwise DROP, re-create and ALTER the very role streaming it, NOLOGIN and all).
M.LOADER = "pgr_restore"

local function random_password()
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(24)
  f:close()
  return (raw:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function stream_dump(ctx)
  local svc = ctx.svc
  local pg, err = lazy("pgr.pg")
  if not pg then return nil, err end
  if ctx.dry_run then
    local ref = assert(dump_ref(ctx))
    ctx:write(("stream %s into the master pod of %s"):format(ref.path or ref.key, svc.cluster))
    return true
  end
  if ctx.state.dump_started then
    local ok, e = drop_restored_databases(ctx)
    if not ok then return nil, e end
  end
  -- The dump sets postgres's password to the one it was taken with, and every \connect in it logs
  -- in again: so the stream logs in as a role of its own that the dump does not know (psql in the
  -- pod gets the same from local trust). The session held here outlives the password change.
  local admin
  admin, err = M.admin(ctx, "postgres")
  if not admin then return nil, err end
  local loader_pw = ctx:secret(random_password())
  local loader_name = ctx:remember("loader", M.LOADER .. "_" .. random_password():sub(1, 8))
  local loader = pg.quote_ident(loader_name)
  -- a stream that fails leaves the loader unable to log in (a resumed step enables it again), so no
  -- superuser with a forgotten password stays behind; the error is the stream's
  local function give_up(e)
    admin:exec(("ALTER ROLE %s NOLOGIN PASSWORD NULL"):format(loader))
    admin:close()
    return nil, e
  end
  local ok, e = admin:exec(("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN "
    .. "CREATE ROLE %s; END IF; END$$; ALTER ROLE %s LOGIN SUPERUSER"):format(pg.quote_literal(loader_name), loader, loader))
  if ok then ok, e = admin:set_password(loader_name, loader_pw) end
  if not ok then return give_up(e) end
  local pod, perr = M.master(ctx)
  if not pod then return give_up(perr) end
  local password = current_password(ctx, "postgres")
  local src, size, label = open_dump(ctx)
  if not src then return give_up(size) end
  ctx:set("dump_started", true)
  -- journaled as a change (the loader exists now; the stream comes next): a kill here resumes by
  -- dropping what the stream may have restored and streaming again
  ctx:write("stream " .. label .. " into " .. pod.metadata.name)
  local bar = ctx:progress({ label = "restore " .. svc.cluster, total = size, unit = "bytes" })
  local params = conn_params(ctx, pod, { user = loader_name, password = loader_pw })
  -- every session of the stream acts as postgres (SET ROLE at connection start), so what the dump
  -- creates belongs to postgres as under psql -U postgres: owners, and the initial privileges of
  -- extension objects (REASSIGN OWNED cannot rewrite those; they would name the dropped loader)
  params.options = "-c role=postgres"
  local jobs = ctx.source.jobs or ctx.site.restore_jobs or 1
  local policy = restore_policy(ctx)
  local res
  res, err = pg.restore(params, src, {
    total = size,
    jobs = jobs,
    on_error = policy.on_error,
    skip = require("pgr.restorepolicy").RUN_SKIP,
    progress = function(p)
      require("pgr.heartbeat").beat()
      bar:update(p.bytes, p.errors and p.errors > 0 and (p.errors .. " expected errors") or nil)
    end,
  })
  if type(src) ~= "string" and src.close then src:close() end
  -- an error a callback raised (Ctrl-C lands in the progress callback; a lost lease) is the stream's
  if res and res.callback_error ~= nil then
    bar:finish()
    return give_up(res.callback_error)
  end
  if not res then
    bar:finish()
    return give_up(err)
  end
  bar:finish(("restored %s: %d statements (%d not sent), %d COPY rows, %d expected errors%s"):format(label,
    res.statements or 0, res.skipped or 0, res.copy_rows or 0, res.errors and res.errors.count or 0,
    (res.jobs or 1) > 1 and (", %d connections"):format(res.jobs) or ""))
  if jobs > (res.jobs or 1) then
    ctx:log(("loaded over %d connection(s), not %d: a gzip'd dump loads over one"):format(res.jobs or 1, jobs))
  end
  -- the errors the dump met, expected or not, stay in the run's log for whoever audits the restore
  for _, c in ipairs(policy:summary()) do
    ctx:log(("expected ×%d %s: %s"):format(c.count, c.class, c.why))
  end
  for _, fe in ipairs(res.errors and res.errors.first or {}) do
    ctx:log(("dump line %s: %s %s: %s"):format(tostring(fe.line), fe.expected and "expected" or "UNEXPECTED",
      tostring(fe.sqlstate), tostring(fe.message)))
  end
  if not res.ok then
    local first
    for _, fe in ipairs(res.errors and res.errors.first or {}) do
      if not fe.expected then first = fe break end
    end
    return give_up(errors.new("restore", ("%d unexpected error(s) restoring %s%s%s"):format(
      res.errors and res.errors.unexpected or 0, label,
      first and (": line " .. tostring(first.line) .. ": " .. tostring(first.message)) or "",
      svc.scratch and "" or "; the cluster is left with one instance and the client scaled to 0"), { result = res }))
  end
  -- What the loader created without an explicit owner goes to postgres, as with psql -U postgres.
  local dbs = {}
  for _, db in ipairs(ctx.state.dump_connects or {}) do dbs[db] = true end
  for _, db in ipairs(ctx.state.dump_databases or {}) do dbs[db] = true end
  for db in pairs(dbs) do
    local c, cerr = pg.connect(conn_params(ctx, pod, { user = loader_name, password = loader_pw, dbname = db }))
    if c then
      ok, e = c:exec(("REASSIGN OWNED BY %s TO postgres; DROP OWNED BY %s"):format(loader, loader))
      c:close()
      if not ok then return give_up(e) end
    elseif not tostring(cerr):find("does not exist", 1, true) then
      return give_up(cerr)
    end
  end
  ok, e = admin:exec("DROP ROLE " .. loader)
  if not ok then return give_up(e) end
  -- Without a manifest the secrets stay as they are: keep the postgres role on its secret now, so
  -- this and later steps (and a resumed run) can connect.
  if not ctx.state.manifest and password then
    ok, e = admin:set_password("postgres", password)
    if not ok then admin:close() return nil, e end
  end
  admin:close()
  return ("%s restored"):format(require("pgr.ui").bytes(res.bytes or size or 0)), res
end
-- The runbook's dump step, for pgr drill: streams into ctx.svc's cluster (svc.scratch: a drill's own
-- cluster); returns note, result | nil, err.
M.stream_dump = function(ctx) return stream_dump(ctx) end

local function secrets_step(ctx)
  local svc = ctx.svc
  if ctx.state.manifest then
    local m = ctx._manifest
    if not m then
      local pm, err = parse_manifest(svc, assert(ctx.saved["manifest.yaml"], "the saved manifest"))
      if not pm then return nil, err end
      m = pm
      ctx._manifest = m
    end
    local docs = {}
    for _, doc in ipairs(m.list) do
      local name = doc.metadata.name
      local ok, err = ctx:write(("delete secret %s/%s"):format(svc.namespace, name), function()
        return ctx.k8s:delete("secret", name, { ignore_not_found = true, wait = true })
      end)
      if not ok then return nil, err end
      local k8s = require "pgr.k8s"
      docs[#docs + 1] = assert(json.encode(k8s.strip(doc)))
    end
    local res, err = ctx:write(("apply the manifest's %d secrets"):format(#docs), function()
      return ctx.k8s:apply_manifest(table.concat(docs, "\n---\n"), { namespace = svc.namespace })
    end)
    if not res then return nil, err end
    return ("%d secrets re-created from the manifest"):format(#docs)
  end
  local conn, err = M.admin(ctx, "postgres")
  if not conn then return nil, err end
  for _, user in ipairs(svc.users) do
    local pw
    pw, err = current_password(ctx, user)
    if not pw then conn:close() return nil, err end
    local ok, e = ctx:write(("set the password of %s to its secret's"):format(user), function()
      return conn:set_password(user, pw)
    end)
    if not ok then conn:close() return nil, e end
  end
  conn:close()
  return ("%d passwords set from the current secrets"):format(#svc.users)
end

local function verify_logins(ctx)
  local svc = ctx.svc
  if ctx.dry_run then return "skipped in a dry run" end
  local bad, standby = {}, false
  for _, user in ipairs(svc.users) do
    local pw, err = current_password(ctx, user)
    if not pw then return nil, err end
    local c, cerr = M.connect(ctx, { user = user, password = pw, dbname = "postgres" })
    if c then c:close() else
      bad[#bad + 1] = user .. " (" .. tostring(cerr) .. ")"
      standby = standby or user == "standby"
    end
  end
  if #bad > 0 then
    -- the replicas log in as standby with its secret's password: they would not start
    local why = standby and (". The standby role's password in the database is not the one in secret %s, which the "
      .. "replicas log in with: they would fail to start. Set the role's password to the secret's (as postgres on the "
      .. "master: ALTER ROLE standby PASSWORD '<the password in %s>') and run pgr again with --resume; or restore "
      .. "with the manifest taken with this dump"):format(M.secret_name(svc, "standby"), M.secret_name(svc, "standby")) or ""
    return fail("login", "these users cannot log in with their secret's password: %s%s", table.concat(bad, "; "), why)
  end
  return ("%d users log in"):format(#svc.users)
end

local function restart_database_pods(ctx)
  local svc = ctx.svc
  local k = ctx.k8s
  -- The pods to restart are recorded before the first is deleted: a run killed in the middle (a pod
  -- deleted and still coming back, so no master to find) resumes from that record, deletes what of
  -- it is still there and waits for the rest, instead of looking for a master that is not back yet.
  local rec = ctx.state.restart_pods
  if not rec then
    local targets = {}
    if svc.restart == "all" then
      local pods, err = k:list("pods", { labels = spilo.selector(svc.cluster) })
      if not pods then return nil, err end
      for _, p in ipairs(pods) do targets[#targets + 1] = p end
    else
      local m, err = M.master(ctx)
      if not m then return nil, err end
      targets[1] = m
    end
    rec = { pods = {} }
    for _, p in ipairs(targets) do rec.pods[#rec.pods + 1] = { name = p.metadata.name, uid = p.metadata.uid } end
    if not ctx.dry_run then ctx:set("restart_pods", rec) end
  end
  local old = {}
  for _, p in ipairs(rec.pods) do
    old[p.uid] = true
    local ok, err = ctx:write(("delete pod %s/%s"):format(svc.namespace, p.name), function()
      -- only the pod recorded (a resumed run may find its successor under the same name)
      local cur, gerr = k:get("pod", p.name)
      if not cur then
        if require("pgr.k8s").is_not_found(gerr) then return true end
        return nil, gerr
      end
      if field(cur, "metadata", "uid") ~= p.uid then return true end
      return k:delete("pod", p.name, { ignore_not_found = true })
    end)
    if not ok then return nil, err end
  end
  local want = #rec.pods
  local ok, err = ctx:wait(("for %d new database pod%s to be ready"):format(want, want == 1 and "" or "s"), function()
    local wok, werr = k:wait_for("pods", spilo.selector(svc.cluster), function(list)
      local ready = 0
      for _, p in ipairs(list) do
        if not old[p.metadata.uid] and require("pgr.k8s").pod_ready(p) then ready = ready + 1 end
      end
      if ready >= want then return true end
      return false, ("%d/%d ready"):format(ready, want)
    end, wait_opts(ctx, "the restarted database pods"))
    if not wok then return nil, werr end
    local check = require "pgr.cluster_check"
    local running, rerr = check.running(ctx)
    if not running then return nil, rerr end
    -- Ready without a readiness probe means the container started: wait for PostgreSQL itself
    local note, nerr = check.master_accepts(ctx)
    if not note then return nil, nerr end
    return type(running) == "string" and running or note
  end)
  return ok, err
end

function M.procedure(svc)
  assert(type(svc) == "table" and svc.service and svc.namespace and svc.cluster, "restore.procedure{service=, namespace=, cluster=, ...}")
  assert(type(svc.client) == "table" and svc.client.kind and svc.client.name and svc.client.selector,
    "restore.procedure: client = { kind=, name=, selector= }")
  assert(type(svc.users) == "table" and #svc.users > 0, "restore.procedure: users = { ... }")
  local hooks = svc.hooks or {}
  local client = svc.client
  local steps = preflight_steps(svc)
  local function add(s) steps[#steps + 1] = s end
  local function add_all(list) for _, s in ipairs(hook_steps(list)) do add(s) end end

  add({
    name = ("Back up %s as it is now, where no retention deletes it (the way back)"):format(svc.cluster),
    preflight = true, mark = "backup",
    touches = ("writes: pg_dumpall -c of %s and its secrets' manifest, to S3 under pgr/ (or the state "
      .. "directory's backups/)"):format(svc.cluster),
    run = safety_backup,
  })

  add({
    name = ("Record the replica count of %s and the cluster's numberOfInstances"):format(client.name),
    touches = "reads: " .. client.kind .. " " .. client.name .. ", postgresql " .. svc.cluster,
    run = function(ctx)
      local cl, err = ctx.k8s:get(client.kind, client.name)
      if not cl then return nil, err end
      local pgo
      pgo, err = ctx.k8s:get("postgresql", svc.cluster)
      if not pgo and ctx.state.instances == nil then return nil, err end -- else recorded by an earlier run
      local replicas = ctx:remember("client_replicas", field(cl, "spec", "replicas") or 1)
      local instances = ctx:remember("instances", field(pgo, "spec", "numberOfInstances") or 1)
      if replicas == 0 then
        -- an earlier, abandoned attempt may have left it there: say so rather than guess
        require("pgr.ui").warn(("%s has 0 replicas now and will be left at 0 at the end; scale it "
          .. "yourself afterwards if that is not what it should run with"):format(client.name))
      end
      return ("%s: %d replicas; %s: %d instances"):format(client.name, replicas, svc.cluster, instances)
    end,
  })
  add({
    name = "Save the postgresql object and the current secrets",
    touches = "writes: the run directory (files 0600)",
    run = function(ctx)
      if ctx.saved["postgresql.json"] then return "saved earlier" end
      local pgo, err = ctx.k8s:get("postgresql", svc.cluster)
      if not pgo then return nil, err end
      local secrets = {}
      for _, user in ipairs(svc.users) do
        local name = M.secret_name(svc, user)
        local s, serr = ctx.k8s:secret(name)
        if s then
          ctx:secret(s.password)
          secrets[name] = s
        elseif not require("pgr.k8s").is_not_found(serr) then
          return nil, serr
        end
      end
      ctx:save("secrets.json", secrets)
      ctx:save("postgresql.json", pgo)
      return "saved"
    end,
  })
  add({
    name = ("Scale %s to 0 and wait until its pods are gone"):format(client.name),
    destructive = true,
    touches = ("changes: %s %s/%s replicas -> 0"):format(client.kind, svc.namespace, client.name),
    run = function(ctx)
      local ok, err = ctx:write(("scale %s %s to 0"):format(client.kind, client.name), function()
        return ctx.k8s:scale(client.kind, client.name, 0)
      end)
      if not ok then return nil, err end
      return ctx:wait("for the pods of " .. client.name .. " to be gone", function()
        return ctx.k8s:pods_gone(client.selector, { timeout = M.defaults.wait_timeout })
      end)
    end,
  })
  add_all(hooks.before_restore)
  if svc.recreate ~= false then
    add({
      name = ("Delete the postgresql %s and wait until its pods are gone"):format(svc.cluster),
      destructive = true,
      touches = ("deletes: postgresql %s/%s (saved first), its pods, volumes and secrets"):format(svc.namespace, svc.cluster),
      run = function(ctx)
        local ok, err = ctx:write("delete postgresql " .. svc.cluster, function()
          return ctx.k8s:delete("postgresql", svc.cluster, { ignore_not_found = true, wait = true,
                                                             timeout = M.defaults.wait_timeout })
        end)
        if not ok then return nil, err end
        return ctx:wait("for the spilo pods of " .. svc.cluster .. " to be gone", function()
          return ctx.k8s:pods_gone(spilo.selector(svc.cluster), { timeout = M.defaults.wait_timeout })
        end)
      end,
    })
    add({
      name = ("Create the postgresql %s with one instance and wait until it is Running"):format(svc.cluster),
      destructive = true,
      touches = ("creates: postgresql %s/%s (numberOfInstances 1)"):format(svc.namespace, svc.cluster),
      run = function(ctx)
        local k8s = require "pgr.k8s"
        local saved = ctx.saved["postgresql.json"]
        if not saved and not ctx.dry_run then return fail("saved", "the saved postgresql object is missing") end
        local ok, err = ctx:write("create postgresql " .. svc.cluster .. " with one instance", function()
          local o = k8s.strip(saved)
          o.spec.numberOfInstances = 1
          local created, cerr = ctx.k8s:create(o)
          if not created and not k8s.is_conflict(cerr) then return nil, cerr end
          return true
        end)
        if not ok then return nil, err end
        return ctx:wait("for postgresql " .. svc.cluster .. " to be Running", function()
          local pods, perr = ctx.k8s:pods_ready(spilo.selector(svc.cluster, "master"), 1,
                                                { timeout = M.defaults.wait_timeout })
          if not pods then return nil, perr end
          local running, rerr = ctx.k8s:wait_for("postgresql", svc.cluster, function(o)
            return field(o, "status", "PostgresClusterStatus") == "Running"
          end, wait_opts(ctx, "postgresql " .. svc.cluster .. " to be Running"))
          if not running then return nil, rerr end
          -- a Ready pod is not a server that accepts connections (no readiness probe by default)
          return require("pgr.cluster_check").master_accepts(ctx)
        end)
      end,
    })
  end
  add({
    name = "Stream the dump into the master pod",
    destructive = true,
    touches = ("writes: every database of %s (from the dump, over libpq to the pod IP)"):format(svc.cluster),
    run = stream_dump,
  })
  add_all(hooks.after_restore)
  add({
    name = ("Update or re-create the %s secrets"):format(svc.cluster),
    destructive = true,
    touches = "with a manifest: deletes and re-applies the secrets; without: sets each user's password",
    run = secrets_step,
  })
  add({
    name = "Verify every user in the secrets can log in with its password",
    touches = "reads: the secrets; logs in as each user",
    run = verify_logins,
  })
  add({
    name = svc.restart == "all" and "Restart the database pods and wait until they are ready"
      or "Restart the master pod and wait until it is ready",
    destructive = true,
    touches = "deletes: " .. (svc.restart == "all" and "every spilo pod of " or "the master pod of ") .. svc.cluster,
    run = restart_database_pods,
  })
  add({
    name = "Scale the cluster back to its recorded numberOfInstances and wait until it is Running",
    touches = "changes: postgresql " .. svc.cluster .. " numberOfInstances",
    run = function(ctx)
      local n = ctx.state.instances or 1
      local ok, err = ctx:write(("set numberOfInstances of %s to %d"):format(svc.cluster, n), function()
        return ctx.k8s:patch("postgresql", svc.cluster, { spec = { numberOfInstances = n } }, { type = "merge" })
      end)
      if not ok then return nil, err end
      return ctx:wait("for " .. svc.cluster .. " to run " .. n .. " instances", function()
        local pods, perr = ctx.k8s:pods_ready(spilo.selector(svc.cluster), n, { timeout = M.defaults.wait_timeout })
        if not pods then return nil, perr end
        return require("pgr.cluster_check").running(ctx)
      end)
    end,
  })
  add({
    name = "Check every replica streams from the master",
    touches = "reads: pg_stat_replication on the master; the replica pods, their status and logs",
    run = function(ctx)
      local check = require "pgr.cluster_check"
      local note, err = check.master_accepts(ctx)
      if not note then return nil, err end
      return check.replicas_stream(ctx, ctx.state.instances or 1)
    end,
  })
  add({
    name = ("Scale %s back to its recorded replicas and wait until its pods are ready"):format(client.name),
    touches = ("changes: %s %s/%s replicas"):format(client.kind, svc.namespace, client.name),
    run = function(ctx)
      local n = ctx.state.client_replicas or 1
      local ok, err = ctx:write(("scale %s %s to %d"):format(client.kind, client.name, n), function()
        return ctx.k8s:scale(client.kind, client.name, n)
      end)
      if not ok then return nil, err end
      return ctx:wait("for " .. n .. " pods of " .. client.name .. " to be ready", function()
        if n == 0 then return true end
        return ctx.k8s:pods_ready(client.selector, n, { timeout = M.defaults.wait_timeout })
      end)
    end,
  })
  add_all(hooks.after)

  return runbook.procedure({
    name = svc.service,
    title = svc.title or ("Restore Postgres for " .. svc.service),
    cluster = svc.namespace .. "/" .. svc.cluster,
    steps = steps,
    -- what a `pgr run --new` takes over from an unfinished run that had changed the cluster: its
    -- record of the cluster before the change (runbook.run)
    inherit = { "client_replicas", "instances", "safety_backup", "way_back" },
    inherit_saved = { "postgresql.json", "secrets.json" },
    service = svc,
    -- one pgr at a time on this cluster, from any machine (pgr.lease)
    lock = function(info)
      return require("pgr.lease").hold({ site = info.site, namespace = svc.namespace, cluster = svc.cluster,
                                         run = info.run_id, lock = info.lock_path, command = "run" })
    end,
    setup = function(ctx)
      ctx.svc = svc
      local k8s, err = lazy("pgr.k8s")
      if not k8s then return nil, err end
      local site = ctx.site or {}
      local c
      c, err = k8s.connect({ kubeconfig = site.kubeconfig, context = site.context, namespace = svc.namespace })
      if not c then return nil, err end
      ctx.k8s = c
      if ctx.state.manifest and ctx.saved["manifest.yaml"] then
        local m = parse_manifest(svc, ctx.saved["manifest.yaml"])
        if m then
          ctx._manifest = m
          for _, doc in ipairs(m.list) do
            local pw = field(doc, "data", "password")
            if pw then ctx:secret(pw) end
          end
        end
      end
      -- every password we may handle is registered before any step prints anything
      for _, user in ipairs(svc.users) do
        local mp = manifest_password(ctx, user)
        if mp then ctx:secret(mp) end
      end
      return true
    end,
  })
end

return M
