-- pgr run FILE: runs a procedure — preflight checks, one confirmation, the steps with a journal
-- under the state directory — and resumes an interrupted run with --resume.
local cli = require "pgr.cli"
local ui = require "pgr.ui"
local runbook = require "pgr.runbook"
local site = require "pgr.site"

local M = {
  summary = "run a restore procedure (dry run, confirmation, journal, --resume)",
  usage = "Usage: pgr run FILE [--backup NAME | --dump PATH [--manifest PATH]] [--jobs N] [--dry-run] [--yes] [--resume]\n"
    .. "       [--new] [--no-safety-backup]",
  help = [[
FILE is a procedure: a path such as services/spire.lua, or a service name (spire, keycloak, vcs,
hsm, sls) looked up in /etc/pgr/services and the installed share/pgr/services, never in the
current directory. `pgr plan FILE` lists its steps without contacting anything.

What is restored:
  (no source option)   the newest complete backup of the service in the site's S3 bucket
  --backup NAME        that backup in S3 (spire-postgres-2022-09-14T03:10:04, with or without .psql)
  --dump PATH          a local pg_dumpall file; --manifest PATH adds its secrets manifest. Without a
                       manifest the passwords in PostgreSQL are set to those of the current secrets.

How it runs:
  1. Checks first (the backup is complete, the manifest fits the cluster, the API allows every
     verb, the objects exist). A failed check exits 3: nothing was changed.
  2. The way back: before anything changes, the cluster as it is now is backed up as `pgr backup`
     does (pg_dumpall -c in the master pod and its secrets' manifest), to S3 under pgr/ where the
     nightly retention never deletes it (or, without S3, to the state directory's backups/). The
     run's last lines, and any failure's, print the `pgr run ... --backup NAME` that returns to it.
     A master that does not answer cannot be backed up: the run stops there, nothing changed;
     --no-safety-backup (or safety_backup = false in the site file) goes on without a way back.
     --resume never takes it again; --new after a run that changed the cluster keeps that run's.
  3. Before the first destructive step pgr asks once on the terminal; --yes answers for you.
     Without a terminal and without --yes it refuses to start (exit 2).
  4. Every step is journaled (started, done, failed, with times) in a run directory under the
     state directory, with what was saved before destruction (files mode 0600) and a log.
     Passwords never appear in the output, the journal or the log.
  5. If a step fails or pgr is interrupted, fix the cause and run the same command with
     --resume: it continues at the first step not done, with what earlier steps recorded.
  5. One pgr at a time per cluster, from any machine: a run holds the Lease pgr-<cluster> in the
     cluster's namespace (who: user@host, pid, run id) and renews it while it works. Another
     pgr run, drill or backup of that cluster exits 3 naming the holder. A holder that died
     (kill -9, a lost node) keeps it until it expires (the site's lease_seconds, default 300 s);
     --resume of that same run takes it back at once, as does a new run from the same state
     directory (whose lock proves the holder gone).
  6. --new starts over instead (another --backup or --dump, say). If the unfinished run had already
     changed the cluster, the new run keeps what that run recorded before the change (replica
     count, numberOfInstances, the saved postgresql object and secrets): the cluster as it is now
     is half-restored. The unfinished run is closed once the new run's checks have passed.

--jobs N loads the dump's tables over N connections to the database pod and builds their indexes
side by side (default: the site's restore_jobs, else 1), from S3 as from a file.

--dry-run runs every read and check and prints each change it would make, without making it
(no journal, no lock, no confirmation).

State directory: --state-dir, else $PGR_STATE_DIR, else the site's state_dir, else
$XDG_STATE_HOME/pgr, else ~/.local/state/pgr. Site file: --site, else $PGR_SITE, else
/etc/pgr/site.lua (see etc/site.example.lua).

Examples:
  pgr run services/spire.lua --dry-run
  pgr run spire --yes
  pgr run services/vcs.lua --dump vcs.psql --manifest vcs.manifest
  pgr run services/vcs.lua --resume --yes

Exit codes: 0 done; 1 a step failed (resumable: the exact --resume command is printed);
2 bad usage, or consent missing, or an unfinished run exists (--resume or --new); 3 a check
failed before anything changed, or another pgr holds the cluster's lease or lock; 130 interrupted
(resumable).]],
  flags = {
    { name = "backup", value = "NAME", help = "restore this backup from S3 (default: the newest)" },
    { name = "dump", value = "PATH", help = "restore this local pg_dumpall file instead of S3" },
    { name = "manifest", value = "PATH", help = "with --dump: the secrets manifest to re-apply" },
    { name = "jobs", short = "j", value = "N", help = "load the dump over N connections (default: site's restore_jobs or 1)" },
    { name = "dry-run", short = "n", help = "run the reads and checks, print the changes, change nothing" },
    { name = "yes", short = "y", help = "do not ask before the destructive steps" },
    { name = "resume", help = "continue the newest unfinished run of this procedure" },
    { name = "new", help = "start over; an unfinished run is closed, its record of the cluster kept" },
    { name = "no-safety-backup", help = "do not back up the cluster before changing it (no way back)" },
    { name = "json", help = "machine-readable events on stdout, one JSON object per line" },
    { name = "quiet", short = "q", help = "no progress bars or status lines" },
    { name = "state-dir", value = "DIR", help = "where runs are journaled" },
    { name = "site", value = "FILE", help = "the site file (default $PGR_SITE or /etc/pgr/site.lua)" },
  },
}

local function usage_error(msg)
  return cli.usage_error("run", M, msg)
end

function M.run(argv)
  local opts, pos = cli.parse("run", M, argv)
  if not opts then return cli.EXIT.usage end
  if #pos ~= 1 then return usage_error("needs exactly one procedure FILE") end
  if opts.backup and opts.dump then return usage_error("--backup and --dump exclude each other") end
  if opts.manifest and not opts.dump then
    return usage_error("--manifest goes with --dump (an S3 backup brings its own manifest)")
  end
  if opts.resume and opts.new then return usage_error("--resume and --new exclude each other") end
  local jobs = opts.jobs and tonumber(opts.jobs)
  if opts.jobs and (not jobs or jobs % 1 ~= 0 or jobs < 1 or jobs > 64) then
    return usage_error("--jobs must be a whole number from 1 to 64")
  end
  ui.configure({ json = opts.json or false, quiet = opts.quiet or false })

  local path, err = runbook.locate(pos[1])
  if not path then return usage_error(tostring(err)) end
  local s
  s, err = site.load(opts.site)
  if not s then
    cli.eprint("pgr run: ", tostring(err))
    return cli.EXIT.usage
  end
  local proc
  proc, err = runbook.load(path)
  if not proc then
    cli.eprint("pgr run: ", tostring(err))
    return cli.EXIT.failed
  end
  return runbook.run(proc, {
    dry_run = opts.dry_run, yes = opts.yes, resume = opts.resume, new = opts.new,
    no_safety_backup = opts.no_safety_backup,
    site = s, state_dir = opts.state_dir, file = pos[1],
    state_dir_flag = opts.state_dir, site_flag = opts.site,
    source = { backup = opts.backup, dump = opts.dump, manifest = opts.manifest, jobs = jobs and math.tointeger(jobs) },
  })
end

return M
