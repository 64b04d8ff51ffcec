-- Specs of pgr.fanout and pgr.fanout.core: the ssh command line, per-host records from real sshd
-- nodes (binary, large and capped output, argv quoting, failures), gathering, summaries, handles.
local fanout = require "pgr.fanout"
local core = require "pgr.fanout.core"
local sys = require "pgr.sys"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

local tmp = sh("mktemp -d /tmp/pgr-fanout-spec.XXXXXX"):gsub("%s+$", "")
local nodes = tmp .. "/nodes"
local ssh_options = { "-F", nodes .. "/ssh_config" }

local function with_nodes(opts)
  opts.ssh_options = opts.ssh_options or ssh_options
  return opts
end

describe("pgr.fanout command lines", function()
  it("quotes argv words for the remote shell", function()
    assert.equals("systemctl", fanout.quote("systemctl"))
    assert.equals("'a b'", fanout.quote("a b"))
    assert.equals([['it'\''s']], fanout.quote("it's"))
    assert.equals("''", fanout.quote(""))
    assert.equals("'$(reboot)'", fanout.quote("$(reboot)"))
    assert.equals("systemctl restart spire-agent",
      fanout.remote_command({ argv = { "systemctl", "restart", "spire-agent" } }))
  end)

  it("builds ssh's argv with BatchMode, the options, and -- before the host", function()
    local argv = fanout.ssh_argv("ncn-w001", { ssh_options = { "-F", "cfg" }, user = "root",
      connect_timeout = 5 }, "true")
    assert.same({ "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-x", "-T", "-F", "cfg",
      "-l", "root", "--", "ncn-w001", "true" }, argv)
  end)

  it("refuses host names ssh would read as options, and bad hostlists", function()
    local r, err = fanout.run({ hosts = { "-oProxyCommand=x" }, command = "true" })
    assert.is_nil(r)
    assert.equals("hostlist", err.code)
    r, err = fanout.run({ hosts = "n[1-", command = "true" })
    assert.is_nil(r)
    assert.equals(2, err.position)
  end)

  it("raises on misuse", function()
    assert.has_error(function() fanout.run({ hosts = "a" }) end)
    assert.has_error(function() fanout.run({ hosts = "a", argv = {} }) end)
    assert.has_error(function() fanout.run("a") end)
  end)

  it("returns an empty result for an empty list", function()
    local r = assert(fanout.run({ hosts = {}, command = "true" }))
    assert.equals(0, #r.hosts)
    assert.equals("0 ok", fanout.summary(r))
  end)
end)

describe("pgr.fanout summary and gathering", function()
  local result = {
    ok = 3, failed = 3,
    hosts = {
      { host = "ncn-w001", ok = true, stdout = "a\n" },
      { host = "ncn-w002", ok = true, stdout = "a\n" },
      { host = "ncn-s001", ok = false, reason = "exit 1", stdout = "b" },
      { host = "ncn-s002", ok = false, reason = "exit 1", stdout = "" },
      { host = "ncn-m001", ok = true, stdout = "a\n" },
      { host = "ncn-x001", ok = false, reason = "connection refused", stdout = "" },
    },
  }

  it("sums up, folding hosts that failed the same way", function()
    assert.equals("3 ok, 3 failed: ncn-s[001-002] (exit 1), ncn-x001 (connection refused)",
      fanout.summary(result))
  end)

  it("gathers identical output under one hostlist, as dshbak -c", function()
    local groups = fanout.gather(result)
    assert.equals(2, #groups)
    assert.equals("ncn-m001,ncn-w[001-002]", groups[1].hostlist)
    assert.equals("----------------\nncn-m001,ncn-w[001-002]\n----------------\na\n" ..
                  "----------------\nncn-s001\n----------------\nb\n", fanout.format_gathered(groups))
  end)
end)

describe("pgr.fanout.core handles", function()
  it("checks its arguments", function()
    assert.has_error(function() core.new({ fanout = 0 }) end)
    assert.has_error(function() core.new({ fanout = "x" }) end)
    local r = core.new()
    assert.has_error(function() r:add({}) end)
    assert.has_error(function() r:add({ "sh", 1 }) end)
    assert.has_error(function() r:result(1) end)
    r:close()
    r:close()
    assert.has_error(function() r:step(0) end)
    assert.matches("closed", tostring(r))
  end)

  it("refuses times that are not finite and steps with a deadline far away", function()
    for _, bad in ipairs { { timeout = 0 / 0 }, { kill_grace = 0 / 0 }, { timeout = -1 }, { kill_grace = math.huge } } do
      assert.has_error(function() core.new(bad) end)
    end
    local r <close> = core.new({ timeout = 1e8 })
    assert.has_error(function() r:step(0 / 0) end)
    r:add({ "true" })
    local left = 1
    for _ = 1, 500 do
      left = r:step() -- no wait bound: the far deadline alone decides poll()'s timeout
      if left == 0 then break end
    end
    assert.equals(0, left)
    assert.equals(0, r:result(1).exit)
  end)

  it("kills and reaps every child's process group when closed early", function()
    local pids
    do
      local r <close> = core.new({ fanout = 4 })
      for _ = 1, 3 do r:add({ "sh", "-c", "sleep 60 & echo $!; sleep 60" }) end
      local seen, out = 0, {}
      local deadline = sys.now() + 20
      while seen < 3 and sys.now() < deadline do
        local _, events = r:step(0.5)
        for _, e in ipairs(events) do
          if e.event == "output" then seen = seen + 1; out[#out + 1] = e.data end
        end
      end
      assert.equals(3, seen)
      pids = {}
      for i = 1, 3 do pids[#pids + 1] = r:result(i).pid end
      for _, o in ipairs(out) do pids[#pids + 1] = tonumber(o:match("%d+")) end
      local now, most = r:running()
      assert.equals(3, now)
      assert.equals(3, most)
    end -- <close> here
    -- the children were reaped by us; the grandchildren went to init, which reaps them shortly
    local deadline = sys.now() + 10
    local alive
    repeat
      alive = 0
      for _, p in ipairs(pids) do if sys.pid_alive(p) then alive = alive + 1 end end
      if alive > 0 then sys.sleep(0.05) end
    until alive == 0 or sys.now() > deadline
    assert.equals(0, alive)
  end)
end)

describe("pgr.fanout against sshd nodes", function()
  lazy_setup(function()
    local out, ok = sh(("bash -c '. tests/lib/sshnodes.sh && SSHNODES_DOWN=ncn-x001 sshnodes_up %s " ..
      "\"ncn-w00[1-3]\"' 2>&1"):format(nodes))
    assert(ok, "sshd nodes did not start: " .. out)
  end)
  lazy_teardown(function()
    os.execute(("bash -c '. tests/lib/sshnodes.sh && sshnodes_down %s'; rm -rf %s"):format(nodes, tmp))
  end)

  it("returns each host's status and output, in hostlist order", function()
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w00[1-3],ncn-x001",
      command = 'echo out $PGR_NODE; echo err >&2; [ $PGR_NODE = ncn-w002 ] && exit 7; exit 0' })))
    assert.same({ "ncn-w001", "ncn-w002", "ncn-w003", "ncn-x001" },
      { r.hosts[1].host, r.hosts[2].host, r.hosts[3].host, r.hosts[4].host })
    local w1 = r.by_host["ncn-w001"]
    assert.equals("ran", w1.outcome)
    assert.is_true(w1.ok)
    assert.equals(0, w1.exit)
    assert.equals("out ncn-w001\n", w1.stdout)
    assert.equals("err\n", w1.stderr)
    assert.is_true(w1.elapsed > 0)
    local w2 = r.by_host["ncn-w002"]
    assert.equals("ran", w2.outcome)
    assert.is_false(w2.ok)
    assert.equals(7, w2.exit)
    assert.equals("exit 7", w2.reason)
    local x = r.by_host["ncn-x001"]
    assert.equals("connect_failed", x.outcome)
    assert.equals("connection refused", x.reason)
    assert.equals(2, r.ok)
    assert.equals(2, r.failed)
    assert.is_false(r.interrupted)
  end)

  it("passes argv words through unchanged: nothing is interpolated", function()
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w001",
      argv = { "printf", "%s|", "a b", "it's", "$HOME", ";", "" } })))
    assert.equals("a b|it's|$HOME|;||", r.hosts[1].stdout)
  end)

  it("keeps binary output byte for byte, and output without a final newline", function()
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w00[1-2]",
      command = [[printf 'a\000b\001\377']] })))
    assert.equals("a\0b\1\255", r.hosts[1].stdout)
    assert.equals(5, r.hosts[2].stdout_bytes)
  end)

  it("streams lines to on_output, the last partial line included", function()
    local lines = {}
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w001", command = "printf 'one\\ntwo\\nthree'; echo e >&2",
      on_output = function(host, stream, line) lines[#lines + 1] = host .. " " .. stream .. " " .. line end })))
    assert.is_true(r.hosts[1].ok)
    table.sort(lines)
    assert.same({ "ncn-w001 stderr e", "ncn-w001 stdout one", "ncn-w001 stdout three", "ncn-w001 stdout two" },
      lines)
  end)

  it("takes large output whole, and caps it per host with a note when asked", function()
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w001", max_output = 4 * 1024 * 1024,
      command = "head -c 3000000 /dev/zero | tr '\\000' x" })))
    assert.equals(3000000, #r.hosts[1].stdout)
    assert.is_false(r.hosts[1].stdout_truncated)
    r = assert(fanout.run(with_nodes({ hosts = "ncn-w00[1-2]", max_output = 1000,
      command = "head -c 300000 /dev/zero | tr '\\000' x" })))
    local h = r.hosts[1]
    assert.equals(1000, #h.stdout)
    assert.equals(300000, h.stdout_bytes)
    assert.is_true(h.stdout_truncated)
    assert.is_true(h.ok)
    local groups = fanout.gather(r)
    assert.equals(1, #groups)
    assert.equals("ncn-w[001-002]", groups[1].hostlist)
    assert.matches("%[pgr: stdout cut after 1000 of 300000 bytes%]\n$", groups[1].text)
  end)

  it("kills a command that runs past the timeout", function()
    local t0 = sys.now()
    -- 5 s, not 1: on a busy machine the quick host's ssh handshake alone can take a second
    local r = assert(fanout.run(with_nodes({ hosts = "ncn-w00[1-2]", timeout = 5,
      command = "[ $PGR_NODE = ncn-w001 ] && exec sleep 60; echo quick" })))
    assert.is_true(sys.now() - t0 < 50)
    assert.equals("timed_out", r.hosts[1].outcome)
    assert.equals("timed out after 5s", r.hosts[1].reason)
    assert.is_true(r.hosts[2].ok)
    assert.equals("quick\n", r.hosts[2].stdout)
  end)

  it("reports a missing ssh program per host", function()
    local r = assert(fanout.run({ hosts = "a", command = "true", ssh = "/nonexistent/ssh" }))
    assert.equals("spawn_failed", r.hosts[1].outcome)
    assert.matches("No such file", r.hosts[1].reason)
  end)

  it("records the command on every node it reached", function()
    assert(fanout.run(with_nodes({ hosts = "ncn-w00[1-3]", argv = { "systemctl", "restart", "spire-agent" } })))
    for _, h in ipairs({ "ncn-w001", "ncn-w002", "ncn-w003" }) do
      local f = assert(io.open(nodes .. "/runs/" .. h))
      assert.matches("systemctl restart spire%-agent\n", f:read("a"))
      f:close()
    end
  end)
end)
