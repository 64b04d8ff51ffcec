-- pgr repl: a Lua prompt with every pgr module loaded, for troubleshooting on a live system.
local M = {
  summary = "interactive Lua prompt with every pgr module preloaded (history, completion)",
  usage = "Usage: pgr repl",
  help = [[
Every pgr module is a global: json, yaml, pg, k8s, s3, fanout, hostlist, restore, runbook, ...
exec(POD, COMMAND [, OPTS]) runs a command in a pod as kubectl exec does (POD: "ns/name" or a
name in the kubeconfig's namespace; COMMAND: an argv table, or a line for sh -c; OPTS as
k8s.exec's: container=, stdin=, timeout=); its output streams to the terminal and it returns
the exit code:  exec("spire/spire-postgres-0", "psql -U postgres -c 'select 1'", {container="postgres"})
Expressions print their value (tables pretty-printed, keys sorted, cycles marked); a statement
that is not finished continues on the next line ("   >>"). History is kept in
$XDG_STATE_HOME/pgr/repl_history (or ~/.local/state/pgr/repl_history). Tab completes globals
and table fields (json.en<TAB>). Ctrl-D leaves; Ctrl-C abandons the current line.

On start a banner says what pgr is connected to: its version, the site file, the Kubernetes context
and API server, the S3 endpoint (or what is missing). help() lists the helpers and modules.
service "spire" is a handle on a service: :status() (pgr status's facts), :sql(query [, db]) on its
master as postgres in a read-only transaction, :pods(), :secrets() (redacted), :backups(),
:logs(pod [, n]), :runs(). k8s's functions use the site's kubeconfig and context (k8s.list("pods",
{namespace = "spire"})); s3's the site's endpoint and credentials (s3.backups("spire")). Everything
is read-only unless its name says otherwise (k8s.delete, k8s.scale, ...).]],
}

-- Loads every embedded pgr module as a global named after its last component (pgr.s3 -> s3).
function M.preload(env)
  for _, name in ipairs(require "pgr.embedded") do
    local short = name:match("^pgr%.([%w_]+)$")
    if short and not name:match("^pgr%.cmd") and short ~= "cli" and short ~= "embedded" then
      local ok, mod = pcall(require, name)
      if ok then env[short] = mod end
    end
  end
  env.exec = M.exec
  return env
end

-- One line for each helper and module help() lists (modules without one are listed bare).
M.HELPERS = {
  { "service(NAME)", "a service's handle: :status() :sql(query [, db]) :pods() :secrets() :backups() :logs(pod [, n]) :runs()" },
  { "exec(POD, COMMAND [, OPTS])", "run a command in a pod, as kubectl exec does; returns its exit code" },
  { "help()", "this list" },
}
M.MODULES = {
  k8s = "the Kubernetes API (site's kubeconfig and context): k8s.get(kind, name, {namespace=}), k8s.list, k8s.watch",
  s3 = "S3 backups and objects (site's endpoint and credentials): s3.backups(\"spire\"), s3.connect() -> client",
  pg = "PostgreSQL (libpq): pg.connect{host=, user=, password=, dbname=} -> conn; conn:query(sql, ...)",
  status = "pgr status's facts and verdicts: status.collect(\"spire\"), status.report({...}), status.format",
  service = "service(NAME): the handle above",
  runbook = "procedures as steps: runbook.load(path), runbook.plan(proc), runbook.runs(state_dir, proc)",
  restore = "the common Zalando restore: restore.procedure{...} and its step helpers",
  restorepolicy = "which errors of a pg_dumpall -c restore into fresh Spilo are expected, and why",
  site = "the site file: site.load([path]), site.state_dir(site), site.command(site, name)",
  kubeconfig = "kubeconfig files as kubectl merges them: kubeconfig.load{kubeconfig=, context=}",
  fanout = "a command on many nodes over ssh: fanout.run{hosts=, argv=}",
  hostlist = "ncn-w00[1-3] expansion and folding: hostlist.expand, hostlist.fold",
  json = "JSON: json.decode, json.encode, json.null, json.array, json.object",
  yaml = "YAML (multi-document): yaml.decode",
  base64 = "base64.encode, base64.decode",
  pretty = "pretty.format(v): what the prompt prints",
  ui = "terminal output: ui.line, ui.warn, ui.bytes, ui.duration",
  sys = "clocks, files, locks, processes: sys.now, sys.sleep, sys.stat, sys.listdir",
  cron = "CronJob schedules: cron.parse(\"10 3 * * *\"):previous(os.time())",
  errors = "error values: errors.new(code, message), errors.is(v)",
  http = "HTTP requests (libcurl)",
  args = "command-line flags of pgr's commands",
  repl = "the prompt itself (readline, history, completion)",
}

-- help() in the REPL (M.helpers; M.help is the command's --help text): the helpers and modules, one line each.
function M.helpers()
  local lines = { "Helpers:" }
  for _, h in ipairs(M.HELPERS) do
    local name = h[1]:match("^[%w_]+")
    if rawget(_G, name) ~= nil then lines[#lines + 1] = ("  %-28s %s"):format(h[1], h[2]) end
  end
  lines[#lines + 1] = "Modules (globals):"
  local names = {}
  for k, v in pairs(_G) do
    if type(v) == "table" and package.loaded["pgr." .. k] == v then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do lines[#lines + 1] = ("  %-13s %s"):format(k, M.MODULES[k] or "") end
  lines[#lines + 1] = "Read-only unless a call's name says otherwise (k8s.delete, k8s.scale, ...)."
  io.stdout:write(table.concat(lines, "\n"), "\n")
end

-- What this REPL is connected to, in one line; never contacts a server.
function M.banner()
  local parts = { require("pgr.cmd.version").line() }
  local site, serr = require("pgr.site").load()
  if not site then
    parts[#parts + 1] = "site: " .. tostring(serr)
  else
    parts[#parts + 1] = "site " .. (site.path or (require("pgr.site").DEFAULT_PATH .. " absent: defaults"))
    local kc, kerr = require("pgr.kubeconfig").load({ kubeconfig = site.kubeconfig, context = site.context })
    if kc then
      parts[#parts + 1] = ("Kubernetes %s at %s"):format(kc.context or "in-cluster", tostring(kc.server))
    else
      parts[#parts + 1] = "Kubernetes: none (" .. tostring(kerr):gsub("^kubeconfig: ", "") .. ")"
    end
    local sc = site.s3 and site.s3.credentials
    if sc and sc.secret then
      local ep = os.getenv("AWS_ENDPOINT_URL_S3") or os.getenv("AWS_ENDPOINT_URL") or site.s3.endpoint
      parts[#parts + 1] = ("S3 %s, credentials in secret %s"):format(ep or "(endpoint from the secret)", sc.secret)
    else
      local cfg, err = require("pgr.s3").config({ site = site })
      if cfg then
        parts[#parts + 1] = ("S3 %s/%s"):format(cfg.endpoint, cfg.bucket)
      else
        parts[#parts + 1] = "S3: none (" .. tostring(err):gsub(":.*", "") .. ")"
      end
    end
  end
  parts[#parts + 1] = "help() lists the helpers"
  return table.concat(parts, " | "), site
end

-- The helpers as globals, the k8s module's default client configured as the site says.
function M.setup(env, site)
  env.help = M.helpers
  env.service = require "pgr.service"
  if site then require("pgr.k8s").configure({ kubeconfig = site.kubeconfig, context = site.context }) end
  return env
end

-- exec(pod, command [, opts]) -> exit code | nil, err: kubectl exec at the prompt.
function M.exec(pod, command, opts)
  local argv = command
  if type(command) == "string" then argv = { "sh", "-c", command } end
  assert(type(argv) == "table", "exec(POD, COMMAND [, OPTS]): COMMAND is an argv table or a shell line")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.on_stdout = o.on_stdout or function(chunk) io.stdout:write(chunk) io.stdout:flush() end
  o.on_stderr = o.on_stderr or function(chunk) io.stderr:write(chunk) io.stderr:flush() end
  local res, err = require("pgr.k8s").exec(pod, argv, o)
  if not res then return nil, err end
  return res.code
end

function M.run()
  M.preload(_G)
  local banner, site = M.banner()
  M.setup(_G, site)
  return require("pgr.repl").run(banner)
end

return M
