-- pgr.kubeconfig: where pgr finds the API server and its credentials — kubeconfig files merged by
-- kubectl's rules (KUBECONFIG, ~/.kube/config, --context), or the in-cluster service account.
local errors = require "pgr.errors"

local M = {}

-- The service account files a pod sees (overridable for tests through opts.serviceaccount).
M.SERVICEACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

local function fail(fmt, ...)
  return nil, errors.new("kubeconfig", "kubeconfig: " .. fmt:format(...))
end

local function json_null()
  local ok, json = pcall(require, "pgr.json")
  return ok and json.null or nil
end

-- yaml null (json.null) and absent are the same thing for a kubeconfig field.
local NULL = json_null()
local function val(v)
  if v == nil or v == NULL then return nil end
  return v
end

local function read_all(path)
  local f, msg = io.open(path, "rb")
  if not f then return nil, msg end
  local s = f:read("a")
  f:close()
  return s
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- A path inside a kubeconfig is relative to the file that holds it (client-go ResolvePaths).
local function resolve(path, base)
  path = val(path)
  if path == nil or path == "" then return nil end
  if path:sub(1, 1) == "/" then return path end
  return base .. "/" .. path
end

local function getenv(opts, name)
  if opts.env then return opts.env[name] end
  return os.getenv(name)
end

-- Parses one kubeconfig file into {clusters={name=entry}, users=..., contexts=..., current}.
-- Each entry remembers the directory of its file, for relative paths.
local function parse_file(path, text)
  local yaml = require "pgr.yaml"
  local parsed = { clusters = {}, users = {}, contexts = {}, order = { clusters = {}, users = {}, contexts = {} } }
  if text:match("^%s*$") then return parsed end
  local docs, err = yaml.decode(text)
  if not docs then return fail("%s: %s", path, tostring(err and err.message or err)) end
  local doc = val(docs[1])
  if doc == nil then return parsed end
  if type(doc) ~= "table" then return fail("%s: not a kubeconfig (a mapping was expected)", path) end
  local base = dirname(path)
  for _, section in ipairs { { "clusters", "cluster" }, { "users", "user" }, { "contexts", "context" } } do
    local list, key = val(doc[section[1]]), section[2]
    if list ~= nil then
      if type(list) ~= "table" then return fail("%s: '%s' must be a list", path, section[1]) end
      for i, item in ipairs(list) do
        local name = type(item) == "table" and val(item.name)
        if type(name) ~= "string" or name == "" then
          return fail("%s: %s entry %d has no name", path, section[1], i)
        end
        local body = val(item[key]) or {}
        if type(body) ~= "table" then return fail("%s: %s '%s' is not a mapping", path, key, name) end
        -- the first definition of a name wins, also within one file (kubectl keeps the first)
        if parsed[section[1]][name] == nil then
          parsed[section[1]][name] = { body = body, base = base, file = path }
          table.insert(parsed.order[section[1]], name)
        end
      end
    end
  end
  local cc = val(doc["current-context"])
  if type(cc) == "string" and cc ~= "" then parsed.current = cc end
  return parsed
end

-- The files kubectl would read, in priority order, and whether they must exist.
function M.files(opts)
  opts = opts or {}
  if opts.kubeconfig and opts.kubeconfig ~= "" then return { opts.kubeconfig }, true end
  local env = getenv(opts, "KUBECONFIG")
  if env and env ~= "" then
    local list, seen = {}, {}
    for p in (env .. ":"):gmatch("([^:]*):") do
      if p ~= "" and not seen[p] then
        seen[p] = true
        list[#list + 1] = p
      end
    end
    return list, false
  end
  local home = getenv(opts, "HOME") or ""
  return { home .. "/.kube/config" }, false
end

-- Merges kubeconfig files as client-go's loader does: the first file to define a cluster, user or
-- context name wins it whole, and the first file to set current-context wins that.
function M.merge(paths, must_exist)
  local merged = { clusters = {}, users = {}, contexts = {}, files = {},
                   order = { clusters = {}, users = {}, contexts = {} } }
  for _, path in ipairs(paths) do
    local text, msg = read_all(path)
    if not text then
      if must_exist or file_exists(path) then return fail("cannot read %s: %s", path, msg) end
    else
      local one, err = parse_file(path, text)
      if not one then return nil, err end
      merged.files[#merged.files + 1] = path
      for _, section in ipairs { "clusters", "users", "contexts" } do
        for _, name in ipairs(one.order[section]) do
          if merged[section][name] == nil then
            merged[section][name] = one[section][name]
            table.insert(merged.order[section], name)
          end
        end
      end
      if merged.current == nil then merged.current = one.current end
    end
  end
  return merged
end

local function names(section)
  local list = {}
  for _, n in ipairs(section) do list[#list + 1] = "'" .. n .. "'" end
  table.sort(list)
  return #list > 0 and table.concat(list, ", ") or "none"
end

local function b64(value, what)
  local base64 = require "pgr.base64"
  local s, err = base64.decode(value)
  if not s then return fail("%s is not valid base64 (%s)", what, tostring(err and err.message or err)) end
  return s
end

local function truthy(v)
  v = val(v)
  return v == true or v == "true"
end

-- Turns a merged config and a context name into the connection settings pgr.k8s.core takes.
local function settings_from(merged, opts)
  local ctx_name = opts.context
  if ctx_name == nil or ctx_name == "" then ctx_name = merged.current end
  if ctx_name == nil then
    return fail("current-context is not set in %s; use --context (contexts are: %s)",
      table.concat(merged.files, ", "), names(merged.order.contexts))
  end
  local ctx = merged.contexts[ctx_name]
  if not ctx then
    return fail("context '%s' not found; contexts are: %s", ctx_name, names(merged.order.contexts))
  end
  local cluster_name, user_name = val(ctx.body.cluster), val(ctx.body.user)
  if type(cluster_name) ~= "string" or cluster_name == "" then
    return fail("context '%s' (%s) names no cluster", ctx_name, ctx.file)
  end
  local cl = merged.clusters[cluster_name]
  if not cl then
    return fail("cluster '%s' of context '%s' not found; clusters are: %s", cluster_name, ctx_name,
      names(merged.order.clusters))
  end
  local c = cl.body
  local server = val(c.server)
  if type(server) ~= "string" or server == "" then
    return fail("cluster '%s' (%s) has no server", cluster_name, cl.file)
  end
  local s = {
    context = ctx_name, cluster = cluster_name, user = user_name, server = server:gsub("/+$", ""),
    namespace = val(ctx.body.namespace), files = merged.files,
    insecure = truthy(c["insecure-skip-tls-verify"]),
  }
  if s.namespace == "" then s.namespace = nil end
  for _, unsupported in ipairs { "proxy-url", "tls-server-name" } do
    if val(c[unsupported]) then
      return fail("cluster '%s' (%s) sets %s, which pgr does not support", cluster_name, cl.file, unsupported)
    end
  end
  local ca_file, ca_data = resolve(c["certificate-authority"], cl.base), val(c["certificate-authority-data"])
  if ca_data then
    local err
    s.ca_data, err = b64(ca_data, ("cluster '%s' certificate-authority-data"):format(cluster_name))
    if not s.ca_data then return nil, err end
  elseif ca_file then
    if not file_exists(ca_file) then
      return fail("cluster '%s' certificate-authority %s cannot be read (%s)", cluster_name, ca_file, cl.file)
    end
    s.ca_file = ca_file
  end
  -- said in TLS errors: which file and field the server's certificate was checked against
  if s.ca_data then
    s.ca_source = ("certificate-authority-data of cluster '%s' (%s)"):format(cluster_name, cl.file)
  elseif s.ca_file then
    s.ca_source = ("certificate-authority %s of cluster '%s' (%s)"):format(s.ca_file, cluster_name, cl.file)
  else
    s.ca_source = ("the system's CA store (cluster '%s' in %s sets no certificate-authority)"):format(cluster_name, cl.file)
  end
  if s.insecure and (s.ca_data or s.ca_file) then
    return fail("cluster '%s' sets both insecure-skip-tls-verify and a certificate authority (%s)",
      cluster_name, cl.file)
  end
  if user_name ~= nil and user_name ~= "" then
    local u = merged.users[user_name]
    if not u then
      return fail("user '%s' of context '%s' not found; users are: %s", user_name, ctx_name,
        names(merged.order.users))
    end
    local b = u.body
    local where = ("user '%s' (%s)"):format(user_name, u.file)
    if val(b.exec) then
      return fail("%s uses an exec credential plugin, which pgr does not run; give it a token or a client certificate", where)
    end
    if val(b["auth-provider"]) then
      return fail("%s uses an auth-provider, which pgr does not support; give it a token or a client certificate", where)
    end
    if val(b.as) or val(b["as-groups"]) then
      return fail("%s asks for impersonation ('as'), which pgr does not support", where)
    end
    -- a literal token wins over tokenFile (client-go reads the file only when token is empty)
    local token = val(b.token)
    if (token == nil or token == "") and val(b.tokenFile) then
      local path = resolve(b.tokenFile, u.base)
      local t, msg = read_all(path)
      if not t then return fail("%s tokenFile %s cannot be read: %s", where, path, msg) end
      token = t:gsub("%s+$", "")
      s.token_file = path
    end
    if token == "" then token = nil end
    s.token = token
    s.auth_source = ("user '%s' (%s)"):format(user_name, u.file)
    local username, password = val(b.username), val(b.password)
    if username == "" then username = nil end
    if token and (username or password) then
      return fail("%s has more than one authentication method (token and username/password); only one is allowed", where)
    end
    s.username, s.password = username, password
    for _, part in ipairs { { "client-certificate", "cert" }, { "client-key", "key" } } do
      local file, data = resolve(b[part[1]], u.base), val(b[part[1] .. "-data"])
      if file and data then
        return fail("%s sets both %s-data and %s; only one is allowed", where, part[1], part[1])
      end
      if data then
        local err
        s[part[2] .. "_data"], err = b64(data, where .. " " .. part[1] .. "-data")
        if not s[part[2] .. "_data"] then return nil, err end
      elseif file then
        if not file_exists(file) then return fail("%s %s %s cannot be read", where, part[1], file) end
        s[part[2] .. "_file"] = file
      end
    end
    local has_cert, has_key = s.cert_data or s.cert_file, s.key_data or s.key_file
    if has_cert and not has_key then
      return fail("%s has a client-certificate but no client-key", where)
    elseif has_key and not has_cert then
      return fail("%s has a client-key but no client-certificate", where)
    end
  end
  return s
end

-- The in-cluster configuration (rest.InClusterConfig): service account token and CA, API address
-- from KUBERNETES_SERVICE_HOST/PORT. nil when not running in a pod.
function M.in_cluster(opts)
  opts = opts or {}
  local host, port = getenv(opts, "KUBERNETES_SERVICE_HOST"), getenv(opts, "KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then
    return fail("not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set)")
  end
  local dir = opts.serviceaccount or M.SERVICEACCOUNT
  local token, msg = read_all(dir .. "/token")
  if not token then return fail("in-cluster token %s/token cannot be read: %s", dir, msg) end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  local s = {
    context = "in-cluster", server = "https://" .. host .. ":" .. port, token = token:gsub("%s+$", ""),
    token_file = dir .. "/token", files = {},
  }
  if file_exists(dir .. "/ca.crt") then s.ca_file = dir .. "/ca.crt" end
  s.ca_source = s.ca_file and ("the service account's " .. s.ca_file) or "the system's CA store"
  s.auth_source = "the service account token " .. dir .. "/token"
  local ns = read_all(dir .. "/namespace")
  if ns then
    ns = ns:gsub("%s+$", "")
    if ns ~= "" then s.namespace = ns end
  end
  return s
end

-- The connection settings kubectl would use. opts: kubeconfig= (like --kubeconfig), context=,
-- namespace= (like -n), env= (a table replacing os.getenv, for tests), serviceaccount= (dir).
-- Returns {server, namespace, context, ca_file|ca_data, insecure, token, cert_*, key_*, ...} | nil, err.
function M.load(opts)
  opts = opts or {}
  local paths, explicit = M.files(opts)
  local merged, err = M.merge(paths, explicit)
  if not merged then return nil, err end
  local s
  if #merged.files == 0 and not explicit and (opts.context == nil or opts.context == "") then
    -- nothing on disk: kubectl falls back to the pod's service account
    local ic, icerr = M.in_cluster(opts)
    if not ic then
      return fail("no configuration: %s not found and %s", table.concat(paths, ", "),
        icerr.message:gsub("^kubeconfig: ", ""))
    end
    s = ic
  else
    s, err = settings_from(merged, opts)
    if not s then return nil, err end
  end
  if opts.namespace and opts.namespace ~= "" then s.namespace = opts.namespace end
  s.namespace = s.namespace or "default"
  return s
end

return M
