-- pgr backups: the Postgres backups in S3 (the runbook's `cray artifacts list postgres-backup`),
-- paired .psql + .manifest, newest first, incomplete pairs flagged; a table or JSON.
local cli = require "pgr.cli"

local M = {
  summary = "list the Postgres backups in S3, newest first (CSM's pairs and the operator's logical backups)",
  usage = "Usage: pgr backups [--bucket NAME] [--endpoint URL] [--json] [SERVICE|CLUSTER]",
  help = [[
SERVICE is spire, keycloak, vcs, hsm or sls; a CLUSTER name (spire-postgres) or any key prefix
works too. Without one, every backup in the bucket is listed.

Two layouts are found (the LAYOUT column):
  csm       CSM's nightly job: CLUSTER-TIME.psql and CLUSTER-TIME.manifest. It is complete when
            both exist; STATUS says which half is missing otherwise (a job that failed half-way
            leaves a .psql without its .manifest). pgr run never picks an incomplete one by itself.
  operator  the postgres-operator's logical backup, spilo/CLUSTER/UID/logical_backups/EPOCH.sql.gz:
            gzip'd, without a manifest by design (pgr run then sets the passwords from the
            current secrets). Its NAME is the key without .sql.gz; pgr run --backup takes it.
Backups pgr made (pgr backup, pgr run's safety backup, under the key prefix pgr/) are listed
beside the nightly ones, marked (pgr) in STATUS. The endpoint, bucket and credentials come from the site file
and the usual AWS settings (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/config endpoint_url).]],
  flags = {
    { name = "bucket", short = "b", value = "NAME", help = "bucket (default: the site's, postgres-backup)" },
    { name = "endpoint", value = "URL", help = "S3 endpoint, e.g. http://rgw-vip.nmn" },
    { name = "json", help = "one JSON array instead of the table" },
  },
}

local function human_size(n)
  if not n then return "-" end
  return require("pgr.ui").bytes(n)
end

function M.run(argv)
  local opts, pos = cli.parse("backups", M, argv)
  if not opts then return cli.EXIT.usage end
  if #pos > 1 then return cli.usage_error("backups", M, "takes at most one SERVICE or CLUSTER") end
  local s3 = require "pgr.s3"
  local list, err = s3.backups(pos[1], { bucket = opts.bucket, endpoint = opts.endpoint })
  if not list then
    cli.eprint("pgr backups: " .. tostring(err))
    return cli.EXIT.failed
  end
  if opts.json then
    local out = {}
    for _, b in ipairs(list) do
      out[#out + 1] = { name = b.name, layout = b.layout, cluster = b.cluster, time = b.time, complete = b.complete,
                        missing = b.missing, size = b.size, url = b.url, by = b.by,
                        psql = b.psql and b.psql.key, manifest = b.manifest and b.manifest.key }
    end
    print(require("pgr.json").encode(out))
    return cli.EXIT.ok
  end
  if #list == 0 then
    cli.eprint(("pgr backups: no backups%s"):format(pos[1] and (" of " .. s3.cluster_of(pos[1])) or ""))
    return cli.EXIT.failed
  end
  local rows = { { "TIME", "CLUSTER", "LAYOUT", "SIZE", "STATUS", "NAME" } }
  for _, b in ipairs(list) do
    rows[#rows + 1] = {
      b.time or (b.last_modified or "-"):sub(1, 19), b.cluster, b.layout or "-", human_size(b.size),
      (b.complete and "complete" or ("no ." .. b.missing)) .. (b.by and (" (" .. b.by .. ")") or ""), b.name,
    }
  end
  local w = {}
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do w[i] = math.max(w[i] or 0, #v) end
  end
  for _, r in ipairs(rows) do
    local cells = {}
    for i, v in ipairs(r) do cells[i] = i < #r and v .. (" "):rep(w[i] - #v) or v end
    print(table.concat(cells, "  "))
  end
  return cli.EXIT.ok
end

return M
