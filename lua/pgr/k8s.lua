-- pgr.k8s: the Kubernetes API as the runbook needs it, with kubectl's semantics — discovery, objects,
-- scale, watch-based waits, rollout restart/status, replace --force, apply, secrets, access reviews.
--
--   local k8s = require "pgr.k8s"
--   local k = assert(k8s.connect{ context = nil, namespace = "spire" })  -- kubeconfig as kubectl reads it
--   k:get("sts", "spire-server")                         -> object | nil, err
--   k:list("pods", { labels = "app=x", fields = "status.phase=Running" }) -> items, list
--   k:create(obj) / k:replace(obj) / k:patch(kind, name, patch, { type = "merge" })
--   k:delete(kind, name, { propagation = "Foreground", wait = true })
--   k:scale("sts", "spire-server", 0)                    -> previous replicas
--   k:wait_for("postgresql", "spire-postgres", function(o) return o and o.status.PostgresClusterStatus == "Running" end,
--              { timeout = 600, describe = "the spire-postgres cluster to run" })
--   k:pods_gone("app=x"), k:pods_ready("app=x", 3)
--   k:rollout_restart("deploy", "x"), k:rollout_status("sts", "x")
--   k:replace_force(obj), k:apply_manifest(yaml_text), k:secret("name"), k:can_i("delete", "pods"),
--   k:pod_log("pod", {container=, tail=})
--   k:exec("spire-postgres-0", { "psql", "-U", "postgres", "-c", "select 1" }, { container = "postgres" })
--     -> { code = 0, ok = true, stdout = "...", stderr = "" } (kubectl exec over a WebSocket)
--   local w = k:watch("pods", { labels = "app=x" })     -- survives cuts (resumes) and 410 (re-lists)
--   for ev in w:events(30) do ... end; w:next(seconds) -> event | false | nil, err; w.objects; w:close()
-- A wait target is a name, a label selector string with '=' or '!' ("app=x"), or {labels=, fields=}
-- (use {labels="app"} for an existence selector).
-- Every method also exists as a module function on the default client (k8s.configure(opts) sets
-- its options): k8s.get("sts", "x", { namespace = "spire" }).
--
-- Errors: API failures are the server's Status: err.code = HTTP status (404), err.reason ("NotFound"),
-- err.message (naming the object and a kubectl line to look); transport failures have a string
-- err.code ("connect", "timeout", "tls", ...); waits that time out have code "timeout" and err.last.
local core = require "pgr.k8s.core"
local json = require "pgr.json"
local errors = require "pgr.errors"
local sys = require "pgr.sys"
local kubeconfig = require "pgr.kubeconfig"

local M = {}

-- Policy a site may tune.
M.defaults = {
  timeout = 30,          -- seconds for one request
  wait_timeout = 300,    -- seconds for a wait (kubectl replace --force waits 5 minutes)
  attempts = 5,          -- tries of an idempotent request on connection errors, 429 and 5xx
  backoff = 0.2,         -- first backoff (doubles, full jitter) ...
  backoff_max = 5,       -- ... up to this
  retry_after_max = 30,  -- a longer Retry-After is not honoured in full
  watch_seconds = 290,   -- timeoutSeconds asked of the server for one watch connection
  watch_idle = 90,       -- a watch silent this long (no event, no bookmark) is re-opened
  exec_timeout = 3600,   -- seconds an exec'd command may run (k:exec's timeout=)
  exec_idle = 600,       -- seconds an exec'd command may stay silent, no output at all (idle=)
  exec_collect = 64 << 20, -- bytes of output collected when no on_stdout/on_stderr takes them
}

M.LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

local NULL = json.null

local Client = {}
Client.__index = Client

local function now() return sys.now() end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function query_string(q)
  if not q then return "" end
  local keys = {}
  for k, v in pairs(q) do if v ~= nil and v ~= false then keys[#keys + 1] = k end end
  if #keys == 0 then return "" end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(q[k]) end
  return "?" .. table.concat(parts, "&")
end

-- {app="x", tier="db"} or "app=x,tier=db" -> "app=x,tier=db"
local function selector_string(sel)
  if sel == nil then return nil end
  if type(sel) == "string" then return sel ~= "" and sel or nil end
  local keys = {}
  for k in pairs(sel) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(sel[k]) end
  return #parts > 0 and table.concat(parts, ",") or nil
end
M.selector_string = selector_string

local function deepcopy(v)
  if type(v) ~= "table" or v == NULL then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deepcopy(x) end
  return setmetatable(t, getmetatable(v))
end
M.deepcopy = deepcopy

local function field(obj, ...)
  local v = obj
  for _, k in ipairs { ... } do
    if type(v) ~= "table" or v == NULL then return nil end
    v = v[k]
  end
  if v == NULL then return nil end
  return v
end
M.field = field

-- Lua's `==` on decoded JSON values, recursively; arrays and objects compare by content.
local function equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" or a == NULL or b == NULL then return false end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.equal = equal

local function is_array(t)
  if getmetatable(t) == json.array_mt then return true end
  if getmetatable(t) == json.object_mt then return false end
  return #t > 0 and next(t, #t) == nil
end

------------------------------------------------------------------------------------------------
-- errors

local function status_error(status, body, headers, what)
  local st
  if body and body ~= "" then
    local ok, v = pcall(json.decode, body)
    if ok and type(v) == "table" and v.kind == "Status" then st = v end
  end
  local reason = st and st.reason or (status == 404 and "NotFound") or "Failure"
  local msg = st and st.message or (body ~= "" and body:sub(1, 300)) or ("HTTP " .. status)
  local err = errors.new(tostring(reason), what and (what .. ": " .. msg) or msg, {
    reason = reason, details = st and st.details or nil, status = st, server_message = msg,
  })
  err.code = status
  if headers and headers["retry-after"] then err.retry_after = tonumber(headers["retry-after"]) end
  return err
end

function M.is_not_found(err) return type(err) == "table" and err.code == 404 end
function M.is_conflict(err) return type(err) == "table" and err.code == 409 end

------------------------------------------------------------------------------------------------
-- connection

-- connect(opts) -> client | nil, err.  opts: the pgr.kubeconfig.load options (kubeconfig=,
-- context=, namespace=, env=, serviceaccount=), or settings= (a table load() returned);
-- timeout= (seconds per request); attempts= (tries of a request that may be repeated; default
-- M.defaults.attempts).
function M.connect(opts)
  opts = opts or {}
  local s = opts.settings
  if not s then
    local err
    s, err = kubeconfig.load(opts)
    if not s then return nil, err end
  end
  require("pgr.security").check_endpoint(s.server, "the Kubernetes API server", { insecure = s.insecure,
    where = ("insecure-skip-tls-verify of cluster '%s' in the kubeconfig"):format(tostring(s.cluster)),
    secret = "the credentials" })
  local timeout = opts.timeout or M.defaults.timeout
  local c, err = core.client {
    server = s.server, ca_file = s.ca_file, ca_data = s.ca_data, insecure = s.insecure,
    cert_file = s.cert_file, cert_data = s.cert_data, key_file = s.key_file, key_data = s.key_data,
    token = s.token, username = s.username, password = s.password, timeout = timeout,
  }
  if not c then return nil, err end
  return setmetatable({
    core = c, server = s.server, namespace = opts.namespace or s.namespace or "default",
    context = s.context, timeout = timeout, resources = nil, attempts = opts.attempts,
    ca_source = s.ca_source, auth_source = s.auth_source,
  }, Client)
end

function Client:close()
  if self.core then self.core:close() end
end
Client.__close = Client.close

local function sleep_jitter(attempt, retry_after)
  local d = math.min(M.defaults.backoff_max, M.defaults.backoff * 2 ^ (attempt - 1))
  d = d * (0.5 + math.random() * 0.5)
  if retry_after then d = math.max(d, math.min(retry_after, M.defaults.retry_after_max)) end
  sys.sleep(d)
end

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true }
-- transport failures where the request never reached the server: safe to repeat any method
local NOT_SENT = { connect = true, resolve = true }
local TRANSIENT = { connect = true, resolve = true, timeout = true, transfer = true }

-- The one request path: method, path (+ query table), body (table -> JSON), content type.
-- Returns the decoded body (a table; {} for an empty body) and the headers | nil, err.
function Client:request(method, path, query, body, ctype, opts)
  opts = opts or {}
  if type(body) == "table" then
    local s, err = json.encode(body)
    if not s then return nil, err end
    body, ctype = s, ctype or "application/json"
  end
  local full = path .. query_string(query)
  local what = opts.what or (method .. " " .. path)
  local attempts = opts.attempts or self.attempts or M.defaults.attempts
  local status, rbody, headers
  local maybe_applied = false  -- an earlier attempt may have reached the server (timeout, cut, 5xx)
  for attempt = 1, attempts do
    status, rbody, headers = self.core:request(method, full, body, ctype, { timeout = opts.timeout or self.timeout })
    local retry, retry_after = false, nil
    if not status then
      local err = rbody
      retry = TRANSIENT[err.code] and (IDEMPOTENT[method] or NOT_SENT[err.code])
      if not retry or attempt == attempts then
        err.message = what .. ": " .. err.message
        if err.code == "tls" and self.ca_source then
          err.message = err.message .. "; the server's certificate was checked against " .. self.ca_source
        end
        return nil, err
      end
    elseif status == 429 or (status >= 500 and IDEMPOTENT[method]) then
      retry = attempt < attempts
      retry_after = tonumber(headers["retry-after"])
    end
    if not retry then break end
    if method == "DELETE" and not (not status and NOT_SENT[rbody.code]) and status ~= 429 then
      maybe_applied = true
    end
    sleep_jitter(attempt, retry_after)
  end
  if status == 404 and maybe_applied then
    -- the DELETE an earlier attempt sent was applied: done, as kubectl would report it
    return {}, headers
  end
  if status >= 400 then
    local err = status_error(status, rbody, headers, what)
    if status == 401 then
      err.hint = ("(the server refused the credentials of %s)"):format(self.auth_source or "this client")
      err.message = err.message .. " " .. err.hint
    end
    return nil, err
  end
  if rbody == "" then return {}, headers end
  local v, err = json.decode(rbody)
  if v == nil then return nil, errors.new("json", what .. ": the server's answer is not JSON: " .. tostring(err)) end
  return v, headers
end

------------------------------------------------------------------------------------------------
-- discovery: names as kubectl takes them (plural, singular, kind, short name, "plural.group")

local function add_resources(list, group, version, rl)
  local subs = {}
  for _, r in ipairs(rl.resources or {}) do
    local base, sub = r.name:match("^([^/]+)/(.+)$")
    if base then
      subs[base] = subs[base] or {}
      subs[base][sub] = true
    end
  end
  for _, r in ipairs(rl.resources or {}) do
    if not r.name:find("/", 1, true) then
      local verbs = {}
      for _, v in ipairs(r.verbs or {}) do verbs[v] = true end
      local short = {}
      for _, s in ipairs(field(r, "shortNames") or {}) do short[#short + 1] = s:lower() end
      list[#list + 1] = {
        group = group, version = version, name = r.name, kind = r.kind,
        singular = (r.singularName ~= nil and r.singularName ~= "" and r.singularName or r.kind:lower()),
        namespaced = r.namespaced == true, verbs = verbs, short = short, subresources = subs[r.name] or {},
        api_version = group == "" and version or (group .. "/" .. version),
      }
    end
  end
end

function Client:discover(refresh)
  if self.resources and not refresh then return self.resources end
  local list = {}
  local core_rl, err = self:request("GET", "/api/v1", nil, nil, nil, { what = "discovery /api/v1" })
  if not core_rl then return nil, err end
  add_resources(list, "", "v1", core_rl)
  local groups
  groups, err = self:request("GET", "/apis", nil, nil, nil, { what = "discovery /apis" })
  if not groups then return nil, err end
  for _, g in ipairs(groups.groups or {}) do
    local pv = field(g, "preferredVersion", "version") or field(g, "versions", 1, "version")
    if pv then
      local rl
      rl, err = self:request("GET", "/apis/" .. g.name .. "/" .. pv, nil, nil, nil,
        { what = "discovery /apis/" .. g.name })
      if rl then
        add_resources(list, g.name, pv, rl)
      elseif err.code ~= 404 and err.code ~= 503 then
        return nil, err
      end
    end
  end
  self.resources = list
  return list
end

-- resource("sts") -> {group, version, name (plural), kind, namespaced, verbs, subresources, api_version}
function Client:resource(name)
  if type(name) == "table" then return name end
  local list, err = self:discover()
  if not list then return nil, err end
  local want, group = name:lower(), nil
  -- "statefulsets.apps", "postgresqls.acid.zalan.do"
  local head, tail = want:match("^([^.]+)%.(.+)$")
  local function pick(n, g)
    for _, match in ipairs {
      function(r) return r.name == n end,
      function(r) return r.singular == n end,
      function(r) return r.kind:lower() == n end,
      function(r) for _, s in ipairs(r.short) do if s == n then return true end end end,
    } do
      for _, r in ipairs(list) do
        if (g == nil or r.group == g) and match(r) then return r end
      end
    end
  end
  local r = pick(want)
  if not r and head then r, group = pick(head, tail), tail end
  if r then return r end
  -- a second chance: the API may have grown (a CRD installed since)
  if not self._rediscovered then
    self._rediscovered = true
    self.resources = nil
    return self:resource(name)
  end
  return nil, errors.new("unknown_resource", ("the server doesn't have a resource type \"%s\"%s (kubectl api-resources)")
    :format(name, group and (" in group " .. group) or ""))
end

-- resource for an object: by apiVersion + kind
function Client:resource_for(obj)
  local kind, av = obj.kind, obj.apiVersion
  if type(kind) ~= "string" or type(av) ~= "string" then
    return nil, errors.new("invalid", "object has no kind/apiVersion")
  end
  local list, err = self:discover()
  if not list then return nil, err end
  for pass = 1, 2 do
    for _, r in ipairs(list) do
      if r.kind == kind and r.api_version == av then return r end
    end
    -- the same kind served at another version of its group
    local group = av:match("^(.*)/[^/]+$") or ""
    if pass == 1 then
      for _, r in ipairs(list) do
        if r.kind == kind and r.group == group then return r end
      end
      self.resources = nil
      list = self:discover()
      if not list then break end
    end
  end
  return nil, errors.new("unknown_resource", ("the server doesn't serve %s %s (kubectl api-resources)"):format(av, kind))
end

-- Names as the API server takes them in a path (apimachinery's IsValidPathSegmentName): never "."
-- or ".." (a URL resolver would read them as "this collection" or "the namespace"), no "/" or "%".
-- -> true | nil, reason
function M.valid_path_name(name)
  if type(name) ~= "string" or name == "" then return nil, "it is empty" end
  if name == "." or name == ".." then return nil, "it may not be '.' or '..'" end
  if name:find("[/%%]") then return nil, "it may not contain '/' or '%'" end
  return true
end

-- A DNS-1123 subdomain, the rule for the names of Secrets, ConfigMaps, StatefulSets, postgresqls...:
-- at most 253 characters, lower-case letters, digits, '-' and '.', alphanumeric at both ends.
function M.valid_dns_subdomain(name)
  if type(name) ~= "string" or name == "" then return nil, "it is empty" end
  if #name > 253 then return nil, "it is longer than 253 characters" end
  if not name:match("^[a-z0-9][a-z0-9.-]*$") or not name:match("[a-z0-9]$") then
    return nil, "a DNS-1123 subdomain has lower-case letters, digits, '-' and '.', and starts and ends with a letter or digit"
  end
  for part in (name .. "."):gmatch("([^.]*)%.") do
    if part == "" or not part:match("^[a-z0-9]") or not part:match("[a-z0-9]$") then
      return nil, "each '.'-separated part of a DNS-1123 subdomain starts and ends with a letter or digit"
    end
  end
  return true
end

-- A DNS-1123 label, the rule for namespaces: at most 63 of a-z, 0-9, '-', alphanumeric at both ends.
function M.valid_dns_label(name)
  if type(name) ~= "string" or name == "" then return nil, "it is empty" end
  if #name > 63 or not name:match("^[a-z0-9][a-z0-9-]*$") or not name:match("[a-z0-9]$") then
    return nil, "a DNS-1123 label has at most 63 lower-case letters, digits and '-', and starts and ends with a letter or digit"
  end
  return true
end

-- The URL path of a collection or an object -> path | nil, err. Every name that reaches the path is
-- checked here, so no object name can turn a request into one on its collection or namespace.
function Client:path(r, namespace, name, sub)
  local p = r.group == "" and "/api/v1" or ("/apis/" .. r.group .. "/" .. r.version)
  if r.namespaced and namespace then
    local ok, why = M.valid_path_name(namespace)
    if not ok then
      return nil, errors.new("invalid", ("namespace %q is not a valid name: %s"):format(tostring(namespace), why))
    end
    p = p .. "/namespaces/" .. urlencode(namespace)
  end
  p = p .. "/" .. r.name
  if name then
    local ok, why = M.valid_path_name(name)
    if not ok then
      return nil, errors.new("invalid", ("%s name %q is not a valid name: %s"):format(r.singular, tostring(name), why))
    end
    p = p .. "/" .. urlencode(name)
  end
  if sub then p = p .. "/" .. sub end
  return p
end

local function ns_of(self, r, opts, obj)
  if not r.namespaced then return nil end
  return (opts and opts.namespace) or field(obj, "metadata", "namespace") or self.namespace
end

-- How messages name an object: "postgresql spire/spire-postgres", as kubectl get accepts it.
local function label(r, ns, name)
  local k = r.singular
  if ns and name then return ("%s %s/%s"):format(k, ns, name) end
  return name and (k .. " " .. name) or k
end

local function kubectl_hint(r, ns, name)
  local k = r.singular
  return ("kubectl get %s%s%s"):format(k, name and (" " .. name) or "", ns and (" -n " .. ns) or "")
end

-- Rewrites a server error so it names the object and the kubectl line to look at it.
local function name_error(err, r, ns, name, verb)
  if type(err) ~= "table" then return err end
  if err.code == 404 and name then
    err.message = ("%s not found (%s)"):format(label(r, ns, name), kubectl_hint(r, ns))
  elseif type(err.code) == "number" then
    err.message = ("%s %s: %s%s"):format(verb, label(r, ns, name), err.server_message or err.message,
      err.hint and (" " .. err.hint) or "")
  end
  return err
end

------------------------------------------------------------------------------------------------
-- objects

local function fill_kind(r, obj)
  if type(obj) == "table" then
    if obj.kind == nil then obj.kind = r.kind end
    if obj.apiVersion == nil then obj.apiVersion = r.api_version end
  end
  return obj
end

function Client:get(kind, name, opts)
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts)
  local p, obj
  p, err = self:path(r, ns, name)
  if not p then return nil, err end
  obj, err = self:request("GET", p, nil, nil, nil, { what = "get " .. label(r, ns, name) })
  if not obj then return nil, name_error(err, r, ns, name, "get") end
  return fill_kind(r, obj)
end

-- list(kind, {namespace=, all_namespaces=, labels=, fields=}) -> items, list
function Client:list(kind, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local ns = not opts.all_namespaces and ns_of(self, r, opts) or nil
  local q = { labelSelector = selector_string(opts.labels), fieldSelector = selector_string(opts.fields),
              resourceVersion = opts.resource_version }
  local p, list
  p, err = self:path(r, ns)
  if not p then return nil, err end
  list, err = self:request("GET", p, q, nil, nil, { what = "list " .. label(r, ns) })
  if not list then return nil, name_error(err, r, ns, nil, "list") end
  list.items = list.items ~= NULL and list.items or {}
  for _, item in ipairs(list.items) do fill_kind(r, item) end
  return list.items, list
end

function Client:create(obj, opts)
  opts = opts or {}
  local r, err = self:resource_for(obj)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts, obj)
  local name = field(obj, "metadata", "name") or field(obj, "metadata", "generateName")
  local p, out
  p, err = self:path(r, ns)
  if not p then return nil, err end
  if type(field(obj, "metadata", "name")) == "string" then
    local ok, why = M.valid_path_name(obj.metadata.name)
    if not ok then
      return nil, errors.new("invalid", ("%s name %q is not a valid name: %s"):format(r.singular, obj.metadata.name, why))
    end
  end
  out, err = self:request("POST", p, { fieldManager = opts.field_manager or "kubectl-create" },
    obj, "application/json", { what = "create " .. label(r, ns, name) })
  if not out then return nil, name_error(err, r, ns, nil, "create " .. tostring(name) .. " as") end
  return fill_kind(r, out)
end

function Client:replace(obj, opts)
  opts = opts or {}
  local r, err = self:resource_for(obj)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts, obj)
  local name = field(obj, "metadata", "name")
  local p, out
  p, err = self:path(r, ns, name)
  if not p then return nil, err end
  out, err = self:request("PUT", p, { fieldManager = opts.field_manager or "kubectl-replace" },
    obj, "application/json", { what = "replace " .. label(r, ns, name) })
  if not out then return nil, name_error(err, r, ns, name, "replace") end
  return fill_kind(r, out)
end

local PATCH_TYPES = {
  json = "application/json-patch+json",
  merge = "application/merge-patch+json",
  strategic = "application/strategic-merge-patch+json",
}

local function builtin(r)
  return r.group == "" or not r.group:find(".", 1, true) or r.group:match("%.k8s%.io$") ~= nil
end

-- patch(kind, name, patch, {type="strategic"|"merge"|"json", subresource=, field_manager=})
-- The default type is kubectl's (strategic) for built-in kinds and merge for custom resources,
-- which reject strategic patches.
function Client:patch(kind, name, patch, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local ptype = opts.type or (builtin(r) and "strategic" or "merge")
  local ctype = PATCH_TYPES[ptype]
  if not ctype then error("k8s.patch: type must be json, merge or strategic, not " .. tostring(ptype), 2) end
  local ns = ns_of(self, r, opts)
  local p, out
  p, err = self:path(r, ns, name, opts.subresource)
  if not p then return nil, err end
  out, err = self:request("PATCH", p,
    { fieldManager = opts.field_manager }, patch, ctype, { what = "patch " .. label(r, ns, name) })
  if not out then return nil, name_error(err, r, ns, name, "patch") end
  return fill_kind(r, out)
end

-- delete(kind, name, {propagation=, grace=, wait=, timeout=, ignore_not_found=}) -> true | nil, err
function Client:delete(kind, name, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts)
  local p
  p, err = self:path(r, ns, name)
  if not p then return nil, err end
  local before
  if opts.wait then
    before = self:get(r, name, { namespace = ns })
  end
  local body = { propagationPolicy = opts.propagation, gracePeriodSeconds = opts.grace }
  local out
  out, err = self:request("DELETE", p, nil, next(body) and body or nil,
    "application/json", { what = "delete " .. label(r, ns, name) })
  if not out then
    if err.code == 404 and opts.ignore_not_found then return true end
    return nil, name_error(err, r, ns, name, "delete")
  end
  if opts.wait then
    local uid = field(before, "metadata", "uid")
    local ok, werr = self:wait_for(r, name, function(o)
      return o == nil or (uid ~= nil and field(o, "metadata", "uid") ~= uid)
    end, { namespace = ns, timeout = opts.timeout, describe = label(r, ns, name) .. " to be deleted" })
    if not ok then return nil, werr end
  end
  return true
end

------------------------------------------------------------------------------------------------
-- watch: events that survive stream cuts (resume from the last resourceVersion) and 410 Gone
-- (re-list, then emit what changed); the watcher keeps the current objects in w.objects.

local Watch = {}
Watch.__index = Watch

local function key_of(obj)
  return (field(obj, "metadata", "namespace") or "") .. "/" .. (field(obj, "metadata", "name") or "")
end

-- watch(kind, {namespace=, name=, labels=, fields=}) -> watcher | nil, err. The first events are
-- ADDED for every object that exists now (from a list); then w:next(wait_seconds) returns the next
-- {type=, object=} | false (nothing within the wait) | nil, err (a failure a retry cannot fix).
function Client:watch(kind, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local fields = selector_string(opts.fields)
  if opts.name then
    local byname = "metadata.name=" .. opts.name
    fields = fields and (fields .. "," .. byname) or byname
  end
  local w = setmetatable({
    client = self, r = r, namespace = ns_of(self, r, opts), labels = selector_string(opts.labels),
    fields = fields, objects = {}, queue = {}, stream = nil, rv = nil, cuts = 0, relists = 0, failures = 0,
    opens = 0,
  }, Watch)
  local ok
  ok, err = w:relist()
  if not ok then return nil, err end
  return w
end

function Watch:relist()
  local items, list = self.client:list(self.r, { namespace = self.namespace, labels = self.labels, fields = self.fields })
  if not items then return nil, list end
  local seen = {}
  for _, obj in ipairs(items) do
    local k = key_of(obj)
    seen[k] = true
    local old = self.objects[k]
    if not old then
      self.queue[#self.queue + 1] = { type = "ADDED", object = obj }
    elseif field(old, "metadata", "resourceVersion") ~= field(obj, "metadata", "resourceVersion") then
      self.queue[#self.queue + 1] = { type = "MODIFIED", object = obj }
    end
    self.objects[k] = obj
  end
  for k, old in pairs(self.objects) do
    if not seen[k] then
      self.queue[#self.queue + 1] = { type = "DELETED", object = old }
      self.objects[k] = nil
    end
  end
  self.rv = field(list, "metadata", "resourceVersion")
  return true
end

function Watch:open(wait)
  if self.rv == nil then
    -- a 410 whose re-list failed: a watch from "now" would miss what changed in between
    local ok, err = self:relist()
    if not ok then return nil, err end
  end
  local q = { watch = "1", resourceVersion = self.rv, allowWatchBookmarks = "true",
              timeoutSeconds = tostring(M.defaults.watch_seconds),
              labelSelector = self.labels, fieldSelector = self.fields }
  local base, perr = self.client:path(self.r, self.namespace)
  if not base then return nil, perr end
  local path = base .. query_string(q)
  self.opens = self.opens + 1
  local stream, err = self.client.core:watch(path, {
    timeout = M.defaults.watch_seconds + 30, idle = M.defaults.watch_idle,
    -- the caller's wait bounds how long a server that never answers can hold us (at least 1 s)
    open_timeout = math.max(1, wait or 0) })
  if not stream then
    if err.code == "http" then
      return nil, status_error(err.status, err.body, nil, "watch " .. label(self.r, self.namespace))
    end
    return nil, err
  end
  self.stream, self.opened_at = stream, now()
  return true
end

function Watch:drop_stream()
  if self.stream then self.stream:close() end
  self.stream = nil
end

-- Handles one line of the stream; returns an event to deliver, or nil.
function Watch:handle(line)
  local ev, err = json.decode(line)
  if type(ev) ~= "table" then
    self:drop_stream()
    return nil, errors.new("json", "watch: an event is not JSON: " .. tostring(err))
  end
  local obj = ev.object
  if ev.type == "ERROR" then
    self:drop_stream()
    if field(obj, "code") == 410 then
      -- too old a resourceVersion: start again from a fresh list
      self.relists = self.relists + 1
      self.rv = nil
      local ok, lerr = self:relist()
      if not ok then return nil, lerr end
      return nil
    end
    local code = field(obj, "code") or 500
    local err = status_error(code, json.encode(obj), nil, "watch " .. label(self.r, self.namespace))
    -- the server's own trouble (500, 504 ...): the watch is opened again from where it was, as
    -- client-go's reflector does; anything else ends it
    if type(code) == "number" and (code >= 500 or code == 429) then return nil, err end
    return nil, err, true
  end
  local rv = field(obj, "metadata", "resourceVersion")
  if rv then self.rv = rv end
  if ev.type == "BOOKMARK" then return nil end
  local k = key_of(obj)
  if ev.type == "DELETED" then
    self.objects[k] = nil
  else
    fill_kind(self.r, obj)
    self.objects[k] = obj
  end
  return ev
end

function Watch:next(wait)
  local deadline = now() + (wait or 0)
  while true do
    if #self.queue > 0 then return table.remove(self.queue, 1) end
    local remaining = deadline - now()
    if not self.stream then
      local ok, err = self:open(remaining)
      if ok then
        self.failures = 0
      elseif err.code == 410 then
        self.relists = self.relists + 1
        self.rv = nil
        ok, err = self:relist()
        if not ok and not TRANSIENT[err.code] and (type(err.code) ~= "number" or err.code < 500) then
          return nil, err
        end
      elseif TRANSIENT[err.code] or (type(err.code) == "number" and (err.code >= 500 or err.code == 429)) then
        -- the server is away or busy: try again, within the caller's wait
        self.failures = self.failures + 1
        self.last_error = err
        if remaining <= 0 then return false end
        sys.sleep(math.min(remaining, M.defaults.backoff * 2 ^ math.min(self.failures - 1, 4)))
      else
        return nil, err
      end
    else
      if remaining < 0 then remaining = 0 end
      local line, err = self.stream:next(remaining)
      if line == false then return false end
      -- a stream that keeps ending at once is not re-opened in a tight loop
      local function pause_if_quick()
        if now() - self.opened_at < 1 then
          self.failures = self.failures + 1
          local pause = math.min(deadline - now(), M.defaults.backoff * 2 ^ math.min(self.failures - 1, 4))
          if pause > 0 then sys.sleep(pause) end
        end
      end
      if line then
        local ev, herr, fatal = self:handle(line)
        if ev then return ev end
        if herr and (fatal or herr.code == "json") then return nil, herr end
        if herr then
          -- an ERROR event the server may get over: the stream is gone, open it again
          self.last_error = herr
          pause_if_quick()
        end
      else
        -- end of stream or a cut: resume from the last resourceVersion seen
        self:drop_stream()
        self.cuts = self.cuts + 1
        self.last_error = err
        pause_if_quick()
      end
    end
    if #self.queue == 0 and now() >= deadline then return false end
  end
end

-- for ev in w:events(seconds) do ... end: the events of the next `seconds`; a failure ends the
-- loop and is left in w.error.
function Watch:events(seconds)
  local deadline = now() + (seconds or M.defaults.wait_timeout)
  return function()
    while true do
      local remaining = deadline - now()
      if remaining <= 0 then return nil end
      local ev, err = self:next(remaining)
      if ev then return ev end
      if ev == nil then
        self.error = err
        return nil
      end
    end
  end
end

function Watch:close()
  self:drop_stream()
end
Watch.__close = Watch.close
Watch.__gc = Watch.close

-- The objects the watcher holds now, sorted by namespace/name.
function Watch:items()
  local keys = {}
  for k in pairs(self.objects) do keys[#keys + 1] = k end
  table.sort(keys)
  local list = {}
  for i, k in ipairs(keys) do list[i] = self.objects[k] end
  return list
end

------------------------------------------------------------------------------------------------
-- waits

local function progress(text)
  local ok, ui = pcall(require, "pgr.ui")
  if ok and ui.status then
    ui.status(text)
  elseif sys.isatty("stderr") then
    io.stderr:write("\r\27[K", text)
  end
end

local function progress_done()
  local ok, ui = pcall(require, "pgr.ui")
  if ok and ui.clear_status then ui.clear_status()
  elseif sys.isatty("stderr") then io.stderr:write("\r\27[K") end
end

-- A few words on an object's state, for progress lines and timeout errors.
function M.summary(obj)
  if obj == nil then return "absent" end
  local kind = obj.kind or "object"
  local name = field(obj, "metadata", "name") or "?"
  local st = field(obj, "status")
  local bits = {}
  if field(obj, "metadata", "deletionTimestamp") then bits[#bits + 1] = "terminating" end
  if kind == "Pod" then
    bits[#bits + 1] = field(st, "phase") or "Pending"
    for _, c in ipairs(field(st, "conditions") or {}) do
      if c.type == "Ready" then bits[#bits + 1] = "ready=" .. tostring(c.status) end
    end
  elseif type(st) == "table" and st ~= NULL then
    local keys = {}
    for k, v in pairs(st) do if type(v) ~= "table" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do bits[#bits + 1] = k .. "=" .. tostring(st[k]) end
    local spec_replicas = field(obj, "spec", "replicas")
    if spec_replicas then table.insert(bits, 1, "spec.replicas=" .. spec_replicas) end
  end
  return ("%s %s%s"):format(kind:lower(), name, #bits > 0 and (" (" .. table.concat(bits, ", ") .. ")") or "")
end

local function summarize_state(state, by_name)
  if by_name then return M.summary(state) end
  if #state == 0 then return "none" end
  local parts = {}
  for i, o in ipairs(state) do
    if i > 5 then parts[#parts + 1] = ("and %d more"):format(#state - 5) break end
    parts[#parts + 1] = M.summary(o)
  end
  return #state .. ": " .. table.concat(parts, "; ")
end

-- wait_for(kind, target, predicate, {timeout=, describe=, namespace=})
--   target: a name (string without '='), a label selector string ("app=x"), or a table
--           {labels=, fields=}. predicate(obj|nil) for a name; predicate(list of objects) otherwise.
--   predicate returns true when done; false/nil and an optional note otherwise; or nil, err to stop.
-- Returns the object (or list) that satisfied it, true when that was an absent object
-- | nil, err (code "timeout", err.last = the last state seen).
function Client:wait_for(kind, target, predicate, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  local wopts = { namespace = opts.namespace }
  local by_name = false
  if type(target) == "string" and not target:find("[=!]") and not target:find(" in ", 1, true) then
    by_name = true
    wopts.name = target
  elseif type(target) == "string" then
    wopts.labels = target
  elseif type(target) == "table" then
    wopts.labels, wopts.fields = target.labels, target.fields
  else
    error("k8s.wait_for: target must be a name, a selector string or {labels=, fields=}", 2)
  end
  local timeout = opts.timeout or M.defaults.wait_timeout
  local describe = opts.describe or (by_name and label(r, ns_of(self, r, opts), target) or
    (label(r, ns_of(self, r, opts)) .. " " .. tostring(selector_string(wopts.labels) or selector_string(wopts.fields))))
  local start = now()
  local deadline = start + timeout
  local w
  w, err = self:watch(r, wopts)
  if not w then return nil, err end
  local function state()
    if by_name then
      for _, o in pairs(w.objects) do return o end
      return nil
    end
    return w:items()
  end
  local shown = false
  local note
  local function check()
    local s = state()
    local ok, why = predicate(s)
    if ok then return true, s end
    if ok == nil and errors.is(why) then return nil, why end
    note = type(why) == "string" and why or nil
    return false
  end
  -- the list at the start may already satisfy it
  local done, value = check()
  local last_progress = start
  while not done do
    if done == nil then w:close() return nil, value end
    local t = now()
    if t >= deadline then break end
    if t - start >= 1 and t - last_progress >= 1 then
      progress(("waiting for %s (%ds%s)"):format(describe, math.floor(t - start), note and ("; " .. note) or ""))
      shown, last_progress = true, t
    end
    -- a tick for what must go on during a long wait (the cluster lease's renewal: pgr.heartbeat)
    require("pgr.heartbeat").beat()
    local ev, werr = w:next(math.min(deadline - t, 1))
    if ev == nil then
      w:close()
      if shown then progress_done() end
      return nil, werr
    end
    -- after an event, drain what else arrived at once, then judge the current state
    if ev then
      while true do
        local more = w:next(0)
        if not more then break end
      end
      done, value = check()
    end
  end
  w:close()
  if shown then progress_done() end
  -- an absent object satisfying the predicate (a deletion) is reported as true
  if done then return value == nil and true or value end
  local last = state()
  return nil, errors.new("timeout", ("timed out after %s waiting for %s; last seen: %s%s"):format(
    timeout >= 1 and (math.floor(timeout) .. "s") or (timeout .. "s"), describe, summarize_state(last, by_name),
    note and (" (" .. note .. ")") or ""), { last = last, describe = describe })
end

local function pod_ready(p)
  if field(p, "metadata", "deletionTimestamp") then return false end
  if field(p, "status", "phase") ~= "Running" then return false end
  for _, c in ipairs(field(p, "status", "conditions") or {}) do
    if c.type == "Ready" then return c.status == "True" end
  end
  return false
end
M.pod_ready = pod_ready

-- pods_gone(selector, opts): every pod matching the label selector is gone -> true | nil, err
function Client:pods_gone(selector, opts)
  opts = opts or {}
  local sel = selector_string(selector)
  local ok, err = self:wait_for("pods", sel, function(list)
    if #list == 0 then return true end
    return false, #list .. " left"
  end, { namespace = opts.namespace, timeout = opts.timeout,
         describe = opts.describe or ("pods " .. sel .. " to be gone") })
  if not ok then return nil, err end
  return true
end

-- pods_ready(selector, n, opts): at least n matching pods Running and Ready -> pods | nil, err
function Client:pods_ready(selector, n, opts)
  opts = opts or {}
  local sel = selector_string(selector)
  return self:wait_for("pods", sel, function(list)
    local ready = 0
    for _, p in ipairs(list) do if pod_ready(p) then ready = ready + 1 end end
    if ready >= n then return true end
    return false, ("%d/%d ready"):format(ready, n)
  end, { namespace = opts.namespace, timeout = opts.timeout,
         describe = opts.describe or (("%d pod%s %s to be ready"):format(n, n == 1 and "" or "s", sel)) })
end

------------------------------------------------------------------------------------------------
-- scale, rollouts

-- scale(kind, name, replicas, opts) -> previous replicas | nil, err (kubectl scale's merge patch)
function Client:scale(kind, name, replicas, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  if not r.subresources.scale then
    return nil, errors.new("invalid", ("%s cannot be scaled (no scale subresource)"):format(label(r, nil, name)))
  end
  local ns = ns_of(self, r, opts)
  local p, cur
  p, err = self:path(r, ns, name, "scale")
  if not p then return nil, err end
  cur, err = self:request("GET", p, nil, nil, nil, { what = "get scale of " .. label(r, ns, name) })
  if not cur then return nil, name_error(err, r, ns, name, "scale") end
  local out
  out, err = self:request("PATCH", p, nil,
    { spec = { replicas = math.tointeger(replicas) or replicas } }, PATCH_TYPES.merge,
    { what = "scale " .. label(r, ns, name) })
  if not out then return nil, name_error(err, r, ns, name, "scale") end
  return field(cur, "spec", "replicas") or 0
end

local function rfc3339(t)
  t = t or os.time()
  local off = os.date("%z", t)  -- "+0100"
  local tz = off == "+0000" and "Z" or (off:sub(1, 3) .. ":" .. off:sub(4, 5))
  return os.date("%Y-%m-%dT%H:%M:%S", t) .. tz
end
M.rfc3339 = rfc3339

-- rollout_restart(kind, name, opts) -> object | nil, err (kubectl rollout restart's patch)
function Client:rollout_restart(kind, name, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  if r.kind ~= "Deployment" and r.kind ~= "DaemonSet" and r.kind ~= "StatefulSet" then
    return nil, errors.new("invalid", ("%s: rollout restart works on deployments, daemonsets and statefulsets"):format(label(r, nil, name)))
  end
  local patch = { spec = { template = { metadata = { annotations = {
    ["kubectl.kubernetes.io/restartedAt"] = opts.at or rfc3339() } } } } }
  return self:patch(r, name, patch, { namespace = opts.namespace, type = "strategic", field_manager = "kubectl-rollout" })
end

-- kubectl's status viewers: done (true), not yet (false, message), or an error (nil, err).
local function rollout_check(kind, o)
  if o == nil then return nil, errors.new("not_found", "the object is gone") end
  local gen = field(o, "metadata", "generation") or 0
  local st = field(o, "status") or {}
  local spec = field(o, "spec") or {}
  local name = field(o, "metadata", "name")
  local obs = field(st, "observedGeneration") or 0
  if kind == "Deployment" then
    if gen > obs then return false, "waiting for deployment spec update to be observed" end
    for _, c in ipairs(field(st, "conditions") or {}) do
      if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
        return nil, errors.new("rollout", ("deployment %q exceeded its progress deadline"):format(name))
      end
    end
    local want = field(spec, "replicas") or 1
    local updated = field(st, "updatedReplicas") or 0
    local replicas = field(st, "replicas") or 0
    local available = field(st, "availableReplicas") or 0
    if updated < want then return false, ("%d out of %d new replicas have been updated"):format(updated, want) end
    if replicas > updated then return false, ("%d old replicas are pending termination"):format(replicas - updated) end
    if available < updated then return false, ("%d of %d updated replicas are available"):format(available, updated) end
    return true
  elseif kind == "DaemonSet" then
    if field(spec, "updateStrategy", "type") ~= "RollingUpdate" then
      return nil, errors.new("rollout", "rollout status is only available for RollingUpdate strategy type")
    end
    if gen > obs then return false, "waiting for daemon set spec update to be observed" end
    local desired = field(st, "desiredNumberScheduled") or 0
    local updated = field(st, "updatedNumberScheduled") or 0
    local available = field(st, "numberAvailable") or 0
    if updated < desired then return false, ("%d out of %d new pods have been updated"):format(updated, desired) end
    if available < desired then return false, ("%d of %d updated pods are available"):format(available, desired) end
    return true
  elseif kind == "StatefulSet" then
    if field(spec, "updateStrategy", "type") ~= "RollingUpdate" then
      return nil, errors.new("rollout", "rollout status is only available for RollingUpdate strategy type")
    end
    if obs == 0 or gen > obs then return false, "waiting for statefulset spec update to be observed" end
    local want = field(spec, "replicas") or 1
    local ready = field(st, "readyReplicas") or 0
    if ready < want then return false, ("%d of %d pods are ready"):format(ready, want) end
    local ru = field(spec, "updateStrategy", "rollingUpdate")
    if ru then
      local partition = field(ru, "partition") or 0
      local updated = field(st, "updatedReplicas") or 0
      if updated < want - partition then
        return false, ("%d of %d updated pods are ready"):format(updated, want - partition)
      end
      return true
    end
    if field(st, "updateRevision") ~= field(st, "currentRevision") then
      return false, ("%d of %d pods at the new revision"):format(field(st, "updatedReplicas") or 0, want)
    end
    return true
  end
  return nil, errors.new("invalid", "rollout status works on deployments, daemonsets and statefulsets")
end
M.rollout_check = rollout_check

-- rollout_status(kind, name, {timeout=}) -> object | nil, err, as `kubectl rollout status` decides.
function Client:rollout_status(kind, name, opts)
  opts = opts or {}
  local r, err = self:resource(kind)
  if not r then return nil, err end
  return self:wait_for(r, name, function(o) return rollout_check(r.kind, o) end, {
    namespace = opts.namespace, timeout = opts.timeout,
    describe = opts.describe or ("rollout of " .. label(r, ns_of(self, r, opts), name)) })
end

------------------------------------------------------------------------------------------------
-- replace --force, apply, secrets, access

local SERVER_METADATA = { "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
  "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds" }
local CONTROLLER_UID = { "controller-uid", "batch.kubernetes.io/controller-uid" }

-- What the runbook strips before re-creating an object: status, server-set metadata, and a
-- generated selector with its controller-uid labels (Jobs), which the server would reject.
function M.strip(obj)
  local o = deepcopy(obj)
  o.status = nil
  local md = o.metadata or {}
  for _, k in ipairs(SERVER_METADATA) do md[k] = nil end
  local labels = field(md, "labels")
  local sel = field(o, "spec", "selector", "matchLabels")
  local generated = false
  if sel then
    for _, k in ipairs(CONTROLLER_UID) do if sel[k] ~= nil then generated = true end end
  end
  if generated then
    o.spec.selector = nil
    o.spec.manualSelector = nil
  end
  local template_labels = field(o, "spec", "template", "metadata", "labels")
  for _, k in ipairs(CONTROLLER_UID) do
    if labels then labels[k] = nil end
    if template_labels then template_labels[k] = nil end
  end
  return o
end

-- replace_force(obj, {timeout=}) -> the new object | nil, err (kubectl replace --force)
function Client:replace_force(obj, opts)
  opts = opts or {}
  local o = M.strip(obj)
  local r, err = self:resource_for(o)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts, o)
  local name = field(o, "metadata", "name")
  local ok
  ok, err = self:delete(r, name, { namespace = ns, propagation = "Background", ignore_not_found = true,
                                   wait = true, timeout = opts.timeout })
  if not ok then return nil, err end
  return self:create(o, { namespace = ns, field_manager = "kubectl-replace" })
end

-- Go's encoding/json (which kubectl's annotation comes from) escapes <, > and & in strings.
local function go_json(v)
  local s, err = json.encode(v)
  if not s then return nil, err end
  return (s:gsub("[<>&]", { ["<"] = "\\u003c", [">"] = "\\u003e", ["&"] = "\\u0026" }))
end

-- `current` holds everything `modified` says (the server may have added defaulted fields, also
-- inside list items, as a strategic merge would keep them).
local function contains(modified, current)
  if type(modified) ~= "table" or modified == NULL then return modified == current end
  if type(current) ~= "table" or current == NULL then return false end
  if is_array(modified) then
    if not is_array(current) and next(current) ~= nil then return false end
    if #modified ~= #current then return false end
    for i = 1, #modified do if not contains(modified[i], current[i]) then return false end end
    return true
  end
  for k, v in pairs(modified) do if not contains(v, current[k]) then return false end end
  return true
end
M.contains = contains

-- The JSON merge patch that takes `current` to `modified`, deleting what `original` had and
-- `modified` dropped (kubectl's three-way patch for maps; lists are replaced whole).
local function three_way(original, modified, current)
  local patch = json.object {}
  local any = false
  for k, v in pairs(modified) do
    local cur = type(current) == "table" and current ~= NULL and current[k] or nil
    if type(v) == "table" and v ~= NULL and not is_array(v) and type(cur) == "table" and cur ~= NULL and not is_array(cur) then
      local orig = type(original) == "table" and original ~= NULL and original[k] or nil
      local sub, subany = three_way(type(orig) == "table" and orig or {}, v, cur)
      if subany then patch[k], any = sub, true end
    elseif not contains(v, cur) then
      patch[k], any = v, true
    end
  end
  if type(original) == "table" and original ~= NULL then
    for k in pairs(original) do
      if modified[k] == nil and type(current) == "table" and current[k] ~= nil then
        patch[k], any = NULL, true
      end
    end
  end
  return patch, any
end
M.three_way = three_way

local function apply_one(self, doc, opts)
  local r, err = self:resource_for(doc)
  if not r then return nil, err end
  local ns = ns_of(self, r, opts, doc)
  local name = field(doc, "metadata", "name")
  if type(name) ~= "string" then return nil, errors.new("invalid", ("a %s in the manifest has no metadata.name"):format(doc.kind)) end
  local modified = deepcopy(doc)
  modified.metadata = modified.metadata or json.object {}
  -- kubectl records the manifest with the namespace it applied to and an annotations map that
  -- is present even when empty ({}), without the last-applied annotation itself
  if r.namespaced and ns then modified.metadata.namespace = ns end
  modified.metadata.annotations = field(modified, "metadata", "annotations") or json.object {}
  modified.metadata.annotations[M.LAST_APPLIED] = nil
  local last, jerr = go_json(modified)
  if not last then return nil, jerr end
  modified.metadata.annotations[M.LAST_APPLIED] = last .. "\n"
  local result = { kind = doc.kind, name = name, namespace = r.namespaced and ns or nil }
  for _ = 1, 5 do
    local live
    live, err = self:get(r, name, { namespace = ns })
    if not live then
      if err.code ~= 404 then return nil, err end
      local out
      out, err = self:create(modified, { namespace = ns, field_manager = "kubectl-client-side-apply" })
      if out then
        result.action, result.object = "created", out
        return result
      end
      if err.code ~= 409 then return nil, err end
    else
      local original = {}
      local prev = field(live, "metadata", "annotations", M.LAST_APPLIED)
      if prev then original = json.decode(prev) or {} end
      local patch, any = three_way(original, modified, live)
      if not any then
        result.action, result.object = "unchanged", live
        return result
      end
      -- the patch applies only to the object we compared against (optimistic concurrency)
      local p, out
      p, err = self:path(r, ns, name)
      if not p then return nil, err end
      out, err = self:request("PATCH", p, { fieldManager = "kubectl-client-side-apply" },
        patch, PATCH_TYPES.merge, { what = "apply " .. label(r, ns, name) })
      if out then
        result.action, result.object = "configured", fill_kind(r, out)
        return result
      end
      if err.code ~= 409 then return nil, name_error(err, r, ns, name, "apply") end
    end
  end
  return nil, err
end

-- apply_manifest(yaml_text, {namespace=}) -> {{kind=, name=, namespace=, action="created"|"configured"|"unchanged"}, ...}
-- | nil, err (stops at the first failing document; err.applied lists what was done before).
function Client:apply_manifest(text, opts)
  opts = opts or {}
  local yaml = require "pgr.yaml"
  local docs, err = yaml.decode(text)
  if not docs then return nil, errors.new("yaml", "manifest: " .. tostring(err and err.message or err)) end
  local results = {}
  local function each(doc)
    if doc == nil or doc == NULL then return true end
    if doc.kind == "List" or (type(doc.kind) == "string" and doc.kind:match("List$") and doc.items) then
      for _, item in ipairs(doc.items) do
        local ok, e = each(item)
        if not ok then return nil, e end
      end
      return true
    end
    local res, e = apply_one(self, doc, opts)
    if not res then return nil, e end
    results[#results + 1] = res
    return true
  end
  for _, doc in ipairs(docs) do
    local ok, e = each(doc)
    if not ok then
      e.applied = results
      return nil, e
    end
  end
  return results
end

-- secret(name, opts) -> {key = decoded value} | nil, err. The values are secrets: never log them.
function Client:secret(name, opts)
  local base64 = require "pgr.base64"
  local s, err = self:get("secrets", name, opts)
  if not s then return nil, err end
  local out = {}
  for k, v in pairs(field(s, "data") or {}) do
    local d, derr = base64.decode(v)
    if not d then
      return nil, errors.new("invalid", ("secret %s: key %s is not valid base64 (%s)"):format(name, k, tostring(derr)))
    end
    out[k] = d
  end
  return out, s.metadata
end

-- pod_log(name, {container=, tail=, namespace=}) -> text | nil, err: what `kubectl logs` shows of a
-- pod's container (the last `tail` lines). A log may hold anything the program printed: show excerpts.
function Client:pod_log(name, opts)
  opts = opts or {}
  local r, err = self:resource("pods")
  if not r then return nil, err end
  local ns = ns_of(self, r, opts)
  local what = "get the log of " .. label(r, ns, name)
  local path = self:path(r, ns, name, "log") .. query_string({ container = opts.container, tailLines = opts.tail })
  local status, body, headers = self.core:request("GET", path, nil, nil, { timeout = self.timeout })
  if not status then
    body.message = what .. ": " .. body.message
    return nil, body
  end
  if status >= 400 then return nil, name_error(status_error(status, body, headers, what), r, ns, name, "get") end
  return body or ""
end

-- can_i(verb, resource, namespace, {name=}) -> allowed (boolean), reason | nil, err
-- resource: any name discovery resolves, optionally with a subresource ("sts/scale").
function Client:can_i(verb, resource, namespace, opts)
  opts = opts or {}
  local base, sub = resource:match("^([^/]+)/(.+)$")
  local r, err = self:resource(base or resource)
  if not r then return nil, err end
  local review = {
    apiVersion = "authorization.k8s.io/v1", kind = "SelfSubjectAccessReview",
    spec = { resourceAttributes = {
      verb = verb, group = r.group, resource = r.name, subresource = sub, name = opts.name,
      namespace = r.namespaced and (namespace or self.namespace) or nil,
    } },
  }
  local out
  out, err = self:request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", nil, review,
    "application/json", { what = "access review" })
  if not out then return nil, err end
  return field(out, "status", "allowed") == true, field(out, "status", "reason")
end

------------------------------------------------------------------------------------------------
-- exec: kubectl exec over a WebSocket (v5.channel.k8s.io, else v4), with the client's TLS and token

-- The pod's namespace and name: "name" (the client's or opts.namespace), "ns/name", or a pod object.
local function pod_ref(self, pod, opts)
  if type(pod) == "table" then
    return field(pod, "metadata", "namespace") or opts.namespace or self.namespace, field(pod, "metadata", "name")
  end
  local ns, name = tostring(pod):match("^([^/]+)/([^/]+)$")
  if ns then return ns, name end
  return opts.namespace or self.namespace, pod
end

local function valid_name(s)
  return type(s) == "string" and #s <= 253 and s:match("^[a-z0-9][-a-z0-9.]*$") ~= nil and s:match("[a-z0-9]$") ~= nil
end

-- The command's exit code from the error channel's Status: 0 on Success, the ExitCode cause of a
-- NonZeroExitCode failure; nil and the message for any other failure (the command did not run).
local function exit_code(status)
  if type(status) ~= "table" then return nil, "no exit status" end
  if status.status == "Success" then return 0 end
  if status.reason == "NonZeroExitCode" then
    for _, c in ipairs(field(status, "details", "causes") or {}) do
      if (c.reason == "ExitCode" or c.type == "ExitCode") and tonumber(c.message) then
        return math.tointeger(tonumber(c.message))
      end
    end
    return nil, "a NonZeroExitCode status without its ExitCode cause: " .. tostring(status.message)
  end
  return nil, tostring(status.message or status.reason or "the command failed")
end
M.exec_exit_code = exit_code

-- exec(pod, argv, opts) -> result | nil, err.  Runs argv (no shell: one element, one argument) in a
-- container of the pod, as `kubectl exec` does, streaming both ways with back-pressure.
--   opts.container   the container (default: the pod's first, as the server chooses)
--   opts.stdin       a string, or a reader function() -> chunk | nil (at the end); stdin is closed
--                    at its end (v5); without it the command gets no stdin
--   opts.on_stdout / opts.on_stderr   function(chunk) called as output arrives; returning false
--                    stops the command (err.code "cancelled"); without one, the output is collected
--                    into result.stdout / result.stderr (at most M.defaults.exec_collect bytes)
--   opts.timeout     seconds for the whole command (M.defaults.exec_timeout), opts.idle: seconds
--                    without any output (M.defaults.exec_idle), opts.namespace
-- result = { code = exit code, ok = code == 0, stdout =, stderr =, status = the Status, protocol = }.
-- A command that runs and exits non-zero is a result, not an error; errors are the API's (404, 403),
-- the transport's, a command that could not start (code "exec_failed") and the limits.
function Client:exec(pod, argv, opts)
  opts = opts or {}
  assert(type(argv) == "table" and #argv > 0, "k8s exec: argv must be a non-empty list of strings")
  for i, a in ipairs(argv) do
    assert(type(a) == "string", ("k8s exec: argv[%d] must be a string"):format(i))
  end
  local ns, name = pod_ref(self, pod, opts)
  if not valid_name(ns) or not valid_name(name) then
    return nil, errors.new("usage", ("exec: %s is not a pod name (NAME or NAMESPACE/NAME)"):format(tostring(pod)))
  end
  local parts = {}
  for _, a in ipairs(argv) do parts[#parts + 1] = "command=" .. urlencode(a) end
  if opts.container then parts[#parts + 1] = "container=" .. urlencode(opts.container) end
  parts[#parts + 1] = "stdin=" .. (opts.stdin ~= nil and "true" or "false")
  parts[#parts + 1] = "stdout=true&stderr=true&tty=false"
  local path = ("/api/v1/namespaces/%s/pods/%s/exec?%s"):format(ns, name, table.concat(parts, "&"))
  local what = ("exec in pod %s/%s"):format(ns, name)
  local s <close>, err = self.core:exec(path, { timeout = self.timeout })
  if not s then
    if err.status then
      local e = status_error(err.status, err.body or "", nil, what)
      if err.status == 404 and e.reason == "NotFound" then
        e.message = e.message .. (" (kubectl get pods -n %s)"):format(ns)
      end
      return nil, e
    end
    err.message = what .. ": " .. tostring(err.message)
    return nil, err
  end
  local protocol = s:protocol()

  -- stdin: a string or a reader, pulled while the send queue has room
  local feed
  if type(opts.stdin) == "string" then
    local data, pos = opts.stdin, 1
    feed = function()
      if pos > #data then return nil end
      local chunk = data:sub(pos, pos + 65535)
      pos = pos + #chunk
      return chunk
    end
  elseif type(opts.stdin) == "function" then
    feed = opts.stdin
  elseif opts.stdin ~= nil then
    error("k8s exec: stdin must be a string or a reader function", 2)
  end
  if feed and protocol ~= "v5.channel.k8s.io" then
    return nil, errors.new("unsupported", ("%s: the server speaks %s, which cannot close the command's stdin "
      .. "(v5.channel.k8s.io can: Kubernetes 1.30 or later)"):format(what, protocol))
  end

  local collect = M.defaults.exec_collect
  local out, errout, status_parts = {}, {}, {}
  local sizes = { 0, 0 }
  local function take(channel, chunk)
    local cb = channel == 1 and opts.on_stdout or opts.on_stderr
    if cb then return cb(chunk) ~= false end
    local list = channel == 1 and out or errout
    sizes[channel] = sizes[channel] + #chunk
    if sizes[channel] > collect then
      return nil, errors.new("too_large", ("%s: more than %d bytes on %s; give an on_%s callback to stream it")
        :format(what, collect, channel == 1 and "stdout" or "stderr", channel == 1 and "stdout" or "stderr"))
    end
    list[#list + 1] = chunk
    return true
  end

  local t0 = sys.now()
  local timeout = opts.timeout or M.defaults.exec_timeout
  local idle = opts.idle or M.defaults.exec_idle
  local last_output = t0
  local end_code, end_reason
  local HIGH = 1 << 20
  while true do
    while feed and s:pending() < HIGH do
      local chunk = feed()
      if chunk == nil then
        local ok, cerr = s:close_stdin()
        if not ok then return nil, cerr end
        feed = nil
      elseif #chunk > 0 then
        local ok, serr = s:send(chunk)
        if not ok then return nil, serr end
      end
    end
    local now = sys.now()
    if now - t0 > timeout then
      return nil, errors.new("timeout", ("%s: %s did not finish within %g s; it was stopped"):format(what, argv[1], timeout))
    end
    if now - last_output > idle then
      return nil, errors.new("timeout", ("%s: %s wrote nothing for %g s; it was stopped"):format(what, argv[1], idle))
    end
    local kind, a, b = s:next(math.min(1, timeout - (now - t0), idle - (now - last_output)))
    if kind == nil then
      a.message = what .. ": " .. tostring(a.message)
      return nil, a
    elseif kind == "data" then
      last_output = sys.now()
      if a == 1 or a == 2 then
        local ok, terr = take(a, b)
        if ok == nil then return nil, terr end
        if not ok then
          return nil, errors.new("cancelled", ("%s: stopped by the caller"):format(what))
        end
      elseif a == 3 then
        status_parts[#status_parts + 1] = b
      end
    elseif kind == "end" then
      end_code, end_reason = a, b
      break
    end
  end
  local status_text = table.concat(status_parts)
  if status_text == "" then
    return nil, errors.new("exec", ("%s: the session ended without the command's exit status (close code %s%s)")
      :format(what, tostring(end_code), end_reason ~= "" and (": " .. end_reason) or ""))
  end
  local ok, status = pcall(json.decode, status_text)
  if not ok or type(status) ~= "table" then
    return nil, errors.new("exec", ("%s: the error channel holds no Status: %s"):format(what, status_text:sub(1, 200)))
  end
  local code, why = exit_code(status)
  if not code then
    return nil, errors.new("exec_failed", ("%s: %s"):format(what, why), { status = status })
  end
  return {
    code = code, ok = code == 0, status = status, protocol = protocol,
    stdout = not opts.on_stdout and table.concat(out) or nil,
    stderr = not opts.on_stderr and table.concat(errout) or nil,
  }
end

------------------------------------------------------------------------------------------------
-- module-level functions on a default client

local default, default_opts = nil, {}

-- configure(opts): the options k8s.connect gets for the default client (closes the current one).
function M.configure(opts)
  if default then default:close() end
  default, default_opts = nil, opts or {}
end

function M.default()
  if default then return default end
  local c, err = M.connect(default_opts)
  if not c then return nil, err end
  default = c
  return c
end

for _, name in ipairs { "get", "list", "create", "replace", "patch", "delete", "watch", "scale", "wait_for",
                         "pods_gone", "pods_ready", "rollout_restart", "rollout_status", "replace_force",
                         "apply_manifest", "secret", "can_i", "resource", "discover", "request", "exec" } do
  M[name] = function(...)
    local c, err = M.default()
    if not c then return nil, err end
    return c[name](c, ...)
  end
end

M.Client = Client
return M
