-- pgr.backup: a backup of a live cluster as CSM's nightly job makes it — `pg_dumpall -c` run inside the
-- master pod by exec (the pod's own client: its version always matches the server) and the cluster's
-- credential Secrets as a multi-document manifest — streamed to S3 (a multipart upload in constant
-- memory, aborted on failure: no partial object) or to a directory, under a name the nightly job's
-- retention never deletes, and checked before it is called done.
--
--   local backup = require "pgr.backup"
--   local res, err = backup.take{ svc = svc, to = "s3" | "/a/dir", site = site, k8s = k, s3 = c, bucket = b }
--   res = { name = "pgr/spire-postgres-2025-01-02T03:04:05", kind = "s3" | "file", location = "s3://bucket",
--           dump = key | path, manifest = key | path, url = "s3://.../x.psql" | path, size = bytes,
--           secrets = n, pod = "spire-postgres-0", seconds = s, restore_args = { "--backup", name } |
--           { "--dump", path, "--manifest", path } }
--   backup.manifest(svc, k) -> yaml text, count | nil, err      the Secrets as the nightly job writes them
--   backup.check_manifest(svc, text) -> count | nil, err        it holds every user's secret of the cluster
--
-- svc is a service table as pgr.restore takes it (namespace, cluster, users); opts.on_upload(id, key)
-- is told the multipart upload's id before the first byte is sent (pgr run journals it).
local errors = require "pgr.errors"
local sys = require "pgr.sys"
local ui = require "pgr.ui"

local M = {}

-- Policy a site may change (by overriding this module).
M.defaults = {
  prefix = require("pgr.s3").PGR_PREFIX, -- outside the nightly retention ("<cluster>-*" keys only)
  dump = { "pg_dumpall", "-c", "-U", "postgres" }, -- as the nightly job: --clean, no --if-exists
  container = "postgres", -- Spilo's container in the database pods
  timeout = 6 * 3600,     -- seconds the dump may take
  idle = 600,             -- seconds the dump may go without writing a byte
  part_size = 8 << 20,    -- S3 part size (two parts in memory at a time)
}

-- pg_dumpall's last lines: a dump without them was cut short.
M.TRAILER = "\n-- PostgreSQL database cluster dump complete\n"

local function fail(code, fmt, ...)
  return nil, errors.new(code, fmt:format(...))
end

local spilo = require("pgr.spilo")

-- The users in the manifest's order: the service's own, then postgres, then standby (CSM's job).
local function manifest_users(svc)
  local list = {}
  for _, u in ipairs(svc.users) do
    if u ~= "postgres" and u ~= "standby" then list[#list + 1] = u end
  end
  list[#list + 1] = "postgres"
  list[#list + 1] = "standby"
  return list
end

function M.manifest(svc, k)
  local yaml = require "pgr.yaml"
  local docs = {}
  for _, user in ipairs(manifest_users(svc)) do
    local name = spilo.secret_name(svc.cluster, user)
    local s, err = k:get("secret", name, { namespace = svc.namespace })
    if not s then
      return nil, errors.new("secret", ("cannot read secret %s/%s for the manifest: %s (kubectl get secret -n %s %s)")
        :format(svc.namespace, name, tostring(err and err.message or err), svc.namespace, name))
    end
    local md = s.metadata or {}
    docs[#docs + 1] = {
      apiVersion = "v1", kind = "Secret", type = s.type or "Opaque",
      metadata = { name = md.name, namespace = md.namespace or svc.namespace, labels = md.labels },
      data = s.data or {},
    }
  end
  local text, err = yaml.encode_all(docs)
  if not text then return nil, errors.new("manifest", "cannot write the manifest: " .. tostring(err)) end
  return text, #docs
end

function M.check_manifest(svc, text)
  local yaml = require "pgr.yaml"
  local docs, err = yaml.decode(text)
  if not docs then return fail("manifest", "the manifest does not parse: %s", tostring(err)) end
  local names = {}
  for _, d in ipairs(docs) do
    if type(d) == "table" and d.kind == "Secret" and type(d.metadata) == "table"
        and d.metadata.namespace == svc.namespace and type(d.data) == "table" and d.data.password then
      names[d.metadata.name] = true
    end
  end
  local missing = {}
  for _, user in ipairs(svc.users) do
    local name = spilo.secret_name(svc.cluster, user)
    if not names[name] then missing[#missing + 1] = name end
  end
  if #missing > 0 then
    return fail("manifest", "the manifest lacks the credentials of %s", table.concat(missing, ", "))
  end
  return #docs
end

-- The master pod: labelled spilo-role=master, with an IP, not being deleted.
local function master(svc, k)
  local sel = spilo.selector(svc.cluster, "master")
  local pods, err = k:list("pods", { labels = sel, namespace = svc.namespace })
  if not pods then return nil, err end
  for _, p in ipairs(pods) do
    if p.status and p.status.podIP and not p.metadata.deletionTimestamp then return p end
  end
  return fail("no_master", "no running master pod of %s/%s (kubectl get pods -n %s -l %s)", svc.namespace,
    svc.cluster, svc.namespace, sel)
end

-- Sinks: where the dump's bytes go, with one contract: write(chunk) -> true | nil, err;
-- finish() -> size | nil, err (the object or file exists whole only then); abort().
local function s3_sink(c, bucket, key, opts)
  local u, err = c:upload(bucket, key, { part_size = opts.part_size or M.defaults.part_size })
  if not u then return nil, err end
  if opts.on_upload then opts.on_upload(u.id, key) end
  return {
    write = function(chunk) return u:write(chunk) end,
    finish = function()
      local res, ferr = u:finish()
      if not res then return nil, ferr end
      return res.size
    end,
    abort = function() u:abort() end,
  }
end

local function file_sink(path)
  local tmp = ("%s.part-%d"):format(path, sys.getpid())
  -- created 0600 before a byte is written: a dump holds every role's password hash
  local ok, err = sys.write_file(tmp, "", 384)
  if not ok then return nil, err end
  local f, ferr = io.open(tmp, "wb")
  if not f then return nil, errors.new("io", tostring(ferr)) end
  local size = 0
  return {
    write = function(chunk)
      local w, werr = f:write(chunk)
      if not w then return nil, errors.new("io", ("cannot write %s: %s"):format(tmp, tostring(werr))) end
      size = size + #chunk
      return true
    end,
    finish = function()
      local c, cerr = f:close()
      if not c then return nil, errors.new("io", ("cannot write %s: %s"):format(tmp, tostring(cerr))) end
      local s, serr = sys.fsync(tmp)
      if not s then return nil, serr end
      local st = sys.stat(tmp)
      if not st or st.size ~= size then
        os.remove(tmp)
        return fail("size_mismatch", "%s holds %s bytes after %d were written", tmp, tostring(st and st.size), size)
      end
      local r, rerr = os.rename(tmp, path)
      if not r then return nil, errors.new("io", tostring(rerr)) end
      sys.fsync(path:match("^(.*)/[^/]*$") or ".")
      return size
    end,
    abort = function()
      pcall(f.close, f)
      os.remove(tmp)
    end,
  }
end

local function timestamp()
  return os.date("!%Y-%m-%dT%H:%M:%S")
end

-- Where a backup goes: "s3", or an absolute directory.
function M.destination(to)
  if to == nil or to == "s3" then return "s3" end
  if type(to) == "string" and to ~= "" then return "file", to end
  return fail("usage", "a backup goes to s3 or to a directory (got %s)", tostring(to))
end

function M.take(opts)
  local svc = assert(opts.svc, "backup.take{svc=}")
  assert(svc.namespace and svc.cluster and type(svc.users) == "table", "backup.take: svc needs namespace, cluster, users")
  local t0 = sys.now()
  local kind, dir = M.destination(opts.to)
  if not kind then return nil, dir end
  local k = opts.k8s
  if not k then
    local site = opts.site or {}
    local err
    k, err = require("pgr.k8s").connect { kubeconfig = site.kubeconfig, context = site.context, namespace = svc.namespace }
    if not k then return nil, err end
  end
  local allowed, aerr = k:can_i("create", "pods/exec", svc.namespace)
  if allowed == nil then return nil, aerr end
  if not allowed then
    return fail("forbidden", "not allowed to exec into the pods of %s (kubectl auth can-i create pods/exec -n %s)",
      svc.namespace, svc.namespace)
  end
  local pod, err = master(svc, k)
  if not pod then return nil, err end
  -- the manifest first: unreadable secrets stop the backup before anything is written
  local manifest, count = M.manifest(svc, k)
  if not manifest then return nil, count end

  local base = ("%s-%s"):format(svc.cluster, opts.timestamp or timestamp())
  local res = { kind = kind, pod = pod.metadata.name, secrets = count }
  local c, bucket, sink
  if kind == "s3" then
    c, bucket = opts.s3, opts.bucket
    if not c then
      local cfg
      c, cfg = require("pgr.s3").connect { site = opts.site, k8s = k }
      if not c then return nil, cfg end
      bucket = bucket or cfg.bucket
    end
    res.name = (opts.prefix or M.defaults.prefix) .. base
    res.dump, res.manifest = res.name .. ".psql", res.name .. ".manifest"
    res.location = "s3://" .. bucket
    res.url = ("s3://%s/%s"):format(bucket, res.dump)
    res.restore_args = { "--backup", res.name }
    local existing = c:head(bucket, res.dump)
    if existing then return fail("exists", "%s exists already", res.url) end
    sink, err = s3_sink(c, bucket, res.dump, opts)
  else
    local ok, merr = sys.mkdir(dir, 448)
    if not ok then return nil, merr end
    res.name = base
    res.dump, res.manifest = dir .. "/" .. base .. ".psql", dir .. "/" .. base .. ".manifest"
    res.location = dir
    res.url = res.dump
    res.restore_args = { "--dump", res.dump, "--manifest", res.manifest }
    if sys.stat(res.dump) then return fail("exists", "%s exists already", res.dump) end
    sink, err = file_sink(res.dump)
  end
  if not sink then return nil, err end

  ui.json({ event = "backup_started", cluster = svc.namespace .. "/" .. svc.cluster, pod = res.pod, url = res.url })
  local bar = ui.progress({ label = "backup " .. svc.cluster, unit = "bytes" })
  local size, tail, sink_err = 0, "", nil
  local stderr = {}
  local argv = opts.dump or M.defaults.dump
  local r, xerr = k:exec(pod, argv, {
    container = opts.container or M.defaults.container,
    timeout = opts.timeout or M.defaults.timeout, idle = opts.idle or M.defaults.idle,
    on_stdout = function(chunk)
      local ok, werr = sink.write(chunk)
      if not ok then
        sink_err = werr
        return false
      end
      size = size + #chunk
      tail = (tail .. chunk):sub(-4096)
      bar:update(size)
      if opts.progress then opts.progress(size) end
      return true
    end,
    on_stderr = function(chunk)
      if #stderr < 64 then stderr[#stderr + 1] = chunk end
    end,
  })
  local function give_up(e)
    sink.abort()
    bar:finish()
    ui.json({ event = "backup_finished", status = "failed", error = tostring(e) })
    return nil, e
  end
  if sink_err then return give_up(sink_err) end
  if not r then return give_up(xerr) end
  local errtext = table.concat(stderr):gsub("%s+$", "")
  if r.code ~= 0 then
    return give_up(errors.new("dump", ("%s in pod %s exited %d: %s"):format(argv[1], res.pod, r.code,
      errtext ~= "" and errtext:sub(-600) or "(no message)")))
  end
  if tail:sub(-#M.TRAILER - 64):find(M.TRAILER, 1, true) == nil then
    return give_up(errors.new("dump", ("the dump from pod %s lacks pg_dumpall's completion trailer (%d bytes): "
      .. "it was cut short"):format(res.pod, size)))
  end
  local stored, ferr = sink.finish()
  if not stored then return give_up(ferr) end
  if stored ~= size then
    return give_up(errors.new("size_mismatch", ("%s holds %d bytes, the dump had %d"):format(res.url, stored, size)))
  end
  bar:finish(("backup %s: %s from pod %s in %s"):format(svc.cluster, ui.bytes(size), res.pod,
    ui.duration(sys.now() - t0)))

  -- the manifest, then read back: the backup is done only when both halves are there and whole
  local function drop_dump()
    if kind == "s3" then c:delete(bucket, res.dump) else os.remove(res.dump) end
  end
  local ok, merr
  if kind == "s3" then
    ok, merr = c:put(bucket, res.manifest, manifest)
  else
    ok, merr = sys.write_file(res.manifest, manifest, 384)
  end
  if not ok then
    drop_dump()
    ui.json({ event = "backup_finished", status = "failed", error = tostring(merr) })
    return nil, merr
  end
  local back
  if kind == "s3" then
    local rd = c:open(bucket, res.manifest)
    back = rd and rd:read(1 << 20)
    if rd then rd:close() end
  else
    local f = io.open(res.manifest, "rb")
    back = f and f:read("a")
    if f then f:close() end
  end
  local checked, cerr = M.check_manifest(svc, back or "")
  if not checked or back ~= manifest then
    drop_dump()
    if kind == "s3" then c:delete(bucket, res.manifest) else os.remove(res.manifest) end
    local e = cerr or errors.new("manifest", "the manifest read back differs from the one written")
    ui.json({ event = "backup_finished", status = "failed", error = tostring(e) })
    return nil, e
  end
  res.size = size
  res.seconds = sys.now() - t0
  ui.json({ event = "backup_finished", status = "ok", name = res.name, url = res.url, size = size,
            secrets = count, seconds = res.seconds })
  return res
end

return M
