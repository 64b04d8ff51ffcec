-- pgr fanout: run a command on many nodes over ssh, as `pdsh -w HOSTS` does: live `host: line`
-- output or the dshbak -c view (-b), one summary line, exit status non-zero if any host failed.
local cli = require "pgr.cli"
local fanout = require "pgr.fanout"
local hostlist = require "pgr.hostlist"

local cmd = {
  summary = "run a command on many nodes over ssh (pdsh-compatible hostlists)",
  usage = "Usage: pgr fanout [-w HOSTS] [-x HOSTS] [-f N] [-t SECONDS] [-u SECONDS] [-b] -- COMMAND...",
  help = [[
Runs COMMAND on every host with OpenSSH (BatchMode; your ssh configuration, keys and known_hosts
apply), at most N at once. The words of COMMAND are joined with spaces and run by the remote
shell, as pdsh and ssh do; nothing runs through a local shell.

HOSTS is a pdsh / ClusterShell hostlist: ncn-w00[1-3,5], x[1000-1001]c[0-7], a,b,-c (exclude),
node[1-10]!node5 (difference), &, ^. Without -w, the site file's `nodes` is used.

Output: each line as `host: line` while it arrives (stderr lines on stderr), or with -b the
hosts with identical output folded under one hostlist header once all are done. The last line
(on stderr) sums up: `3 ok, 1 failed: ncn-s002 (exit 1)`. Exit status: 0 when every host ran the
command with status 0, 1 otherwise, 130 when interrupted (every ssh child is stopped first).]],
  flags = {
    { name = "hosts", short = "w", value = "HOSTS", multi = true, help = "target hosts (hostlist)" },
    { name = "exclude", short = "x", value = "HOSTS", multi = true, help = "hosts to leave out" },
    { name = "fanout", short = "f", value = "N", help = "hosts at once (default 32, as pdsh)" },
    { name = "connect-timeout", short = "t", value = "SECONDS", help = "ssh ConnectTimeout (default 10)" },
    { name = "timeout", short = "u", value = "SECONDS", help = "kill a host's command after this long" },
    { name = "gather", short = "b", help = "fold identical output (dshbak -c / clush -b)" },
    { name = "user", short = "l", value = "USER", help = "remote user (default: ssh's own)" },
    { name = "ssh-option", short = "o", value = "OPTS", multi = true,
      help = "extra ssh arguments, split at spaces (e.g. -o '-F ./ssh_config')" },
    { name = "ssh", value = "PROGRAM", help = "ssh program (default ssh from PATH)" },
    { name = "max-output", value = "BYTES", help = "output kept per host and stream (default 1 MiB)" },
    { name = "site", value = "FILE", help = "site file (default $PGR_SITE, /etc/pgr/site.lua)" },
  },
}

local function usage_error(msg)
  return cli.usage_error("fanout", cmd, msg)
end

local function number_flag(opts, key, name, integer)
  local v = opts[key]
  if v == nil then return true, nil end
  local n = tonumber(v)
  if not n or n <= 0 or (integer and not math.tointeger(n)) then
    return false, ("--%s needs a positive %s, got '%s'"):format(name, integer and "integer" or "number", v)
  end
  return true, integer and math.tointeger(n) or n
end

-- The site file, only when there is one: without it ssh's own configuration decides everything.
local function load_site(path)
  local explicit = path or os.getenv("PGR_SITE")
  if not explicit then
    local f = io.open(require("pgr.site").DEFAULT_PATH, "r")
    if not f then return nil end
    f:close()
  end
  local site, err = require("pgr.site").load(path)
  if not site then return nil, err end
  return site
end

function cmd.run(argv)
  local opts, pos = cli.parse("fanout", cmd, argv)
  if not opts then return cli.EXIT.usage end
  if #pos == 0 then return usage_error("no command given (pgr fanout -w HOSTS -- COMMAND...)") end

  local site, serr = load_site(opts.site)
  if serr then
    cli.eprint("pgr fanout: ", tostring(serr))
    return cli.EXIT.usage
  end
  local run_opts = site and fanout.site_options(site) or {}

  local pattern
  if opts.hosts then
    pattern = table.concat(opts.hosts, ",")
  elseif site and site.nodes then
    pattern = site.nodes
  else
    return usage_error("no hosts: give -w HOSTS, or set nodes in the site file")
  end
  local hosts, err = hostlist.expand(pattern)
  if hosts and opts.exclude then hosts, err = hostlist.difference(hosts, table.concat(opts.exclude, ",")) end
  if not hosts then return usage_error(tostring(err)) end
  if #hosts == 0 then return usage_error("the hostlist is empty") end

  local ok, v
  ok, v = number_flag(opts, "fanout", "fanout", true)
  if not ok then return usage_error(v) end
  run_opts.fanout = v or run_opts.fanout
  ok, v = number_flag(opts, "connect_timeout", "connect-timeout")
  if not ok then return usage_error(v) end
  run_opts.connect_timeout = v
  ok, v = number_flag(opts, "timeout", "timeout")
  if not ok then return usage_error(v) end
  run_opts.timeout = v or run_opts.timeout
  ok, v = number_flag(opts, "max_output", "max-output", true)
  if not ok then return usage_error(v) end
  run_opts.max_output = v
  if opts.user then run_opts.user = opts.user end
  if opts.ssh then run_opts.ssh = opts.ssh end
  if opts.ssh_option then
    local extra = {}
    for _, o in ipairs(run_opts.ssh_options or {}) do extra[#extra + 1] = o end
    for _, o in ipairs(opts.ssh_option) do
      for word in o:gmatch("%S+") do extra[#extra + 1] = word end
    end
    run_opts.ssh_options = extra
  end

  run_opts.hosts = hosts
  run_opts.command = table.concat(pos, " ")
  if opts.gather then
    -- clush -b: stderr still streams, stdout is gathered
    run_opts.on_output = function(host, stream, line)
      if stream == "stderr" then io.stderr:write(host, ": ", line, "\n") end
    end
  else
    run_opts.live = true
  end

  local pok, result, rerr = pcall(fanout.run, run_opts)
  io.stdout:flush()
  if not pok then
    -- Ctrl-C arrives as the "interrupted!" error; the run's children are already stopped
    if tostring(result):find("interrupted!", 1, true) then
      cli.eprint("pgr fanout: interrupted; every ssh child was stopped")
      return cli.EXIT.interrupted
    end
    error(result, 0)
  end
  if not result then
    cli.eprint("pgr fanout: ", tostring(rerr))
    return cli.EXIT.failed
  end
  if opts.gather then
    io.stdout:write(fanout.format_gathered(fanout.gather(result)))
    io.stdout:flush()
  end
  for _, rec in ipairs(result.hosts) do
    if rec.stdout_truncated or rec.stderr_truncated then
      cli.eprint(("pgr fanout: %s: output cut at %d bytes per stream (--max-output)")
        :format(rec.host, run_opts.max_output or fanout.DEFAULTS.max_output))
    end
  end
  cli.eprint(fanout.summary(result))
  if result.interrupted then return cli.EXIT.interrupted end
  return result.failed == 0 and cli.EXIT.ok or cli.EXIT.failed
end

return cmd
