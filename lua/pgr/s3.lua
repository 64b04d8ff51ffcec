-- pgr.s3: where the backups are and how to reach them — endpoint, region and the credentials chain
-- (with the source named in every error), the backups of a cluster paired and ordered, s3:// URLs.
--
--   local s3 = require "pgr.s3"
--   local cfg = assert(s3.config{})            -- resolved settings; cfg.source says where keys came from
--   local c = assert(s3.connect{})             -- client: c:list(bucket,{prefix=}), c:head, c:get, c:open
--   local list = assert(s3.backups("spire-postgres"))   -- newest first, pairs of .psql + .manifest
--   local r, size = assert(s3.reader("s3://postgres-backup/spire-postgres-2022-09-14T03:10:04.psql"))
--   pg.restore(conn, r)                        -- r:read(n) streams, resuming cut connections
--
-- Options of config/connect/backups/reader (all optional): endpoint=, region=, bucket=,
-- access_key=, secret_key=, session_token=, cainfo=, insecure=, virtual_host=, resumes=, readahead_mb=,
-- site= (a pgr.site table; default: site.load()), getenv= (function, default os.getenv; for tests),
-- k8s= (a pgr.k8s client for a Secret source).
--
-- Credentials, first match wins: explicit arguments -> AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
-- (/ AWS_SESSION_TOKEN) -> the AWS_PROFILE (or "default") profile of ~/.aws/credentials and
-- ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) -> the site file's s3.credentials:
-- { access_key=, secret_key= } | { file=PATH (credentials-file format) } | { secret="ns/name" }
-- (a Kubernetes Secret with keys access_key, secret_key and optionally s3_endpoint, as CSM's
-- *-s3-credentials secrets have).
local core = require "pgr.s3.core"
local errors = require "pgr.errors"

local M = {}

-- Policy a site may change.
M.defaults = {
  region = "us-east-1",
  bucket = "postgres-backup", -- where CSM's postgres-backup cronjobs write
  resumes = 5,                -- Range requests that repair a cut download
  -- MiB of an object a reader fetches ahead of its consumer, so the network is read at its own
  -- pace while PostgreSQL loads (and, with --jobs, what a restore holds for its connections)
  readahead_mb = 32,
}

-- Where pgr's own backups live in the bucket (pgr backup, pgr run's safety backup): outside the
-- nightly job's retention, which deletes "<cluster>-*" keys only.
M.PGR_PREFIX = "pgr/"

-- Services of the runbook and their Postgres clusters (the backup names start with the cluster).
M.CLUSTERS = {
  spire = "spire-postgres",
  keycloak = "keycloak-postgres",
  vcs = "gitea-vcs-postgres",
  hsm = "cray-smd-postgres",
  sls = "cray-sls-postgres",
}

------------------------------------------------------------------------------------------------
-- configuration

-- Reads an INI file as the AWS CLI writes them: { [section] = { key = value } }.
-- Indented lines (nested service settings) are skipped.
local function read_ini(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local out, cur = {}, nil
  for line in f:lines() do
    local sec = line:match("^%s*%[%s*(.-)%s*%]%s*$")
    if sec then
      cur = out[sec] or {}
      out[sec] = cur
    elseif cur and not line:match("^%s") then
      local k, v = line:match("^([%w_%-%.]+)%s*=%s*(.-)%s*$")
      if k and not k:match("^[#;]") then cur[k] = v end
    end
  end
  f:close()
  return out
end

local function nonempty(v)
  if v ~= nil and v ~= "" then return v end
end

local function profile_settings(getenv)
  local home = getenv("HOME") or ""
  local profile = nonempty(getenv("AWS_PROFILE")) or "default"
  local cred_path = nonempty(getenv("AWS_SHARED_CREDENTIALS_FILE")) or (home .. "/.aws/credentials")
  local conf_path = nonempty(getenv("AWS_CONFIG_FILE")) or (home .. "/.aws/config")
  local creds = read_ini(cred_path) or {}
  local conf = read_ini(conf_path) or {}
  local c = creds[profile] or {}
  local k = conf[profile == "default" and "default" or ("profile " .. profile)] or conf[profile] or {}
  return {
    profile = profile,
    access_key = c.aws_access_key_id or k.aws_access_key_id,
    secret_key = c.aws_secret_access_key or k.aws_secret_access_key,
    session_token = c.aws_session_token or k.aws_session_token,
    source = c.aws_access_key_id and ("profile %s in %s"):format(profile, cred_path)
      or ("profile %s in %s"):format(profile, conf_path),
    endpoint = k.endpoint_url or c.endpoint_url,
    region = k.region or c.region,
    ca_bundle = k.ca_bundle,
  }
end

local function site_secret(spec, opts, site)
  local ns, name = spec:match("^([^/]+)/(.+)$")
  local k = opts.k8s
  if not k then
    local ok, k8s = pcall(require, "pgr.k8s")
    if not ok then
      return nil, errors.new("credentials", ("S3 credentials are in Kubernetes secret %s but pgr.k8s is "
        .. "not available"):format(spec))
    end
    local err
    -- the cluster the site names (kubeconfig, context), as pgr run connects to it
    k, err = k8s.connect { kubeconfig = site and site.kubeconfig, context = site and site.context, namespace = ns }
    if not k then
      return nil, errors.new("credentials", ("cannot read S3 credentials from Kubernetes secret %s: %s")
        :format(spec, tostring(err)))
    end
  end
  local data, err = k:secret(name, { namespace = ns })
  if not opts.k8s then k:close() end
  if not data then
    return nil, errors.new("credentials", ("cannot read S3 credentials from Kubernetes secret %s: %s "
      .. "(kubectl get secret -n %s %s)"):format(spec, tostring(err), ns, name))
  end
  if not data.access_key or not data.secret_key then
    return nil, errors.new("credentials", ("Kubernetes secret %s has no access_key/secret_key keys"):format(spec))
  end
  return { access_key = data.access_key, secret_key = data.secret_key,
           endpoint = data.http_s3_endpoint or data.s3_endpoint,
           source = "Kubernetes secret " .. spec }
end

local function load_site(opts)
  if opts.site ~= nil then return opts.site or nil end
  local ok, site = pcall(require, "pgr.site")
  if not ok then return nil end
  return site.load()   -- nil, err for a site file that is named but unreadable or broken
end

-- config(opts) -> { endpoint=, region=, bucket=, access_key=, secret_key=, session_token=,
--   source=, cainfo=, insecure=, virtual_host=, resumes=, readahead= (bytes) } | nil, err
function M.config(opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local site, serr = load_site(opts)
  if site == nil and serr then return nil, serr end
  local ss = site and site.s3 or {}
  local prof = profile_settings(getenv)
  local cfg = {
    bucket = opts.bucket or ss.bucket or M.defaults.bucket,
    region = opts.region or nonempty(getenv("AWS_REGION")) or nonempty(getenv("AWS_DEFAULT_REGION"))
      or prof.region or ss.region or M.defaults.region,
    cainfo = opts.cainfo or nonempty(getenv("AWS_CA_BUNDLE")) or prof.ca_bundle or ss.ca_bundle,
    insecure = opts.insecure or ss.insecure or false,
    virtual_host = opts.virtual_host or ss.virtual_host or false,
    resumes = opts.resumes or ss.resumes or M.defaults.resumes,
    readahead = (opts.readahead_mb or ss.readahead_mb or M.defaults.readahead_mb) * 1024 * 1024,
  }
  local endpoint = opts.endpoint or nonempty(getenv("AWS_ENDPOINT_URL_S3")) or nonempty(getenv("AWS_ENDPOINT_URL"))
    or prof.endpoint or ss.endpoint

  -- credentials: the first source that has both keys
  if opts.access_key and opts.secret_key then
    cfg.access_key, cfg.secret_key, cfg.session_token = opts.access_key, opts.secret_key, opts.session_token
    cfg.source = "arguments"
  elseif nonempty(getenv("AWS_ACCESS_KEY_ID")) and nonempty(getenv("AWS_SECRET_ACCESS_KEY")) then
    cfg.access_key, cfg.secret_key = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
    cfg.session_token = nonempty(getenv("AWS_SESSION_TOKEN"))
    cfg.source = "environment (AWS_ACCESS_KEY_ID)"
  elseif prof.access_key and prof.secret_key then
    cfg.access_key, cfg.secret_key, cfg.session_token = prof.access_key, prof.secret_key, prof.session_token
    cfg.source = prof.source
  elseif ss.credentials then
    local sc = ss.credentials
    local where = site and site.path or "the site file"
    if sc.access_key then
      cfg.access_key, cfg.secret_key = sc.access_key, sc.secret_key
      cfg.source = "s3.credentials in " .. where
    elseif sc.file then
      local good, serr = require("pgr.security").secret_file(sc.file, "s3.credentials.file")
      if not good and serr.code == "untrusted" then return nil, serr end
      local ini = read_ini(sc.file)
      local profile = nonempty(getenv("AWS_PROFILE")) or "default"
      local sec = ini and (ini[profile] or ini.default)
      if not sec or not sec.aws_access_key_id or not sec.aws_secret_access_key then
        return nil, errors.new("credentials", ("S3 credentials file %s (s3.credentials.file in %s) has no "
          .. "aws_access_key_id/aws_secret_access_key for profile %s"):format(sc.file, where, profile))
      end
      cfg.access_key, cfg.secret_key = sec.aws_access_key_id, sec.aws_secret_access_key
      cfg.session_token = sec.aws_session_token
      cfg.source = "file " .. sc.file
    elseif sc.secret then
      local s, err = site_secret(sc.secret, opts, site)
      if not s then return nil, err end
      cfg.access_key, cfg.secret_key, cfg.source = s.access_key, s.secret_key, s.source
      endpoint = endpoint or s.endpoint
    end
  end
  if not cfg.access_key then
    return nil, errors.new("credentials", "no S3 credentials found: pass access_key/secret_key, set "
      .. "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add profile " .. prof.profile
      .. " to ~/.aws/credentials, or set s3.credentials in the site file")
  end
  if not endpoint then
    return nil, errors.new("config", "no S3 endpoint: set s3.endpoint in the site file, AWS_ENDPOINT_URL, "
      .. "or endpoint_url in ~/.aws/config (CSM: the Ceph RGW, e.g. http://rgw-vip.nmn)")
  end
  cfg.endpoint = endpoint:gsub("/+$", "")
  return cfg
end

-- connect(opts) -> client (pgr.s3.core), cfg | nil, err
function M.connect(opts)
  local cfg, err = M.config(opts)
  if not cfg then return nil, err end
  -- SigV4 never sends the secret key, but the backups (with the roles' password hashes) do travel
  require("pgr.security").check_endpoint(cfg.endpoint, "the S3 endpoint", { insecure = cfg.insecure,
    where = "s3.insecure", secret = "the backups, with the roles' password hashes" })
  local c
  c, err = core.client(cfg)
  if not c then return nil, err end
  return c, cfg
end

------------------------------------------------------------------------------------------------
-- URLs and backups

-- parse_url("s3://bucket/key") -> bucket, key | nil, err
function M.parse_url(url)
  local bucket, key = tostring(url):match("^s3://([^/]+)/(.+)$")
  if not bucket then
    return nil, errors.new("usage", ("not an S3 object URL: %s (expected s3://BUCKET/KEY)"):format(tostring(url)))
  end
  return bucket, key
end

-- reader(url, opts) -> reader, size | nil, err.  reader:read(n) -> chunk | nil (end) | nil, err;
-- reader.size, .offset, .resumes; a cut connection is resumed with Range (opts.resumes times); a
-- thread of the reader fetches up to readahead_mb MiB ahead of the caller (reader:close() stops it).
function M.reader(url, opts)
  local bucket, key = M.parse_url(url)
  if not bucket then return nil, key end
  local c, cfg = M.connect(opts)
  if not c then return nil, cfg end
  local r, err = c:open(bucket, key, { resumes = cfg.resumes, readahead = cfg.readahead })
  if not r then return nil, err end
  return r, r.size
end
M.open_url = M.reader

-- download(url, path, opts) -> {size=, etag=, md5_checked=, resumes=} | nil, err
-- opts.progress = function(offset, size) ... end (return false to stop); opts.verify_md5 = false
-- skips the MD5 check of single-part objects (the size is always checked)
function M.download(url, path, opts)
  opts = opts or {}
  local bucket, key = M.parse_url(url)
  if not bucket then return nil, key end
  local c, cfg = M.connect(opts)
  if not c then return nil, cfg end
  local res, err = c:get(bucket, key, path, { resumes = cfg.resumes, progress = opts.progress,
                                              verify_md5 = opts.verify_md5 ~= false })
  c:close()
  return res, err
end

-- The backup's time from its name: "spire-postgres-2022-09-14T03:10:04.psql" -> "2022-09-14T03:10:04".
function M.name_time(name)
  return name:match("(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d)")
end

-- cluster_of("spire") -> "spire-postgres"; a cluster name is returned as it is.
function M.cluster_of(name)
  return M.CLUSTERS[name] or name
end

-- The layouts backups come in (pgr backups names them):
--   csm       CSM's nightly job: <cluster>-<UTC time>.psql + .manifest (a pair; incomplete without both)
--   operator  the postgres-operator's logical backup: spilo/<cluster>/<uid>/logical_backups/<epoch>.sql.gz,
--             gzip'd, no manifest by design (a restore sets the passwords from the current secrets)
local OPERATOR_KEY = "^spilo/([^/]+)/([^/]+)/logical_backups/(%d+)%.sql%.gz$"

-- pair(objects) -> backups, newest first: { name=, layout=, cluster=, time=, psql=obj|nil,
-- manifest=obj|nil, complete=bool, missing="manifest"|"psql"|nil, size=, url=, by="pgr"|nil }. psql is the
-- dump object whatever its layout. Other objects are left out. Without a time in the name, LastModified
-- orders. Backups under M.PGR_PREFIX are pgr's own (pgr backup, pgr run's safety backup): by = "pgr".
function M.pair(objects, bucket)
  local by, order = {}, {}
  for _, o in ipairs(objects) do
    local cluster, uid, epoch = o.key:match(OPERATOR_KEY)
    if cluster then
      order[#order + 1] = { name = o.key:gsub("%.sql%.gz$", ""), layout = "operator", cluster = cluster, uid = uid,
                            time = os.date("!%Y-%m-%dT%H:%M:%S", tonumber(epoch)), psql = o }
    else
      local base, ext = o.key:match("^(.*)%.(psql)$")
      if not base then base, ext = o.key:match("^(.*)%.(manifest)$") end
      if base then
        local b = by[base]
        if not b then
          b = { name = base, layout = "csm", time = M.name_time(base) }
          by[base] = b
          order[#order + 1] = b
        end
        b[ext] = o
      end
    end
  end
  for _, b in ipairs(order) do
    if b.layout == "operator" then
      b.complete = true
    else
      b.complete = b.psql ~= nil and b.manifest ~= nil
      b.missing = not b.psql and "psql" or not b.manifest and "manifest" or nil
      b.cluster = b.time and b.name:match("^(.-)%-%d%d%d%d%-%d%d%-%d%dT") or b.name
      if b.name:sub(1, #M.PGR_PREFIX) == M.PGR_PREFIX then
        b.by = "pgr"
        b.cluster = b.cluster:sub(#M.PGR_PREFIX + 1)
      end
    end
    b.size = b.psql and b.psql.size or nil
    b.last_modified = (b.psql or b.manifest).last_modified
    b.url = bucket and b.psql and ("s3://%s/%s"):format(bucket, b.psql.key) or nil
    b.sort = b.time or (b.last_modified or ""):sub(1, 19)
  end
  table.sort(order, function(a, b)
    if a.sort ~= b.sort then return a.sort > b.sort end
    return a.name > b.name
  end)
  for _, b in ipairs(order) do b.sort = nil end
  return order
end

-- list_backups(client, bucket, prefix [, {pgr=true}]) -> backups (see pair) | nil, err: of one cluster in
-- both layouts (prefix "spire-postgres-" and "spilo/spire-postgres/"), or every backup when prefix is nil.
-- prefix is a cluster name (or a service's backup_prefix). opts.pgr: pgr's own backups of the cluster
-- too (under M.PGR_PREFIX; never chosen by pgr run unless named).
function M.list_backups(c, bucket, prefix, opts)
  local objects, err
  if not prefix then
    objects, err = c:list(bucket, {})
    if not objects then return nil, err end
    return M.pair(objects, bucket)
  end
  objects, err = c:list(bucket, { prefix = prefix .. "-" })
  if not objects then return nil, err end
  local more
  more, err = c:list(bucket, { prefix = "spilo/" .. prefix .. "/" })
  if not more then return nil, err end
  for _, o in ipairs(more) do objects[#objects + 1] = o end
  if opts and opts.pgr then
    more, err = c:list(bucket, { prefix = M.PGR_PREFIX .. prefix .. "-" })
    if not more then return nil, err end
    for _, o in ipairs(more) do objects[#objects + 1] = o end
  end
  return M.pair(objects, bucket)
end

-- backups(prefix, opts) -> backups (see pair), newest first | nil, err.  prefix: a service name
-- ("spire"), a cluster ("spire-postgres") or nil for every backup in the bucket; pgr's own backups of
-- the cluster (under M.PGR_PREFIX) are listed beside the nightly ones.
function M.backups(prefix, opts)
  opts = opts or {}
  local c, cfg = M.connect(opts)
  if not c then return nil, cfg end
  local list, err = M.list_backups(c, cfg.bucket, prefix and M.cluster_of(prefix) or nil, { pgr = true })
  c:close()
  return list, err
end

return M
