-- pgr drill SERVICE | --all: restores a backup into a scratch cluster beside the live one, checks
-- it, deletes it, and says pass or fail — the proof that a backup restores, without touching
-- production (pgr.drill does the work).
local cli = require "pgr.cli"
local ui = require "pgr.ui"
local runbook = require "pgr.runbook"
local site = require "pgr.site"
local drill = require "pgr.drill"

local SERVICES = { "spire", "keycloak", "vcs", "hsm", "sls" }

local M = {
  summary = "restore a backup into a scratch cluster, check it, delete it: does the backup restore?",
  usage = "Usage: pgr drill SERVICE [--backup NAME | --dump PATH [--manifest PATH]] [--json]\n"
    .. "       pgr drill --all [--json]",
  help = [[
SERVICE is spire, keycloak, vcs, hsm or sls (or a procedure file, as pgr run takes it). The live
cluster, its client and its secrets are never changed: they are only read.

What is drilled:
  (no source option)   the newest complete backup of the service in the site's S3 bucket
  --backup NAME        that backup in S3
  --dump PATH          a local pg_dumpall file; --manifest PATH its secrets manifest

What a drill does, in order (each phase is timed in the report):
  1. The checks pgr run makes before it changes anything, as far as they only read: the backup
     is complete, the manifest holds the cluster's secrets, the dump is not from a newer
     PostgreSQL, HSM/SLS schema versions equal the deployed ones; also that the dump is this
     service's (it creates the live postgresql's databases and roles, and holds tables the live
     cluster has) and that the API allows what the drill needs (postgresqls, pods, secrets,
     volume claims, leases).
  2. A scratch cluster left by an earlier drill (killed, or stopped by a third Ctrl-C) is deleted.
  3. The scratch postgresql pgr-drill-CLUSTER is created in the service's namespace: one instance,
     the live spec's version, resources, users and databases, team "pgr", labelled
     app.kubernetes.io/managed-by=pgr. The operator gives it new secrets.
  4. The dump is streamed into it with pgr run's engine and error policy (--jobs N as pgr run).
  5. Every table's row count is compared with the dump's COPY count, and each user of the
     manifest logs in with the manifest's password (without a manifest: each user's role exists
     and logs in once pgr sets its password, as pgr run sets them from the secrets).
  6. The scratch cluster, its pods, volumes and secrets are deleted — also after a failure or
     Ctrl-C.
Like pgr run, a drill holds the cluster's Lease pgr-CLUSTER while it works: a pgr run of the same
cluster waits for it to end, and a drill refuses while a run is going on.

--all drills the five services in turn (the newest backup of each): the command a site runs weekly
from cron. It exits non-zero if any drill fails.

Examples:
  pgr drill spire
  pgr drill hsm --dump hsm.psql --manifest hsm.manifest
  pgr drill --all --json > /var/log/pgr-drill.json

Exit codes: 0 the backup passed; 1 it failed (the report says why); 2 bad usage; 3 the drill could
not run (another pgr holds the cluster, the API refused, the live cluster is missing): nothing was
made; 130 interrupted by Ctrl-C or SIGTERM (the scratch cluster is deleted first).]],
  flags = {
    { name = "backup", value = "NAME", help = "drill this backup from S3 (default: the newest)" },
    { name = "dump", value = "PATH", help = "drill this local pg_dumpall file instead of S3" },
    { name = "manifest", value = "PATH", help = "with --dump: its secrets manifest" },
    { name = "all", help = "drill spire, keycloak, vcs, hsm and sls in turn" },
    { name = "jobs", short = "j", value = "N", help = "load the dump over N connections (default: site's restore_jobs or 1)" },
    { name = "json", help = "machine-readable events on stdout, one JSON object per line; the report last" },
    { name = "quiet", short = "q", help = "no progress bars or status lines" },
    { name = "state-dir", value = "DIR", help = "the state directory whose lock the drill holds" },
    { name = "site", value = "FILE", help = "the site file (default $PGR_SITE or /etc/pgr/site.lua)" },
  },
}

local function usage_error(msg) return cli.usage_error("drill", M, msg) end

local function print_report(report, json)
  if json then
    ui.json(drill.event(report))
    return
  end
  for _, l in ipairs(drill.describe(report)) do ui.line(l) end
end

function M.run(argv)
  local opts, pos = cli.parse("drill", M, argv)
  if not opts then return cli.EXIT.usage end
  if opts.all and #pos > 0 then return usage_error("--all drills every service: give no SERVICE") end
  if not opts.all and #pos ~= 1 then return usage_error("needs exactly one SERVICE (or --all)") end
  if opts.backup and opts.dump then return usage_error("--backup and --dump exclude each other") end
  if opts.manifest and not opts.dump then
    return usage_error("--manifest goes with --dump (an S3 backup brings its own manifest)")
  end
  if opts.all and (opts.backup or opts.dump) then
    return usage_error("--all drills the newest backup of each service: --backup and --dump name one service's")
  end
  local jobs = opts.jobs and tonumber(opts.jobs)
  if opts.jobs and (not jobs or jobs % 1 ~= 0 or jobs < 1 or jobs > 64) then
    return usage_error("--jobs must be a whole number from 1 to 64")
  end
  ui.configure({ json = opts.json or false, quiet = opts.quiet or false })
  local s, err = site.load(opts.site)
  if not s then
    cli.eprint("pgr drill: ", tostring(err))
    return cli.EXIT.usage
  end
  local procs = {}
  for _, name in ipairs(opts.all and SERVICES or pos) do
    local path
    path, err = runbook.locate(name)
    if not path then return usage_error(tostring(err)) end
    local proc
    proc, err = runbook.load(path)
    if not proc then
      cli.eprint("pgr drill: ", tostring(err))
      return cli.EXIT.usage
    end
    if not proc.service then
      return usage_error(("%s is not a restore procedure (restore.procedure{...}): nothing to drill"):format(path))
    end
    procs[#procs + 1] = proc
  end
  local source = { backup = opts.backup, dump = opts.dump, manifest = opts.manifest,
                   jobs = jobs and math.tointeger(jobs) }
  local results, worst = {}, 0
  for _, proc in ipairs(procs) do
    if #procs > 1 then ui.line(("== drill of %s"):format(proc.service.service)) end
    local report = drill.run({ proc = proc, site = s, source = source, state_dir = opts.state_dir })
    print_report(report, opts.json)
    results[#results + 1] = { service = report.service, result = report.result, exit = report.exit }
    -- a failed drill outranks one that could not run; an interrupt ends --all
    if report.exit == 130 then worst = 130 break end
    if report.exit == 1 or (report.exit == 3 and worst == 0) then worst = report.exit end
  end
  if #procs > 1 then
    local parts = {}
    for _, r in ipairs(results) do parts[#parts + 1] = r.service .. " " .. r.result end
    ui.json({ event = "drill_summary", results = results, exit = worst })
    if not opts.json then ui.line("drills: " .. table.concat(parts, ", ")) end
  end
  return worst
end

return M
