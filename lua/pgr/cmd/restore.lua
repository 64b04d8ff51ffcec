-- pgr restore: feed a pg_dumpall plain-SQL dump (file, stdin, gzip, s3://) into a PostgreSQL server,
-- as `psql -U postgres < dump` would, with a progress bar, an error summary and parallel loading.
local cli = require "pgr.cli"
local pg = require "pgr.pg"
local policy = require "pgr.restorepolicy"

local M = {
  summary = "restore a pg_dumpall dump into a server (psql-compatible, streaming, parallel)",
  usage = "Usage: pgr restore [--conn CONNINFO] [--jobs N] [--stop-on-error] [--quiet] SOURCE",
  help = [[
SOURCE is a path, - (standard input) or s3://bucket/key; gzip is decompressed on the fly.
The dump is checked first: custom-format or tar archives, binary data and (for files) a missing
"dump complete" trailer are refused before anything is sent.

Errors are counted and go on, as psql's are. The target is taken to be a freshly created Spilo
cluster (or one whose databases were just dropped): the errors a pg_dumpall -c dump meets there are
expected, each class named once in the summary with its count and reason — roles and databases
that exist, DROP ROLE of a role the cluster keeps, DROP DATABASE postgres while pg_cron is connected
to it, Spilo's objects that exist in a database the dump did not create (the policy and its
reasons: lua/pgr/restorepolicy.lua). Any other error is unexpected; --strict makes every error count.
The exit code is 0 when no unexpected error occurred, 1 otherwise, 3 when the dump was refused
before anything was sent (its errors listed).
A file is read once before anything is sent; a dump that drops a database it never creates again
is refused then. Standard input and s3:// are not read ahead: there every database counts as one
that existed, so "already exists" is expected in all of them.
--jobs N loads the tables over N connections and builds indexes in parallel: from a file, or
from s3:// (the object is read once, each table's rows handed to a connection as they arrive).
A gzip'd dump or standard input loads over one connection.
From s3:// a thread reads the object ahead of the load, up to s3.readahead_mb of the site file
(default 32 MiB; with --jobs as much again is held for the connections), so the network and the
server work at once; a cut connection is resumed where it stopped.
The connection defaults to libpq's environment (PGHOST, PGUSER, PGPASSWORD, service files).

TLS: --conn is libpq's own, with libpq's defaults: sslmode=prefer uses TLS when the server
offers it, checks no certificate, and sends the password in clear to a server (or a man in the
middle) that refuses TLS. Say what you need in CONNINFO, e.g. 'sslmode=verify-full
sslrootcert=ca.pem' or 'sslmode=require channel_binding=require'. (pgr run connects to the
database pods as the site file's postgres settings say: TLS required by default.)]],
  flags = {
    { name = "conn", short = "c", value = "CONNINFO", help = "libpq connection string or URI" },
    { name = "jobs", short = "j", value = "N", help = "parallel loading connections (file or s3://)" },
    { name = "stop-on-error", help = "stop at the first unexpected error (psql ON_ERROR_STOP)" },
    { name = "strict", help = "treat every error as unexpected, even 'already exists'" },
    { name = "allow-truncated", help = "restore a file that lacks the completion trailer" },
    { name = "quiet", short = "q", help = "no progress output" },
  },
}

-- Exit codes by fatal error: nothing was sent for these, so the server is untouched.
local PREFLIGHT = { format = true, binary = true, empty = true, connect = true, io = true }

local function s3_source(url)
  local ok, s3 = pcall(require, "pgr.s3")
  if not ok or type(s3.reader) ~= "function" then
    return nil, "s3:// sources need the S3 module (pgr.s3.reader)"
  end
  return s3.reader(url)
end

function M.run(argv)
  local opts, pos = cli.parse("restore", M, argv)
  if not opts then return cli.EXIT.usage end
  if #pos ~= 1 then return cli.usage_error("restore", M, "needs exactly one SOURCE") end
  local jobs = tonumber(opts.jobs or "1")
  if not jobs or jobs < 1 or jobs > 64 or jobs % 1 ~= 0 then
    cli.eprint("pgr restore: --jobs must be a whole number from 1 to 64")
    return cli.EXIT.usage
  end
  local ui = require "pgr.ui"
  if opts.quiet then ui.configure { quiet = true } end

  local source, total, creates = pos[1], nil, nil
  if source:match("^s3://") then
    local reader, size_or_err = s3_source(source)
    if not reader then
      ui.error(tostring(size_or_err))
      return cli.EXIT.preflight
    end
    source, total = reader, type(size_or_err) == "number" and size_or_err or nil
  end

  -- A file is read through once before anything is sent (a fraction of the restore's time): a
  -- meta-command pgr would refuse, or a missing trailer, is then found with the server untouched.
  if type(source) == "string" and source ~= "-" then
    local info, ierr = pg.inspect(source)
    if not info then
      ui.error(tostring(ierr))
      return cli.EXIT.preflight
    end
    if #info.unsupported > 0 then
      local u = info.unsupported[1]
      ui.error(("%s line %d: meta-command %s is not supported (pgr runs \\connect, \\encoding, "
        .. "\\restrict and \\unrestrict, as pg_dumpall writes them); nothing was restored"):format(
        source, u.line, u.command))
      return cli.EXIT.preflight
    end
    if not info.trailer and not opts.allow_truncated then
      ui.error(("%s lacks the \"dump complete\" trailer pg_dumpall writes last: the dump is truncated "
        .. "(nothing was restored; --allow-truncated restores it anyway)"):format(source))
      return cli.EXIT.preflight
    end
    local ok, why = policy.check_drops(info)
    if not ok then
      ui.error(("%s: %s; nothing was restored"):format(source, why))
      return cli.EXIT.preflight
    end
    creates = info.databases
  end
  local p = policy.new { mode = opts.strict and "strict" or "fresh", creates = creates }

  local bar
  local started = require("pgr.sys").now()
  local result, err = pg.restore(opts.conn or "", source, {
    jobs = jobs,
    stop_on_error = opts.stop_on_error or false,
    allow_truncated = opts.allow_truncated or false,
    total = total,
    on_error = p.on_error,
    progress = not opts.quiet and function(p)
      bar = bar or ui.progress { label = "restore", total = p.total, unit = "bytes" }
      bar:update(p.bytes, ("%d stmts, %d rows, %d errors"):format(p.statements, p.copy_rows, p.errors))
    end or nil,
  })
  local secs = require("pgr.sys").now() - started
  local r = result or (err and err.result)
  if bar then bar:finish(("restore: %s in %s"):format(ui.bytes(r and r.bytes or 0), ui.duration(secs))) end
  if r then
    for _, line in ipairs(policy.describe(r, 10, p)) do io.stderr:write(line, "\n") end
  end
  if not result then
    ui.error(tostring(err))
    return PREFLIGHT[err.code] and cli.EXIT.preflight
      or (err.code == "truncated" and r and r.statements == 0 and cli.EXIT.preflight)
      or cli.EXIT.failed
  end
  if jobs > 1 and result.jobs < jobs then
    ui.warn(("loaded with %d connection(s): --jobs needs an uncompressed file or S3 object"):format(result.jobs))
  end
  if not result.ok then
    ui.error(("restore finished with %d unexpected errors%s"):format(result.errors.unexpected,
      result.stopped and " (stopped at the first)" or ""))
    return cli.EXIT.failed
  end
  return cli.EXIT.ok
end

return M
