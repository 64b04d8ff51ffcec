-- pgr.site: the site file — what differs between systems (nodes, S3, state directory, Kubernetes
-- context, external verification commands) — loaded, merged over documented defaults, validated.
--
-- site.load([path]) -> site | nil, err
--   path: the argument, else $PGR_SITE, else /etc/pgr/site.lua. An absent default file means "all
--   defaults"; an absent file named explicitly (argument or PGR_SITE) is an error.
--   The file is Lua returning a table; its fields are checked and merged over site.DEFAULTS
--   (tables merge one level deep: a site sets commands.spire_verify_jwt without repeating the rest).
-- site.defaults() -> a fresh copy of the defaults
-- site.state_dir(site) -> the state directory: $PGR_STATE_DIR, else site.state_dir, else
--   $XDG_STATE_HOME/pgr, else ~/.local/state/pgr
-- site.command(site, name) -> argv table | nil (disabled) | nil, err (unknown name)
--
-- Fields (see etc/site.example.lua):
--   nodes       hostlist string of the management NCNs, e.g. "ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]"
--   ssh         { user=, port=, identity=, options={...}, fanout=32, timeout=60, program= } for fan-out
--               to nodes; options are ssh's own argument words: { "-o", "StrictHostKeyChecking=yes" }
--   s3          { endpoint=, region="us-east-1", bucket="postgres-backup", credentials={...},
--                 readahead_mb=32, ca_bundle=PATH, virtual_host=false, resumes=5,
--                 insecure=false (warned on every use) }
--               credentials: { access_key=, secret_key= } | { file=PATH } | { secret="ns/name" }
--               readahead_mb: MiB of the dump fetched ahead of the database's load (0: none)
--   state_dir   where runs are journaled
--   restore_jobs  connections that load the dump's tables side by side (default 1; pgr run --jobs wins)
--   lease_seconds how long the cluster's lease (pgr.lease) outlives a pgr that stopped renewing it (default 300)
--   kubeconfig  path (default: $KUBECONFIG, else ~/.kube/config, else in-cluster); context: name
--   postgres    { sslmode="require" | "verify-ca" | "verify-full" (| "prefer"...: warned), sslrootcert=PATH
--                 (the CA of the pods' certificates, for verify-*), channel_binding= (default: require
--                 with sslmode require) } for the connections to the database pods
--   keycloak    { token_url=URL|false (false: skip the token check), client_id="shasta", credentials_file=PATH|nil,
--                 insecure=false (warned on every use) }
--   The file itself must be root's or yours and writable by no one else (pgr.sys.trusted).
--   commands    name -> argv array (run directly, no shell) | string (run by /bin/sh -c) | false (skip)
--   safety_backup  pgr run's backup of the live cluster before its first destructive step: true (to S3
--               when the site has an S3 endpoint and credentials, else the state directory's backups/),
--               "s3", an absolute directory, or false (none: the run has no way back)
--   ca_file     the CA bundle (PEM) for TLS peers that name no CA of their own, tried after
--               $CURL_CA_BUNDLE and $SSL_CERT_FILE and before the system's (SUSE, RHEL, Debian) paths
local errors = require "pgr.errors"

local M = {}

M.DEFAULT_PATH = "/etc/pgr/site.lua"

-- Defaults are the values the CSM runbook itself uses, so an unconfigured site behaves like the
-- runbook on a standard system.
M.DEFAULTS = {
  nodes = nil,
  ssh = { user = "root", port = nil, identity = nil, options = {}, fanout = 32, timeout = 60 },
  s3 = { endpoint = nil, region = "us-east-1", bucket = "postgres-backup", credentials = nil, readahead_mb = 32 },
  -- the database pods: TLS as Spilo serves it (see pgr.security.pg_tls)
  postgres = { sslmode = "require", channel_binding = nil, sslrootcert = nil },
  state_dir = nil,
  restore_jobs = 1,
  lease_seconds = 300,
  safety_backup = true,
  kubeconfig = nil,
  context = nil,
  keycloak = {
    token_url = "https://api-gw-service-nmn.local/keycloak/realms/shasta/protocol/openid-connect/token",
    client_id = "shasta",
    credentials_file = nil,
  },
  commands = {
    -- on every node of `nodes`, by fan-out
    spire_restart_agent = { "systemctl", "restart", "spire-agent" },
    -- on this machine
    spire_fix_storage = { "/opt/cray/platform-utils/spire/fix-spire-on-storage.sh" },
    spire_verify_jwt = { "/usr/bin/heartbeat-spire-agent", "api", "fetch", "jwt",
                         "-socketPath=/root/spire/agent.sock", "-audience", "test" },
    hsm_verify = { "cray", "hsm", "service", "ready", "list" },
    hsm_rediscover = false,
    sls_verify = { "cray", "sls", "version", "list" },
    vcs_verify = false,
  },
}

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

function M.defaults() return copy(M.DEFAULTS) end

local function fail(path, field, msg)
  return nil, errors.new("site", ("%s: %s %s"):format(path, field, msg), { field = field, path = path })
end

local function is_argv(v)
  if type(v) ~= "table" or #v == 0 then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
  end
  return true
end

-- Field checks: each returns an error text or nil.
local function opt_type(v, t)
  if v ~= nil and type(v) ~= t then return ("must be a %s (got %s)"):format(t, type(v)) end
end

local function check_url(v)
  local e = opt_type(v, "string")
  if e then return e end
  if v and not v:match("^https?://[^/]+") then
    return ("must be an http:// or https:// URL (got %q)"):format(v)
  end
end

local KNOWN = { nodes = true, ssh = true, s3 = true, state_dir = true, kubeconfig = true,
                context = true, keycloak = true, commands = true, restore_jobs = true, lease_seconds = true,
                postgres = true, safety_backup = true, ca_file = true }

-- The fields of the sub-tables, checked as the top-level ones are: a misspelt key is an error that
-- names it, never a setting silently ignored.
local KNOWN_SUB = {
  ssh = { "fanout", "identity", "options", "port", "program", "timeout", "user" },
  s3 = { "bucket", "ca_bundle", "credentials", "endpoint", "insecure", "readahead_mb", "region", "resumes",
          "virtual_host" },
  ["s3.credentials"] = { "access_key", "file", "secret", "secret_key" },
  keycloak = { "client_id", "credentials_file", "insecure", "token_url" },
  postgres = { "channel_binding", "sslmode", "sslrootcert" },
}

local SSLMODES = { disable = true, allow = true, prefer = true, require = true, ["verify-ca"] = true,
                   ["verify-full"] = true }
local CHANNEL_BINDINGS = { disable = true, prefer = true, require = true }

local function unknown_key(t, name, path)
  if type(t) ~= "table" then return nil end
  local known = {}
  for _, k in ipairs(KNOWN_SUB[name]) do known[k] = true end
  for k in pairs(t) do
    if not known[k] then
      return fail(path, name .. "." .. tostring(k), ("is not a field of %s (known: %s)"):format(name,
        table.concat(KNOWN_SUB[name], ", ")))
    end
  end
end

-- ssh's options that take the next word as their argument (ssh(1)); any other word must be an
-- option itself: a bare "StrictHostKeyChecking=yes" would reach ssh as the host name.
local SSH_ARG_OPTIONS = {}
for c in ("BbcDEeFIiJLlmOopQRSWw"):gmatch(".") do SSH_ARG_OPTIONS["-" .. c] = true end

local function check_ssh_options(opts, path)
  if type(opts) ~= "table" then return fail(path, "ssh.options", "must be a list of ssh arguments") end
  local n = #opts
  for k in pairs(opts) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return fail(path, "ssh.options", "must be a list of ssh arguments, such as { \"-o\", \"StrictHostKeyChecking=yes\" }")
    end
  end
  local i = 1
  while i <= n do
    local w = opts[i]
    if type(w) ~= "string" then
      return fail(path, ("ssh.options[%d]"):format(i), ("must be a string (got %s)"):format(type(w)))
    end
    if w:sub(1, 1) ~= "-" or w == "-" or w == "--" then
      return fail(path, ("ssh.options[%d]"):format(i), ("%q is not an ssh option: ssh would take it for the host "
        .. "name; write \"-o\", %q (or \"-o%s\")"):format(w, w, w))
    end
    if SSH_ARG_OPTIONS[w] then
      if type(opts[i + 1]) ~= "string" then
        return fail(path, ("ssh.options[%d]"):format(i), ("%s needs its argument as the next word"):format(w))
      end
      i = i + 2
    else
      i = i + 1
    end
  end
end

local function validate(t, path)
  for k in pairs(t) do
    if not KNOWN[k] then
      return fail(path, tostring(k), "is not a site field (known: ca_file, commands, context, keycloak, "
        .. "kubeconfig, lease_seconds, nodes, postgres, restore_jobs, s3, safety_backup, ssh, state_dir)")
    end
  end
  for _, f in ipairs({ "nodes", "state_dir", "kubeconfig", "context", "ca_file" }) do
    local e = opt_type(t[f], "string")
    if e then return fail(path, f, e) end
  end
  if t.nodes and not t.nodes:match("%S") then return fail(path, "nodes", "is empty") end
  local rj = t.restore_jobs
  if rj ~= nil and (math.type(rj) ~= "integer" or rj < 1 or rj > 64) then
    return fail(path, "restore_jobs", "must be a whole number from 1 to 64")
  end
  local ls = t.lease_seconds
  if ls ~= nil and (math.type(ls) ~= "integer" or ls < 1 or ls > 86400) then
    return fail(path, "lease_seconds", "must be a whole number of seconds from 1 to 86400")
  end
  local sb = t.safety_backup
  if sb ~= nil and sb ~= true and sb ~= false and sb ~= "s3" and not (type(sb) == "string" and sb:match("^/")) then
    return fail(path, "safety_backup", "must be true, false, \"s3\" or an absolute directory")
  end
  for _, f in ipairs({ "ssh", "s3", "keycloak", "commands", "postgres" }) do
    local e = opt_type(t[f], "table")
    if e then return fail(path, f, e) end
  end
  for _, name in ipairs({ "ssh", "s3", "keycloak", "postgres" }) do
    local ok, e = unknown_key(t[name], name, path)
    if ok == nil and e then return nil, e end
  end
  if t.s3 and type(t.s3.credentials) == "table" then
    local ok, e = unknown_key(t.s3.credentials, "s3.credentials", path)
    if ok == nil and e then return nil, e end
  end
  for _, f in ipairs({ "s3.insecure", "s3.virtual_host", "keycloak.insecure" }) do
    local top, sub = f:match("^(%w+)%.(.+)$")
    local v = t[top] and t[top][sub]
    if v ~= nil and type(v) ~= "boolean" then return fail(path, f, "must be true or false") end
  end
  if t.postgres then
    local pgs = t.postgres
    if pgs.sslmode ~= nil and not SSLMODES[pgs.sslmode] then
      return fail(path, "postgres.sslmode", "must be one of require, verify-ca, verify-full (or, for databases "
        .. "without TLS, prefer, allow, disable)")
    end
    if pgs.channel_binding ~= nil and not CHANNEL_BINDINGS[pgs.channel_binding] then
      return fail(path, "postgres.channel_binding", "must be require, prefer or disable")
    end
    local e = opt_type(pgs.sslrootcert, "string")
    if e then return fail(path, "postgres.sslrootcert", e) end
    if (pgs.sslmode == "verify-ca" or pgs.sslmode == "verify-full") and not pgs.sslrootcert then
      return fail(path, "postgres.sslrootcert", ("is needed with sslmode %q: the CA that signed the database "
        .. "pods' certificates (PEM)"):format(pgs.sslmode))
    end
    if pgs.sslrootcert then
      local f = io.open(pgs.sslrootcert, "r")
      if not f then return fail(path, "postgres.sslrootcert", ("%s cannot be read"):format(pgs.sslrootcert)) end
      f:close()
    end
  end
  if t.ssh then
    if t.ssh.program ~= nil and (type(t.ssh.program) ~= "string" or t.ssh.program == "") then
      return fail(path, "ssh.program", "must be the ssh program to run (a path or a name on PATH)")
    end
    for _, f in ipairs({ "user", "identity" }) do
      local e = opt_type(t.ssh[f], "string")
      if e then return fail(path, "ssh." .. f, e) end
    end
    for _, f in ipairs({ "port", "fanout", "timeout" }) do
      local v = t.ssh[f]
      if v ~= nil and (type(v) ~= "number" or v <= 0) then
        return fail(path, "ssh." .. f, "must be a positive number")
      end
    end
    if t.ssh.options ~= nil then
      local ok, e = check_ssh_options(t.ssh.options, path)
      if ok == nil and e then return nil, e end
    end
  end
  if t.s3 then
    local e = check_url(t.s3.endpoint)
    if e then return fail(path, "s3.endpoint", e) end
    for _, f in ipairs({ "region", "bucket", "ca_bundle" }) do
      e = opt_type(t.s3[f], "string")
      if e then return fail(path, "s3." .. f, e) end
    end
    local ra = t.s3.readahead_mb
    if ra ~= nil and (math.type(ra) ~= "integer" or ra < 0 or ra > 4096) then
      return fail(path, "s3.readahead_mb", "must be a whole number of MiB from 0 (no read-ahead) to 4096")
    end
    if t.s3.insecure and t.s3.ca_bundle then
      return fail(path, "s3.insecure", "and s3.ca_bundle exclude each other: verify against the CA, or not at all")
    end
    local r = t.s3.resumes
    if r ~= nil and (math.type(r) ~= "integer" or r < 0) then
      return fail(path, "s3.resumes", "must be a whole number, 0 or more")
    end
    local c = t.s3.credentials
    if c ~= nil then
      if type(c) ~= "table" then return fail(path, "s3.credentials", "must be a table") end
      if c.access_key or c.secret_key then
        if type(c.access_key) ~= "string" or type(c.secret_key) ~= "string" then
          return fail(path, "s3.credentials", "needs both access_key and secret_key as strings")
        end
      elseif c.file then
        e = opt_type(c.file, "string")
        if e then return fail(path, "s3.credentials.file", e) end
      elseif c.secret then
        if type(c.secret) ~= "string" or not c.secret:match("^[%w.-]+/[%w.-]+$") then
          return fail(path, "s3.credentials.secret", 'must be "namespace/name" of a Kubernetes secret')
        end
      else
        return fail(path, "s3.credentials", "needs access_key+secret_key, file= or secret=")
      end
    end
  end
  if t.keycloak then
    local e = t.keycloak.token_url ~= false and check_url(t.keycloak.token_url) or nil
    if e then return fail(path, "keycloak.token_url", e) end
    for _, f in ipairs({ "client_id", "credentials_file" }) do
      e = opt_type(t.keycloak[f], "string")
      if e then return fail(path, "keycloak." .. f, e) end
    end
  end
  if t.commands then
    for name, v in pairs(t.commands) do
      if type(name) ~= "string" then return fail(path, "commands", "keys must be names") end
      if not (v == false or type(v) == "string" or is_argv(v)) then
        return fail(path, "commands." .. name,
          "must be an argv list of strings, a shell command string, or false to skip it")
      end
    end
  end
  return true
end

local function merge(base, over)
  for k, v in pairs(over) do
    if type(v) == "table" and type(base[k]) == "table" and not is_argv(v) then
      for k2, v2 in pairs(v) do base[k][k2] = copy(v2) end
    else
      base[k] = copy(v)
    end
  end
  return base
end

function M.load(path)
  local explicit = path or os.getenv("PGR_SITE")
  if explicit == "" then explicit = nil end
  path = explicit or M.DEFAULT_PATH
  local f = io.open(path, "r")
  if f then
    -- it configures what runs as root: root's or yours, and writable by no one else
    local trusted, terr = require("pgr.sys").trusted(path)
    if not trusted then
      f:close()
      return nil, errors.new("site", ("refusing the site file %s: %s"):format(path, terr.message), { path = path })
    end
  end
  if not f then
    if not explicit then
      local s = M.defaults()
      s.path = nil
      return s
    end
    return nil, errors.new("site", ("site file %s cannot be read (PGR_SITE or --site names it)")
      :format(path), { path = path })
  end
  local src = f:read("a")
  f:close()
  -- an empty file (PGR_SITE=/dev/null) is a site without settings: the defaults
  if not src:match("%S") then src = "return {}" end
  -- the site file sees a small environment: it is configuration, not a program
  local env = { os = { getenv = os.getenv }, string = string, table = table, tostring = tostring,
                tonumber = tonumber, ipairs = ipairs, pairs = pairs }
  local chunk, err = load(src, "@" .. path, "t", env)
  if not chunk then return nil, errors.new("site", ("site file %s: %s"):format(path, err), { path = path }) end
  local ok, t = pcall(chunk)
  if not ok then return nil, errors.new("site", ("site file %s: %s"):format(path, tostring(t)), { path = path }) end
  if type(t) ~= "table" then
    return nil, errors.new("site", ("site file %s must return a table (got %s)"):format(path, type(t)),
      { path = path })
  end
  local valid, verr = validate(t, path)
  if not valid then return nil, verr end
  local s = merge(M.defaults(), t)
  s.path = path
  -- the site's CA bundle serves every TLS connection of this process that names none
  require("pgr.http").set_ca_file(s.ca_file)
  return s
end

function M.state_dir(s)
  local d = os.getenv("PGR_STATE_DIR")
  if d and d ~= "" then return d end
  if s and s.state_dir then return s.state_dir end
  d = os.getenv("XDG_STATE_HOME")
  if d and d ~= "" then return d .. "/pgr" end
  return (os.getenv("HOME") or "/root") .. "/.local/state/pgr"
end

function M.command(s, name)
  local cmds = (s and s.commands) or M.DEFAULTS.commands
  local v = cmds[name]
  if v == nil and M.DEFAULTS.commands[name] == nil then
    return nil, errors.new("site", ("no command %q in the site's commands"):format(name))
  end
  if v == nil or v == false then return nil end
  if type(v) == "string" then return { "/bin/sh", "-c", v } end
  return copy(v)
end

return M
