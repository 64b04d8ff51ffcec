-- Specs of pgr.status's judgement and screen, and of pgr.cron: verdicts and reasons from facts tables
-- (as `pgr status --json` carries them), the trailer check, login failure classes, cron schedules.
local status = require "pgr.status"
local cron = require "pgr.cron"
local json = require "pgr.json"

-- A healthy service's facts; over() changes a copy.
local function healthy(over)
  local f = {
    service = "spire", namespace = "spire", cluster = "spire-postgres", errors = {},
    postgresql = { found = true, instances = 3, version = "15", status = "Running" },
    pods = {
      { name = "spire-postgres-0", role = "master", phase = "Running", ready = true, restarts = 0, node = "ncn-w001", ip = "10.0.0.1" },
      { name = "spire-postgres-1", role = "replica", phase = "Running", ready = true, restarts = 2, node = "ncn-w002", ip = "10.0.0.2" },
      { name = "spire-postgres-2", role = "replica", phase = "Running", ready = true, restarts = 0, node = "ncn-w003", ip = "10.0.0.3" },
    },
    master = "spire-postgres-0", master_reachable = true, server_version = "15.5",
    replication = {
      { pod = "spire-postgres-1", state = "streaming", streaming = true, lag_bytes = 0, lag_seconds = 0.1, reachable = true, in_recovery = true },
      { pod = "spire-postgres-2", state = "streaming", streaming = true, lag_bytes = 128, reachable = true, in_recovery = true },
    },
    secrets = {
      { user = "postgres", secret = "postgres.spire-postgres.credentials", found = true, username = "postgres", login = true },
      { user = "spire", secret = "spire.spire-postgres.credentials", found = true, username = "spire", login = true },
    },
    databases = { { name = "spire", bytes = 8 * 1024 * 1024 } },
    client = { kind = "statefulset", name = "spire-server", found = true, desired = 3, ready = 3 },
    dependants = { { kind = "daemonset", name = "spire-agent", found = true, desired = 3, ready = 3 } },
    backups = { checked = true, bucket = "postgres-backup", count = 1,
                newest = { name = "spire-postgres-2024-05-01T03:10:04", layout = "csm", time = "2024-05-01T03:10:04Z",
                           age_seconds = 3600, size = 1000, complete = true, trailer = true },
                cronjob = { name = "spire-postgresql-db-backup", schedule = "10 3 * * *", suspend = false } },
    runs = {},
  }
  if over then over(f) end
  return f
end
-- 2024-05-01T05:00:00Z: the backup of 03:10:04 that day is the one due
local NOW = cron.epoch("2024-05-01T05:00:00")

local function messages(f)
  local out = {}
  for _, r in ipairs(f.reasons) do out[#out + 1] = r.severity .. ": " .. r.message end
  return table.concat(out, "\n")
end

describe("pgr.status.judge", function()
  it("finds nothing to say of a healthy service", function()
    local f = status.judge(healthy(), NOW)
    assert.are.equal("healthy", f.verdict)
    assert.are.equal("", messages(f))
  end)

  it("names a replica that does not stream, and why, as degraded", function()
    local f = status.judge(healthy(function(f)
      f.replication[2] = { pod = "spire-postgres-2", streaming = false, reachable = false, error_class = "unreachable" }
    end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("replica spire%-postgres%-2 is not streaming from the master: its PostgreSQL does not accept connections: unreachable",
      messages(f))
  end)

  it("names the standby password as the likely cause of a replica in recovery that does not stream", function()
    local f = status.judge(healthy(function(f)
      f.replication[2] = { pod = "spire-postgres-2", streaming = false, reachable = true, in_recovery = true }
      f.secrets[3] = { user = "standby", secret = "standby.spire-postgres.credentials", found = true, username = "standby",
                       login = false, error = "auth_failed" }
    end), NOW)
    assert.matches("replica spire%-postgres%-2 is not streaming from the master: it is in recovery but not in the master's "
      .. "pg_stat_replication %(its WAL receiver: not running%); the standby user cannot log in with its secret's password",
      messages(f))
  end)

  it("names a replica too far behind, and one that is not in recovery", function()
    local f = status.judge(healthy(function(f)
      f.replication[1].lag_bytes = 64 * 1024 * 1024
      f.replication[2].in_recovery = false
    end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("replica spire%-postgres%-1 is 64%.0 MiB behind the master", messages(f))
    assert.matches("replica spire%-postgres%-2 is not in recovery", messages(f))
  end)

  it("names a user whose secret's password does not log in", function()
    local f = status.judge(healthy(function(f) f.secrets[2].login = false f.secrets[2].error = "auth_failed" end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("user spire cannot log in with the password in secret spire.spire%-postgres.credentials %(auth_failed%)", messages(f))
  end)

  it("is down when the client is scaled to 0, with the line that scales it back", function()
    local f = status.judge(healthy(function(f) f.client.desired, f.client.ready = 0, 0 end), NOW)
    assert.are.equal("down", f.verdict)
    assert.matches("statefulset spire%-server is scaled to 0 %(kubectl scale statefulset spire%-server %-n spire", messages(f))
    assert.are.equal(2, status.exit_code({ verdict = f.verdict }))
  end)

  it("is down without a postgresql object, a master, or a master that answers", function()
    assert.are.equal("down", status.judge(healthy(function(f) f.postgresql = { found = false } f.pods = {} end), NOW).verdict)
    local f = status.judge(healthy(function(f) f.pods[1].role = "replica" end), NOW)
    assert.are.equal("down", f.verdict)
    assert.matches("no pod of spire%-postgres is labelled spilo%-role=master", messages(f))
    f = status.judge(healthy(function(f) f.master_reachable = false f.master_error = "connection refused" end), NOW)
    assert.are.equal("down", f.verdict)
    assert.matches("the master spire%-postgres%-0 does not accept connections: connection refused", messages(f))
  end)

  it("names a run stopped half-way with its --resume line, and a running one as a warning only", function()
    local f = status.judge(healthy(function(f)
      f.runs = { { id = "spire_spire-postgres-20240501T040000.000-42", running = false, step = 7, steps = 21,
                   step_name = "Scale spire-server to 0 and wait until its pods are gone", resume = "pgr run spire --resume" } }
    end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("a pgr run of spire stopped half%-way at step 7/21 %(Scale spire%-server to 0 and wait until its pods are gone%); "
      .. "continue with: pgr run spire %-%-resume", messages(f))
    f = status.judge(healthy(function(f) f.runs = { { running = true, pid = 42, step = 3, steps = 21, step_name = "x" } } end), NOW)
    assert.are.equal("healthy", f.verdict)
    assert.matches("warning: pgr run spire is in progress %(pid 42%) at step 3/21", messages(f))
  end)

  it("reads the cluster's lease: another machine's run in progress, or one that died holding it", function()
    local lease = { name = "pgr-spire-postgres", holder = "root@ncn-m002 pid 4242 run R1", host = "ncn-m002", pid = 4242,
                    run = "R1", command = "run", duration = 300, renewed_ago = 20, expired = false }
    local f = status.judge(healthy(function(f) f.lease = lease end), NOW)
    assert.are.equal("healthy", f.verdict)
    assert.matches("warning: pgr run of root@ncn%-m002 pid 4242 run R1 holds the lease pgr%-spire%-postgres %(renewed 20 s ago%): "
      .. "it is in progress", messages(f))
    lease.expired, lease.renewed_ago = true, 900
    f = status.judge(healthy(function(f) f.lease = lease end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("pgr run of root@ncn%-m002 pid 4242 run R1 stopped without releasing the lease pgr%-spire%-postgres "
      .. "%(last renewed 900 s ago%); continue it on ncn%-m002: pgr run spire %-%-resume", messages(f))
    -- the run this state directory knows says it all already
    f = status.judge(healthy(function(f)
      f.lease = lease
      f.runs = { { id = "R1", running = false, step = 2, steps = 21, step_name = "x", resume = "pgr run spire --resume" } }
    end), NOW)
    assert.falsy(messages(f):find("lease", 1, true))
  end)

  it("warns of a backup older than its schedule says, incomplete or truncated, without changing the verdict", function()
    local f = status.judge(healthy(function(f)
      f.backups.newest.time = "2024-04-29T03:10:04Z"
    end), NOW)
    assert.are.equal("healthy", f.verdict)
    assert.matches("warning: the newest backup spire%-postgres%-2024%-05%-01T03:10:04 is older than its schedule \"10 3 %* %* %*\" "
      .. "%(spire%-postgresql%-db%-backup%) says: one was due at 2024%-05%-01T03:10:00Z", messages(f))
    -- within the hour after the scheduled time the previous one is still the newest expected
    f = status.judge(healthy(function(f) f.backups.newest.time = "2024-04-30T03:10:04Z" end), cron.epoch("2024-05-01T03:40:00"))
    assert.are.equal("", messages(f))
    f = status.judge(healthy(function(f) f.backups.newest.complete = false f.backups.newest.missing = "manifest" end), NOW)
    assert.matches("is incomplete: no %.manifest", messages(f))
    f = status.judge(healthy(function(f) f.backups.newest.trailer = false end), NOW)
    assert.matches("is truncated: pg_dumpall's completion trailer is missing", messages(f))
    f = status.judge(healthy(function(f) f.backups = { checked = false, note = "no S3 endpoint" } end), NOW)
    assert.are.equal("healthy", f.verdict)
    assert.matches("warning: backups not checked: no S3 endpoint", messages(f))
  end)

  it("does not judge replication it could not read: postgres's login failed", function()
    local f = status.judge(healthy(function(f)
      f.secrets[1].login, f.secrets[1].error = false, "auth_failed"
      f.replication_unknown, f.replication_note = true, "postgres did not log in to the master"
      for _, r in ipairs(f.replication) do r.streaming, r.state, r.reachable, r.in_recovery = nil, nil, false, nil end
    end), NOW)
    assert.are.equal("degraded", f.verdict)
    assert.matches("user postgres cannot log in", messages(f))
    assert.matches("warning: replication was not read: postgres did not log in to the master", messages(f))
    assert.falsy(messages(f):find("not streaming", 1, true))
  end)

  it("makes what could not be read unknown, ranked below down", function()
    local f = status.judge({ service = "vcs", errors = { { subject = "Kubernetes", message = "no kubeconfig" } } }, NOW)
    assert.are.equal("unknown", f.verdict)
    assert.are.equal(3, status.exit_code({ verdict = f.verdict }))
  end)

  it("gives the same verdict after a JSON round trip (what the parent of --all reads)", function()
    local f = status.judge(healthy(function(f) f.secrets[2].login = false f.secrets[2].error = "auth_failed" end), NOW)
    local again = status.judge(json.decode(json.encode(f)), NOW)
    assert.are.equal(f.verdict, again.verdict)
    assert.are.equal(messages(f), messages(again))
  end)
end)

describe("pgr.status screen", function()
  it("shows the verdict, the reasons and the facts", function()
    local f = status.judge(healthy(function(f) f.secrets[2].login = false f.secrets[2].error = "auth_failed" end), NOW)
    local text = status.format({ services = { f }, verdict = f.verdict })
    assert.matches("^spire %(spire/spire%-postgres%): DEGRADED\n", text)
    assert.matches("  logins      postgres ok, spire FAILED: auth_failed", text)
    assert.matches("spire%-postgres%-1  replica  Running  ready  2 restarts  ncn%-w002  streaming, lag 0 B / 0%.1 s", text)
    assert.matches("client      statefulset spire%-server 3/3 ready", text)
    assert.matches("backups     newest spire%-postgres%-2024%-05%-01T03:10:04 %[csm%], 1%.0 h old, 1000 B, complete", text)
  end)
end)

describe("pgr.status helpers", function()
  it("finds pg_dumpall's completion trailer at the end of a dump, and only there", function()
    assert.is_true(status.has_trailer("COPY x;\n--\n-- PostgreSQL database cluster dump complete\n--\n\n"))
    assert.is_true(status.has_trailer("x\r\n--\r\n-- PostgreSQL database cluster dump complete\r\n--\r\n"))
    assert.is_true(status.has_trailer("--\n-- PostgreSQL database dump complete\n--\n"))
    assert.is_false(status.has_trailer("--\n-- PostgreSQL database cluster dump complete\n--\nSELECT 1;\n"))
    assert.is_false(status.has_trailer("INSERT INTO t VALUES (1"))
  end)

  it("classes login failures from libpq's messages", function()
    assert.are.equal("auth_failed", status.login_class('FATAL:  password authentication failed for user "spire"'))
    assert.are.equal("no_role", status.login_class('FATAL:  role "spire" does not exist'))
    assert.are.equal("unreachable", status.login_class("connection to server at \"10.0.0.2\", port 5432 failed: Connection refused"))
    assert.are.equal("timeout", status.login_class("cannot connect to PostgreSQL: timeout expired after 3 s"))
    assert.are.equal("rejected", status.login_class('FATAL:  pg_hba.conf rejects connection for host "1.2.3.4"'))
  end)

  it("starts copies of the running binary (sys.executable)", function()
    local exe = assert(require("pgr.sys").executable())
    local p = assert(io.popen(("'%s' -e 'print(6 * 7)'"):format(exe)))
    local out = p:read("a")
    p:close()
    assert.are.equal("42\n", out)
  end)
end)

describe("pgr.cron", function()
  local function prev(expr, at)
    return cron.iso(assert(cron.parse(expr)):previous(cron.epoch(at)))
  end
  it("finds when a schedule last fired", function()
    assert.are.equal("2024-05-01T03:10:00Z", prev("10 3 * * *", "2024-05-01T05:00:00"))
    assert.are.equal("2024-04-30T03:10:00Z", prev("10 3 * * *", "2024-05-01T03:09:59"))
    assert.are.equal("2024-05-01T03:10:00Z", prev("10 3 * * *", "2024-05-01T03:10:00"))
    assert.are.equal("2024-05-01T00:10:00Z", prev("10 */8 * * *", "2024-05-01T07:59:00"))
    assert.are.equal("2024-04-30T16:10:00Z", prev("10 */8 * * *", "2024-05-01T00:09:00"))
    assert.are.equal("2024-04-28T00:00:00Z", prev("@weekly", "2024-05-01T12:00:00"))   -- a Sunday
    assert.are.equal("2024-05-01T12:00:00Z", prev("@hourly", "2024-05-01T12:59:59"))
    assert.are.equal("2024-02-29T23:45:00Z", prev("45 23 29 feb *", "2024-06-01T00:00:00"))
    assert.are.equal("2024-04-29T06:30:00Z", prev("30 6 * * mon-fri", "2024-04-29T07:00:00"))
    assert.are.equal("2024-04-26T06:30:00Z", prev("30 6 * * 1-5", "2024-04-28T07:00:00"))
    -- both day fields restricted: either matches (the 1st, or any Monday)
    assert.are.equal("2024-04-29T00:00:00Z", prev("0 0 1 * 1", "2024-04-30T00:00:00"))
  end)
  it("refuses what it cannot read, saying why", function()
    assert.is_nil((cron.parse("10 3 * *")))
    assert.matches("out of range", select(2, cron.parse("61 3 * * *")))
    assert.matches("time zone", select(2, cron.parse("CRON_TZ=Europe/Paris 10 3 * * *")))
    assert.matches("not a valid", select(2, cron.parse("10 3 * * funday")))
  end)
  it("reads backup times as UTC", function()
    assert.are.equal(1663125004, cron.epoch("2022-09-14T03:10:04"))
    assert.are.equal("2022-09-14T03:10:04Z", cron.iso(1663125004))
  end)
end)
