-- pgr repl: a Lua prompt with every pgr module loaded, for troubleshooting on a live system.
local M = {
  summary = "interactive Lua prompt with every pgr module preloaded (history, completion)",
  usage = "Usage: pgr repl",
  help = [[
Every pgr module is a global: json, yaml, pg, k8s, s3, fanout, hostlist, restore, runbook, ...
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
  return env
end

function M.run()
  M.preload(_G)
  return require("pgr.repl").run()
end

return M
