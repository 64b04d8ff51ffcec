-- pgr.fanout: run one command on many nodes over OpenSSH, pdsh-style — the ssh command line, what
-- counts as "could not connect", live `host: line` output, the dshbak -c view, the summary line.
--
-- fanout.run{ hosts=PATTERN|LIST, argv={...} | command="string", fanout=32, connect_timeout=10,
--             timeout=nil (seconds per host; nil: none), user=, port=, identity=, ssh="ssh",
--             ssh_options={...}, max_output=1048576, live=false, on_output=fn(host, stream, line),
--             on_done=fn(rec) } -> result | nil, err
--   result = { hosts = { rec... } (hostlist order), by_host = { [name] = rec }, ok = n, failed = n,
--              interrupted = bool, elapsed = seconds }
--   rec = { host=, outcome="ran"|"connect_failed"|"timed_out"|"signaled"|"spawn_failed"|"stopped",
--           ok=bool, exit=, signal=, reason="exit 1"|"connection refused"|..., elapsed=,
--           stdout=, stderr=, stdout_bytes=, stderr_bytes=, stdout_truncated=, stderr_truncated= }
-- argv is quoted word by word for the remote shell (the remote sees exactly these words); command
-- is handed to the remote shell as it is (pdsh's behaviour). Nothing runs through a local shell.
-- fanout.gather(result [, stream]) -> { { hosts=, hostlist=, text= }... } ; fanout.format_gathered
-- fanout.summary(result) -> "3 ok, 1 failed: ncn-s002 (exit 1)"
local core = require "pgr.fanout.core"
local errors = require "pgr.errors"
local hostlist = require "pgr.hostlist"

local M = {}

-- pdsh's default fanout is 32; ConnectTimeout like pdsh's -t default (10 s).
M.DEFAULTS = {
  fanout = 32,
  connect_timeout = 10,
  timeout = nil,
  ssh = "ssh",
  max_output = 1024 * 1024,
  kill_grace = 1,
}

-- A word the remote POSIX shell reads back as itself.
function M.quote(word)
  word = tostring(word)
  if word ~= "" and word:match("^[%w%-%._/:=@%%+,]+$") then return word end
  return "'" .. word:gsub("'", [['\'']]) .. "'"
end

function M.remote_command(opts)
  if opts.argv then
    local words = {}
    for i, w in ipairs(opts.argv) do
      if type(w) ~= "string" then error(("fanout: argv[%d] must be a string"):format(i), 3) end
      words[i] = M.quote(w)
    end
    if #words == 0 then error("fanout: argv is empty", 3) end
    return table.concat(words, " ")
  end
  if type(opts.command) ~= "string" or opts.command == "" then
    error("fanout: give argv={...} or command=\"...\"", 3)
  end
  return opts.command
end

-- The ssh command line for one host. The user's own ssh configuration, keys and known_hosts apply;
-- BatchMode makes a prompt (password, unknown host key) a failure instead of a hang.
function M.ssh_argv(host, opts, remote)
  local argv = { opts.ssh or M.DEFAULTS.ssh, "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=" .. math.max(1, math.ceil(opts.connect_timeout or M.DEFAULTS.connect_timeout)),
    "-x", "-T" }
  for _, o in ipairs(opts.ssh_options or {}) do argv[#argv + 1] = o end
  if opts.user then argv[#argv + 1] = "-l"; argv[#argv + 1] = opts.user end
  if opts.port then argv[#argv + 1] = "-p"; argv[#argv + 1] = tostring(opts.port) end
  if opts.identity then argv[#argv + 1] = "-i"; argv[#argv + 1] = opts.identity end
  argv[#argv + 1] = "--"
  argv[#argv + 1] = host
  argv[#argv + 1] = remote
  return argv
end

-- ssh exits 255 for its own failures; its message says which. A remote command that itself exits
-- 255 without such a message still counts as having run.
local SSH_FAILURES = {
  { "connection refused", "connection refused" },
  { "permission denied", "authentication failed" },
  { "host key verification failed", "host key verification failed" },
  { "could not resolve hostname", "unknown host" },
  { "name or service not known", "unknown host" },
  { "connection timed out", "connect timeout" },
  { "operation timed out", "connect timeout" },
  { "no route to host", "no route to host" },
  { "network is unreachable", "network unreachable" },
  { "kex_exchange_identification", "connection closed" },
  { "connection closed by", "connection closed" },
  { "connection reset", "connection closed" },
}

function M.classify(res, opts)
  if res.outcome == "spawn_failed" then
    return "spawn_failed", ("cannot run %s: %s"):format(opts.ssh or M.DEFAULTS.ssh, res.spawn_error)
  elseif res.outcome == "timed_out" then
    return "timed_out", ("timed out after %gs"):format(opts.timeout)
  elseif res.outcome == "stopped" then
    return "stopped", "stopped"
  elseif res.outcome == "signaled" then
    return "signaled", "signal " .. res.signal
  end
  if res.exit == 255 then
    local err = res.stderr:lower()
    for _, f in ipairs(SSH_FAILURES) do
      if err:find(f[1], 1, true) then return "connect_failed", f[2] end
    end
  end
  return "ran", "exit " .. res.exit
end

-- A line longer than this is shown in pieces of this size as it arrives: output without newlines
-- costs memory and time in proportion to its size, never more (a 30 MB line once took 40 s).
M.MAX_LINE = 65536

-- Splits a stream into lines as it arrives; the last line without a newline comes at the end. Only
-- the new data is searched, and the unfinished line is kept as pieces, joined once.
local function line_splitter(emit)
  local parts, size = {}, 0
  -- a whole line, in pieces of at most MAX_LINE
  local function emit_line(line)
    if #line <= M.MAX_LINE then return emit(line) end
    for at = 1, #line, M.MAX_LINE do emit(line:sub(at, at + M.MAX_LINE - 1)) end
  end
  return function(data)
    if data == nil then
      if size > 0 then emit_line(table.concat(parts)) end
      parts, size = {}, 0
      return
    end
    local pos = 1
    while true do
      local nl = data:find("\n", pos, true)
      if not nl then break end
      if size > 0 then
        parts[#parts + 1] = data:sub(pos, nl - 1)
        emit_line(table.concat(parts))
        parts, size = {}, 0
      else
        emit_line(data:sub(pos, nl - 1))
      end
      pos = nl + 1
    end
    if pos <= #data then
      parts[#parts + 1] = data:sub(pos)
      size = size + #data - pos + 1
    end
    if size > M.MAX_LINE then
      -- whole pieces go now; the rest (at most MAX_LINE, never empty) waits for more
      local all, at = table.concat(parts), 1
      while #all - at + 1 > M.MAX_LINE do
        emit(all:sub(at, at + M.MAX_LINE - 1))
        at = at + M.MAX_LINE
      end
      local tail = all:sub(at)
      parts, size = { tail }, #tail
    end
  end
end

local function live_printer(host, stream, line)
  local f = stream == "stderr" and io.stderr or io.stdout
  f:write(host, ": ", line, "\n")
  -- live means live: a pipe or file sees each line when it arrives, as pdsh writes them
  f:flush()
end

function M.run(opts)
  if type(opts) ~= "table" then error("fanout.run: expected an options table", 2) end
  if opts.hosts == nil then error("fanout.run: hosts is required", 2) end
  local hosts, err = hostlist.expand(opts.hosts)
  if not hosts then return nil, err end
  for _, h in ipairs(hosts) do
    -- a name ssh would read as an option must never reach its command line
    if h:sub(1, 1) == "-" then
      return nil, errors.new("hostlist", ("bad host name %q"):format(h), { host = h })
    end
  end
  local remote = M.remote_command(opts)
  local cfg = {}
  for k, v in pairs(M.DEFAULTS) do cfg[k] = v end
  for k, v in pairs(opts) do cfg[k] = v end
  local on_output = opts.on_output or (opts.live and live_printer) or nil
  local result = { hosts = {}, by_host = {}, ok = 0, failed = 0, interrupted = false }
  if #hosts == 0 then result.elapsed = 0 return result end

  local run <close> = core.new {
    fanout = math.tointeger(cfg.fanout) or error("fanout.run: fanout must be an integer", 2),
    timeout = cfg.timeout or 0,
    kill_grace = cfg.kill_grace,
    max_output = cfg.max_output,
    env_drop = require("pgr.security").CHILD_ENV_DROP,
  }
  local splitters = {}
  for i, h in ipairs(hosts) do
    run:add(M.ssh_argv(h, cfg, remote))
    if on_output then
      splitters[i] = {
        stdout = line_splitter(function(line) on_output(h, "stdout", line) end),
        stderr = line_splitter(function(line) on_output(h, "stderr", line) end),
      }
    end
  end

  local started = require("pgr.sys").now()
  local function collect(i)
    local res = run:result(i)
    local outcome, reason = M.classify(res, cfg)
    local rec = {
      host = hosts[i], outcome = outcome, reason = reason,
      ok = outcome == "ran" and res.exit == 0,
      exit = res.exit, signal = res.signal, elapsed = res.elapsed,
      stdout = res.stdout, stderr = res.stderr,
      stdout_bytes = res.stdout_bytes, stderr_bytes = res.stderr_bytes,
      stdout_truncated = res.stdout_bytes > #res.stdout,
      stderr_truncated = res.stderr_bytes > #res.stderr,
    }
    result.hosts[i] = rec
    result.by_host[rec.host] = rec
    if rec.ok then result.ok = result.ok + 1 else result.failed = result.failed + 1 end
    if opts.on_done then opts.on_done(rec) end
  end

  while true do
    local left, events, why = run:step(1.0)
    -- a tick for the cluster lease's renewal (pgr.heartbeat); a loss is the runbook's to act on,
    -- a Ctrl-C that lands in it is this loop's
    local bok, berr = pcall(require("pgr.heartbeat").beat)
    if not bok and tostring(berr):find("interrupted!", 1, true) then why = "interrupted" end
    for _, ev in ipairs(events) do
      if ev.event == "output" and on_output then
        splitters[ev.index][ev.stream](ev.data)
      elseif ev.event == "done" then
        if on_output then
          splitters[ev.index].stdout(nil)
          splitters[ev.index].stderr(nil)
        end
        collect(ev.index)
      end
    end
    if why == "interrupted" then
      -- Ctrl-C: every child's process group is killed and reaped before anything else happens
      run:stop()
      result.interrupted = true
      for i = 1, #hosts do
        if not result.hosts[i] then collect(i) end
      end
      break
    end
    if left == 0 then break end
  end
  result.elapsed = require("pgr.sys").now() - started
  return result
end

-- Hosts with identical output folded together, as `dshbak -c` and `clush -b` show them.
function M.gather(result, stream)
  stream = stream or "stdout"
  local groups, order = {}, {}
  for _, rec in ipairs(result.hosts) do
    local text = rec[stream] or ""
    if rec[stream .. "_truncated"] then
      if text ~= "" and text:sub(-1) ~= "\n" then text = text .. "\n" end
      text = text .. ("[pgr: %s cut after %d of %d bytes]\n"):format(stream, #rec[stream],
        rec[stream .. "_bytes"])
    end
    if text ~= "" then
      local g = groups[text]
      if not g then
        g = { hosts = {}, text = text }
        groups[text] = g
        order[#order + 1] = g
      end
      g.hosts[#g.hosts + 1] = rec.host
    end
  end
  for _, g in ipairs(order) do g.hostlist = hostlist.fold(g.hosts) end
  table.sort(order, function(a, b) return a.hostlist < b.hostlist end)
  return order
end

function M.format_gathered(groups)
  local out = {}
  for _, g in ipairs(groups) do
    out[#out + 1] = "----------------\n"
    out[#out + 1] = g.hostlist .. "\n"
    out[#out + 1] = "----------------\n"
    out[#out + 1] = g.text
    if g.text:sub(-1) ~= "\n" then out[#out + 1] = "\n" end
  end
  return table.concat(out)
end

-- "3 ok, 1 failed: ncn-s002 (exit 1)"; failed hosts with the same reason are folded together.
function M.summary(result)
  local line = ("%d ok"):format(result.ok)
  if result.failed == 0 then return line end
  local by_reason, order = {}, {}
  for _, rec in ipairs(result.hosts) do
    if not rec.ok then
      if not by_reason[rec.reason] then
        by_reason[rec.reason] = {}
        order[#order + 1] = rec.reason
      end
      table.insert(by_reason[rec.reason], rec.host)
    end
  end
  local parts = {}
  for _, reason in ipairs(order) do
    parts[#parts + 1] = ("%s (%s)"):format(hostlist.fold(by_reason[reason]), reason)
  end
  return ("%s, %d failed: %s"):format(line, result.failed, table.concat(parts, ", "))
end

-- fanout.run options from a loaded site (pgr.site): user, port, identity, options, fanout, timeout.
function M.site_options(site)
  local ssh = site and site.ssh or {}
  return {
    user = ssh.user, port = ssh.port, identity = ssh.identity,
    ssh_options = ssh.options, fanout = ssh.fanout, timeout = ssh.timeout,
  }
end

return M
