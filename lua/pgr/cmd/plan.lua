-- pgr plan FILE: prints a procedure's steps, numbered, with what each reads or changes; contacts
-- nothing (no Kubernetes, no S3, no database) and writes nothing.
local cli = require "pgr.cli"
local ui = require "pgr.ui"
local runbook = require "pgr.runbook"

local M = {
  summary = "print the steps of a procedure and what each touches, without contacting anything",
  usage = "Usage: pgr plan FILE [--json]",
  help = [[
FILE is a procedure: a path such as services/spire.lua, or a service name (spire, keycloak, vcs,
hsm, sls) looked up in /etc/pgr/services and the installed share/pgr/services, else the copy
built into pgr; never in the current directory. Its file must be owned by root or you and
writable by no one else.

Each step is printed with its number (the one `pgr run` shows and journals), whether it is a
check (a preflight step: if it fails, nothing has been changed) or destructive (pgr run asks
before the first of these unless --yes), and what it touches.

Examples:
  pgr plan services/spire.lua
  pgr plan keycloak --json | jq -r 'select(.event=="plan_step") | .name'

Exit codes: 0 printed; 1 the file is not a procedure; 2 bad usage.]],
  flags = {
    { name = "json", help = "one JSON object per line: a plan event, then one plan_step per step" },
  },
}

function M.run(argv)
  local opts, pos = cli.parse("plan", M, argv)
  if not opts then return cli.EXIT.usage end
  if #pos ~= 1 then return cli.usage_error("plan", M, "needs exactly one procedure FILE") end
  ui.configure({ json = opts.json or false })
  local path, err = runbook.locate(pos[1])
  if not path then cli.eprint("pgr plan: ", tostring(err)) return cli.EXIT.usage end
  local proc
  proc, err = runbook.load(path)
  if not proc then cli.eprint("pgr plan: ", tostring(err)) return cli.EXIT.failed end
  runbook.plan(proc, {})
  return cli.EXIT.ok
end

return M
