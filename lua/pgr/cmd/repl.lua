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
and table fields (json.en<TAB>). Ctrl-D leaves; Ctrl-C abandons the current line.]],
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
  return require("pgr.repl").run()
end

return M
