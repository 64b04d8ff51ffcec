-- pgr backup SERVICE: a backup of the live cluster as CSM's nightly job makes it (pg_dumpall -c in the
-- master pod, the credential Secrets as a manifest), to S3 under pgr/ or to a directory; checked.
local cli = require "pgr.cli"
local ui = require "pgr.ui"
local runbook = require "pgr.runbook"
local site = require "pgr.site"

local M = {
  summary = "back up a service's live cluster now, as CSM's nightly job does, where no retention deletes it",
  usage = "Usage: pgr backup SERVICE [--to s3 | --to DIR] [--json] [--quiet] [--site FILE]",
  help = [[
SERVICE is spire, keycloak, vcs, hsm or sls, or a procedure file (services/spire.lua): it names the
cluster, its namespace and the users whose secrets the manifest holds.

What it makes, as the nightly postgres-db-backup job makes it:
  <cluster>-<UTC time>.psql       `pg_dumpall -c -U postgres`, run inside the cluster's master pod
                                  (kubectl exec: the pod's own client, so its version matches)
  <cluster>-<UTC time>.manifest   the cluster's credential Secrets, one YAML document each
                                  (the service's users, then postgres, then standby)

Where:
  --to s3 (default)  the site's bucket (postgres-backup) under the key prefix pgr/: the nightly job's
                     retention deletes only <cluster>-* keys, never these. The dump streams into a
                     multipart upload in constant memory; a failure aborts it: no partial object.
  --to DIR           two files in DIR (mode 0600), written under a temporary name and renamed.

It is done only when checked: pg_dumpall exited 0 and its completion trailer is there, the stored
size equals what was streamed, and the manifest read back holds every user's secret. Anything less
removes what was written and exits 1.

Restore it with the command it prints, e.g.:
  pgr run spire --backup pgr/spire-postgres-2025-01-02T03:04:05
  pgr run spire --dump DIR/spire-postgres-...psql --manifest DIR/spire-postgres-...manifest
or by hand as the runbook does (kubectl cp, then kubectl exec ... psql -U postgres < the .psql).
`pgr backups SERVICE` lists these beside the nightly ones, marked (pgr).

Needs: exec into the pods (create pods/exec), read the secrets, and for S3 the site's credentials.

Exit codes: 0 done and checked; 1 failed (nothing left behind); 2 bad usage.]],
  flags = {
    { name = "to", value = "s3|DIR", help = "where the backup goes (default s3)" },
    { name = "json", help = "machine-readable events on stdout, one JSON object per line" },
    { name = "quiet", short = "q", help = "no progress bar" },
    { name = "site", value = "FILE", help = "the site file (default $PGR_SITE or /etc/pgr/site.lua)" },
  },
}

function M.run(argv)
  local opts, pos = cli.parse("backup", M, argv)
  if not opts then return cli.EXIT.usage end
  if #pos ~= 1 then return cli.usage_error("backup", M, "needs exactly one SERVICE") end
  local to = opts.to or "s3"
  ui.configure({ json = opts.json or false, quiet = opts.quiet or false })
  local path, err = runbook.locate(pos[1])
  if not path then return cli.usage_error("backup", M, tostring(err)) end
  local proc
  proc, err = runbook.load(path)
  if not proc then
    cli.eprint("pgr backup: ", tostring(err))
    return cli.EXIT.failed
  end
  local svc = proc.service
  if type(svc) ~= "table" or not svc.cluster then
    return cli.usage_error("backup", M, path .. " is not a Postgres restore procedure (restore.procedure{...})")
  end
  local s
  s, err = site.load(opts.site)
  if not s then
    cli.eprint("pgr backup: ", tostring(err))
    return cli.EXIT.usage
  end
  ui.info(("backing up %s/%s: pg_dumpall -c in its master pod, to %s"):format(svc.namespace, svc.cluster,
    to == "s3" and "S3 (pgr/)" or to))
  local res
  res, err = require("pgr.backup").take({ svc = svc, to = to, site = s })
  if not res then
    ui.error("pgr backup: " .. tostring(err))
    return cli.EXIT.failed
  end
  local restore = { "pgr", "run", pos[1] }
  for _, a in ipairs(res.restore_args) do
    restore[#restore + 1] = a:match("^[%w%-_./:=@+,]+$") and a or ("'" .. a:gsub("'", "'\\''") .. "'")
  end
  ui.line(("backup %s done: %s, %d secrets, checked (%s)"):format(res.name, ui.bytes(res.size), res.secrets, res.url))
  ui.line("restore it with: " .. table.concat(restore, " "))
  return cli.EXIT.ok
end

return M
