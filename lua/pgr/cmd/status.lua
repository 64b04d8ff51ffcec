-- pgr status [SERVICE... | --all] [--json]: how each service's Postgres cluster is doing, read-only, with
-- a verdict per service and an exit code monitoring can use (pgr.status gathers and judges).
local cli = require "pgr.cli"

local M = {
  summary = "how each service's Postgres cluster is doing: pods, replication, logins, backups, runs; a verdict",
  usage = "Usage: pgr status [SERVICE... | --all] [--json] [--site FILE] [--state-dir DIR] [--timeout SECONDS]",
  help = [[
SERVICE is spire, keycloak, vcs, hsm or sls (or a procedure file); --all (or no SERVICE) is all five,
one screen. Nothing is changed: Kubernetes objects are read, PostgreSQL is logged into and queried,
S3 is listed and the newest dump's last bytes are read. Every request is bounded (5 s; PostgreSQL
logins 3 s, all of a service's at once; queries 5 s); with several services each runs in its own
process at the same time, and one that does not finish within --timeout (30 s) is "unknown".

For each service:
  postgresql   spec.numberOfInstances, spec.postgresql.version, status.PostgresClusterStatus
  pods         each database pod: role (spilo-role), phase, Ready, restarts, node; the master's
               PostgreSQL version, each replica's replication as the master's pg_stat_replication
               shows it (state, lag in bytes and seconds) and pg_is_in_recovery() on the replica
  logins       each user of the service's secrets logs in to the master with its secret's password:
               ok or FAILED and the class of failure (never the password)
  databases    each database's size
  client       the service's workload (e.g. statefulset spire-server): ready of desired replicas;
  dependants   what the restore procedure also touches (spire-agent, spire-jwks, keycloak's jobs and
               oauth2 proxies, ...)
  backups      the newest nightly backup in S3 (CSM's job or the operator's logical backup): age, size,
               complete (its .manifest, and pg_dumpall's completion trailer read from the object's
               tail); pgr's own newest backup (pgr/ prefix); the backup CronJob and its schedule
  runs         a pgr run of the service in progress (pid, step) or stopped half-way, with the exact
               --resume command; else the last run. And the cluster's lease (pgr-CLUSTER): a pgr
               run, drill or backup holding it from any machine, or one that died holding it

The verdict of a service:
  healthy    everything above as it should be (warnings may still be listed with "!")
  degraded   it serves, but something needs attention: a replica not streaming or too far behind
             (more than 32 MiB, Patroni's maximum_lag_on_failover), a pod not Ready, a user whose
             secret's password does not log in, a missing secret, the client or a dependant short
             of ready pods, a pgr run stopped half-way (here, or another machine's whose lease
             expired), the operator's status not Running
  down       it does not serve: no postgresql object, no master, the master's PostgreSQL refusing
             connections, the client scaled to 0, not found or with no ready pod
  unknown    the facts could not be read (no kubeconfig, the API unreachable, a service that did not
             answer within --timeout)
Warnings (listed with "!", the verdict unchanged): backups not checked (S3 not configured or not
reachable), no nightly backup, the newest incomplete or truncated, older than its CronJob's schedule
says (the last scheduled time more than an hour ago, in UTC), the CronJob suspended or not found; a
pgr run, drill or backup in progress (here, or holding the lease from another machine).

Exit codes (the worst verdict of the services shown; Nagios' convention):
  0 healthy   1 degraded   2 down   3 unknown
A command line pgr cannot use also exits 2 — as every pgr command does — but prints only on stderr
(the reason and the usage) and nothing on stdout; a status always prints its report on stdout. A
script tells them apart by stdout (with --json: a JSON document is there, its "verdict" says down).

--json prints one JSON document instead of the screen:
  { "schema": 1, "time": "2025-01-01T03:00:00Z", "verdict": "degraded", "elapsed": 0.8,
    "services": [ SERVICE, ... ] }
SERVICE:
  service, namespace, cluster                          strings
  verdict                                              "healthy" | "degraded" | "down" | "unknown"
  reasons   [ {severity: "down"|"degraded"|"unknown"|"warning", subject, message} ]
  postgresql {found, instances, version, status}
  pods      [ {name, role ("master"|"replica"|null), phase, ready, restarts, node, ip, deleting} ]
  master    name of the master pod; master_reachable (bool; absent when no login was tried);
            master_error; server_version; master_in_recovery (bool); replication_unknown (bool) and
            replication_note: the master's pg_stat_replication could not be read
  replication [ {pod, ip, state ("streaming", ... or null: not in pg_stat_replication), streaming,
            sync_state, lag_bytes, lag_seconds, reachable (the replica's own PostgreSQL), in_recovery,
            receiver (pg_stat_wal_receiver.status), replay_age, error_class, error} ]
  secrets   [ {user, secret, found, username, login (true|false|null: not tried), error (class:
            "auth_failed", "no_role", "no_login", "rejected", "timeout", "unreachable", "tls",
            "no_database", "unavailable", "error"), message} ]
  databases [ {name, bytes} ]
  client    {kind, name, found, desired, ready}       (jobs: complete, failed, active)
  dependants [ same as client ]
  backups   {checked (false: see note), note, bucket, endpoint, count,
             newest: {name, layout ("csm"|"operator"), time, age_seconds, size, complete, missing,
                      trailer (true|false|null: not read), key, manifest},
             pgr: (the same, for pgr's own newest backup),
             cronjob: {name, schedule, time_zone, suspend, last_schedule, last_success}, due}
  runs      [ {id, dir, running, pid, step, steps, step_name, error, interrupted, changed, resume,
               started} ]   (unfinished runs only; last_run: {id, status, finished})
  lease     {name, holder, user, host, pid, run, command, duration, renewed, renewed_ago, expired,
             alive (on the holder's host only)}: the Lease pgr-CLUSTER a pgr run, drill or backup
             holds, from whichever machine
  errors    [ {subject, message, severity} ]   facts that could not be read
  time, elapsed, timings {runs, kubernetes, postgresql, backups}: seconds each part took
Passwords, tokens and keys never appear in the output.

Examples:
  pgr status spire
  pgr status --all --json | jq '.services[] | {service, verdict}'
  pgr status vcs || echo "vcs needs attention (exit $?)"]],
  flags = {
    { name = "all", short = "a", help = "all five services (the default without SERVICE)" },
    { name = "json", help = "one JSON document (schema above) instead of the screen" },
    { name = "site", value = "FILE", help = "the site file (default $PGR_SITE or /etc/pgr/site.lua)" },
    { name = "state-dir", value = "DIR", help = "where pgr's runs are journaled (for the runs line)" },
    { name = "timeout", value = "SECONDS", help = "bound on each service's status when several are shown (default 30)" },
  },
}

function M.run(argv)
  local opts, pos = cli.parse("status", M, argv)
  if not opts then return cli.EXIT.usage end
  local status = require "pgr.status"
  if opts.all and #pos > 0 then return cli.usage_error("status", M, "--all and SERVICE names exclude each other") end
  local timeout
  if opts.timeout then
    timeout = tonumber(opts.timeout)
    if not timeout or timeout <= 0 or timeout > 3600 then
      return cli.usage_error("status", M, "--timeout must be a number of seconds from 0 to 3600")
    end
  end
  local names = #pos > 0 and pos or status.SERVICES
  local seen = {}
  for _, n in ipairs(names) do
    if seen[n] then return cli.usage_error("status", M, ("%s is named twice"):format(n)) end
    seen[n] = true
    local ok, err = require("pgr.runbook").locate(n)
    if not ok then return cli.usage_error("status", M, tostring(err)) end
  end
  local site, serr = require("pgr.site").load(opts.site)
  local args = {}
  if opts.site then args[#args + 1] = "--site=" .. opts.site end
  if opts.state_dir then args[#args + 1] = "--state-dir=" .. opts.state_dir end
  local resume_args = {}
  if opts.state_dir then resume_args[#resume_args + 1] = "--state-dir " .. opts.state_dir end
  if opts.site then resume_args[#resume_args + 1] = "--site " .. opts.site end
  local ok, report = pcall(status.report, names, { site = site, site_error = not site and serr or nil,
    state_dir = opts.state_dir, timeout = timeout, args = args, resume_args = resume_args })
  if not ok then
    if tostring(report):find("interrupted!", 1, true) then return cli.EXIT.interrupted end
    error(report, 0)
  end
  if opts.json then
    print(require("pgr.json").encode(report))
  else
    print(status.format(report))
  end
  return status.exit_code(report)
end

return M
