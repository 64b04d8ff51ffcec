-- pgr.service: a service as one handle for troubleshooting at the REPL — its status, SQL on its master,
-- its pods, secrets (redacted), backups, pod logs and pgr's runs. Read-only, every call bounded.
--
--   local svc = assert(service "spire")      -- or service.new("spire", {site=, state_dir=})
--   svc:status()          the facts and verdict of `pgr status spire` (a table; shown as the screen)
--   svc:sql(query [, db]) rows of a query run on the master as postgres, in a read-only transaction
--                         (shown as a table; rows[i].column); db defaults to postgres
--   svc:pods()            the database pods: name, role, phase, ready, restarts, node, ip
--   svc:secrets()         the users' credential secrets, every value but the username redacted
--   svc:backups()         the cluster's backups in S3, newest first (as pgr backups lists them)
--   svc:logs(pod [, n])   the last n (50) lines of a pod's log through the API (pod: a name, or
--                         "master"); a string
--   svc:runs()            pgr's runs of this service, newest first: id, finished, status, steps done
-- Each returns nil, err for an ordinary failure (no kubeconfig, the API unreachable, no master).
local errors = require "pgr.errors"

local M = {}

local REDACTED = "‹redacted›"

local Handle = {}
Handle.__index = Handle

-- new(name [, opts]) -> handle | nil, err
function M.new(name, opts)
  opts = opts or {}
  if type(name) ~= "string" then error("service(NAME): NAME is a service such as \"spire\"", 2) end
  local status = require "pgr.status"
  local svc, proc = status.service(name)
  if not svc then return nil, proc end
  return setmetatable({ name = svc.service, namespace = svc.namespace, cluster = svc.cluster, svc = svc,
                        proc = proc, site = opts.site, state_dir = opts.state_dir }, Handle)
end
setmetatable(M, { __call = function(_, name, opts) return M.new(name, opts) end })

function Handle:__tostring()
  return ("service %s (%s/%s)"):format(self.name, self.namespace, self.cluster)
end

function Handle:_site()
  if self.site then return self.site end
  local s, err = require("pgr.site").load()
  if not s then return nil, err end
  self.site = s
  return s
end

-- A Kubernetes client for this service's namespace, made once and kept.
function Handle:_k8s()
  if self._client then return self._client end
  local site, err = self:_site()
  if not site then return nil, err end
  local k
  k, err = require("pgr.status").k8s(site, self.namespace)
  if not k then return nil, err end
  self._client = k
  return k
end

function Handle:status()
  local status = require "pgr.status"
  local site, err = self:_site()
  local k = site and self:_k8s() or nil
  local f = status.collect(self.svc, { site = site, site_error = not site and err or nil, k8s = k,
                                      procedure = self.proc, state_dir = self.state_dir })
  return setmetatable(f, { __tostring = function(t) return status.format({ services = { t }, verdict = t.verdict }) end })
end

function Handle:pods()
  local k, err = self:_k8s()
  if not k then return nil, err end
  local status = require "pgr.status"
  local items
  items, err = k:list(status.RESOURCES.pods, { labels = require("pgr.spilo").selector(self.cluster) })
  if not items then return nil, err end
  local out = {}
  for _, p in ipairs(items) do
    local ready = false
    for _, c in ipairs(status.field(p, "status", "conditions") or {}) do
      if c.type == "Ready" then ready = c.status == "True" end
    end
    local restarts = 0
    for _, cs in ipairs(status.field(p, "status", "containerStatuses") or {}) do restarts = restarts + (cs.restartCount or 0) end
    out[#out + 1] = { name = p.metadata.name, role = status.field(p, "metadata", "labels", "spilo-role"),
                      phase = status.field(p, "status", "phase"), ready = ready, restarts = restarts,
                      node = status.field(p, "spec", "nodeName"), ip = status.field(p, "status", "podIP") }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

function Handle:secrets()
  local k, err = self:_k8s()
  if not k then return nil, err end
  local out = {}
  for _, user in ipairs(self.svc.users) do
    local name = require("pgr.restore").secret_name(self.svc, user)
    local data, md = k:secret(name)
    if data then
      local keys = {}
      for key, v in pairs(data) do keys[key] = key == "username" and v or REDACTED end
      out[#out + 1] = { name = name, user = user, data = keys, labels = md and md.labels or nil }
    elseif require("pgr.k8s").is_not_found(md) then
      out[#out + 1] = { name = name, user = user, missing = true }
    else
      return nil, md
    end
  end
  return out
end

-- The master pod and a connection to it as postgres (its secret's password), read-only.
function Handle:_master_conn(db)
  local k, err = self:_k8s()
  if not k then return nil, err end
  local status = require "pgr.status"
  local pods
  pods, err = k:list(status.RESOURCES.pods, { labels = require("pgr.spilo").selector(self.cluster, "master") })
  if not pods then return nil, err end
  local master
  for _, p in ipairs(pods) do
    if status.field(p, "status", "podIP") and not status.field(p, "metadata", "deletionTimestamp") then master = p end
  end
  if not master then
    return nil, errors.new("no_master", ("no running master pod of %s/%s (kubectl get pods -n %s -l cluster-name=%s -L spilo-role)")
      :format(self.namespace, self.cluster, self.namespace, self.cluster))
  end
  local sec
  sec, err = k:secret(require("pgr.restore").secret_name(self.svc, "postgres"))
  if not sec then return nil, err end
  local params = status.pg_params(self.site, self.svc, master.status.podIP, sec.username or "postgres", sec.password, db)
  params.options = params.options .. " -c default_transaction_read_only=on"
  params.application_name = "pgr-repl"
  local c
  c, err = require("pgr.pg").connect(params)
  if not c then return nil, err end
  return c, master.metadata.name
end

-- Rows shown as psql shows them: a header, a rule, aligned columns, the count.
local function render_rows(rows, columns)
  local w = {}
  local cells = {}
  for i, c in ipairs(columns) do w[i] = #c end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for i, c in ipairs(columns) do
      local v = row[c]
      local s = v == nil and "" or tostring(v)
      cells[r][i] = s
      w[i] = math.max(w[i], #s)
    end
  end
  local lines = {}
  local head, rule = {}, {}
  for i, c in ipairs(columns) do
    head[i] = (" %-" .. w[i] .. "s "):format(c)
    rule[i] = ("-"):rep(w[i] + 2)
  end
  lines[1] = table.concat(head, "|")
  lines[2] = table.concat(rule, "+")
  for r = 1, #rows do
    local parts = {}
    for i = 1, #columns do
      local s = cells[r][i]
      parts[i] = " " .. (tonumber(s) and (" "):rep(w[i] - #s) .. s or s .. (" "):rep(w[i] - #s)) .. " "
    end
    lines[#lines + 1] = table.concat(parts, "|")
  end
  lines[#lines + 1] = ("(%d row%s)"):format(#rows, #rows == 1 and "" or "s")
  return table.concat(lines, "\n")
end
M.render_rows = render_rows

function Handle:sql(query, db)
  if type(query) ~= "string" then error("svc:sql(QUERY [, DB]): QUERY is a string", 2) end
  local c, err = self:_master_conn(db)
  if not c then return nil, err end
  local rows, info = c:query(query)
  c:close()
  if not rows then return nil, info end
  local columns = info.columns or {}
  return setmetatable(rows, { __tostring = function(t)
    if #columns == 0 then return info.command or "OK" end
    return render_rows(t, columns)
  end, __index = { columns = columns, command = info.command } })
end

function Handle:backups()
  local site, err = self:_site()
  if not site then return nil, err end
  local s3 = require "pgr.s3"
  local c, cfg = s3.connect({ site = site })
  if not c then return nil, cfg end
  local list
  list, err = s3.list_backups(c, cfg.bucket, self.svc.backup_prefix or self.cluster)
  c:close()
  if not list then return nil, err end
  local out = {}
  for _, b in ipairs(list) do
    out[#out + 1] = { name = b.name, layout = b.layout, time = b.time, size = b.size, complete = b.complete,
                      missing = b.missing, url = b.url }
  end
  return out
end

function Handle:logs(pod, n)
  n = n or 50
  if math.type(n) ~= "integer" or n < 1 then error("svc:logs(POD [, N]): N is a positive whole number of lines", 2) end
  local k, err = self:_k8s()
  if not k then return nil, err end
  if pod == nil or pod == "master" then
    local pods
    pods, err = self:pods()
    if not pods then return nil, err end
    pod = nil
    for _, p in ipairs(pods) do if p.role == "master" then pod = p.name end end
    if not pod then return nil, errors.new("no_master", ("no pod of %s is labelled spilo-role=master"):format(self.cluster)) end
  end
  if type(pod) ~= "string" or not pod:match("^[a-z0-9][a-z0-9.-]*$") then
    error("svc:logs(POD [, N]): POD is a pod name (or \"master\")", 2)
  end
  local text, lerr = k:pod_log(pod, { tail = n, namespace = self.namespace })
  if not text then return nil, lerr end
  return (text:gsub("\n$", ""))
end

function Handle:runs()
  local site, err = self:_site()
  if not site then return nil, err end
  local state_dir = self.state_dir or require("pgr.site").state_dir(site)
  local ok, runs = pcall(require("pgr.runbook").runs, state_dir, self.proc)
  if not ok then return nil, errors.new("runs", tostring(runs)) end
  local out = {}
  for _, r in ipairs(runs) do
    local done = 0
    for _ in pairs(r.done) do done = done + 1 end
    out[#out + 1] = { id = r.id, dir = r.dir, finished = r.finished, status = r.status or (r.finished and "?" or "unfinished"),
                      steps_done = done, steps = #self.proc.steps, changed = r.wrote or false }
  end
  return out
end

function Handle:close()
  if self._client then self._client:close() self._client = nil end
end

M.Handle = Handle
return M
