-- bench/wait.lua (run by bench/wait inside pgr): how long after a condition becomes true in the
-- simulator each waiter notices it — pgr's watch-based wait_for, kubectl wait, the runbook's sleep-2 loop.
local k8s = require "pgr.k8s"
require("pgr.ui").configure { quiet = true }  -- no "waiting for" lines between the figures
local sys = require "pgr.sys"

local kubeconfig, workdir = arg[1], arg[2]
local N = tonumber(os.getenv("BENCH_WAIT_N") or "20")
local NLOOP = tonumber(os.getenv("BENCH_WAIT_LOOP_N") or "6")
local PGR = os.getenv("PGR") or "./pgr"

local k = assert(k8s.connect { kubeconfig = kubeconfig })
assert(k:create { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "bench" }, data = { v = "0" } })

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A separate pgr process sets data.v after a random delay and records, in wall-clock seconds, the
-- time just before it sent the PATCH and just after the server acknowledged it.
local flipper = workdir .. "/flip.lua"
do
  local f = assert(io.open(flipper, "w"))
  f:write([[
    local k8s, sys = require "pgr.k8s", require "pgr.sys"
    local kubeconfig, value, delay, out = arg[1], arg[2], tonumber(arg[3]), arg[4]
    local k = assert(k8s.connect { kubeconfig = kubeconfig })
    assert(k:resource("cm"))
    sys.sleep(delay)
    local sent = sys.time()
    assert(k:patch("cm", "bench", { data = { v = value } }))
    local acked = sys.time()
    local f = io.open(out .. ".tmp", "w") f:write(("%.6f %.6f"):format(sent, acked)) f:close()
    os.rename(out .. ".tmp", out)
  ]])
  f:close()
end

local function flip(value)
  local out = ("%s/flip-%s"):format(workdir, value)
  os.remove(out)
  local delay = 0.4 + math.random() * 0.6
  os.execute(("%s %s %s %s %.3f %s >/dev/null 2>&1 &"):format(PGR, flipper, kubeconfig, value, delay, out))
  return function()
    local deadline = sys.now() + 30
    while sys.now() < deadline do
      local s = read(out)
      if s then
        local sent, acked = s:match("^(%S+) (%S+)$")
        return tonumber(sent), tonumber(acked)
      end
      sys.sleep(0.01)
    end
    error("the flipper did not report")
  end
end

local function stats(list)
  table.sort(list)
  local function pct(p) return list[math.max(1, math.ceil(#list * p))] end
  return #list, pct(0.5), pct(0.9), list[#list]
end

local results = {}
local function record(name, lat)
  local n, med, p90, max = stats(lat)
  results[#results + 1] = ("%-38s %3d %9.1f %9.1f %9.1f"):format(name, n, med * 1000, p90 * 1000, max * 1000)
end

local value = 0
local function next_value()
  value = value + 1
  return tostring(value)
end

-- pgr: k8s.wait_for on a watch
local lat_ack, lat_sent = {}, {}
for _ = 1, N do
  local v = next_value()
  local done = flip(v)
  assert(k:wait_for("cm", "bench", function(o) return o and o.data.v == v end, { timeout = 30 }))
  local returned = sys.time()
  local sent, acked = done()
  lat_ack[#lat_ack + 1] = math.max(0, returned - acked)
  lat_sent[#lat_sent + 1] = returned - sent
end
record("pgr wait_for (from PATCH ack)", lat_ack)
record("pgr wait_for (from PATCH sent)", lat_sent)

local function shell_waiter(name, cmd_for, count)
  local lat = {}
  for _ = 1, count do
    local v = next_value()
    local done = flip(v)
    local p = io.popen(cmd_for(v) .. " >/dev/null 2>&1; date +%s.%N")
    local returned = tonumber(p:read("a"))
    p:close()
    local _, acked = done()
    lat[#lat + 1] = math.max(0, returned - acked)
  end
  record(name, lat)
end

local kc = "kubectl --kubeconfig " .. kubeconfig
shell_waiter("kubectl wait --for=jsonpath", function(v)
  return ("%s wait --for=jsonpath='{.data.v}'=%s cm/bench --timeout=30s"):format(kc, v)
end, NLOOP)
shell_waiter("runbook loop (kubectl get; sleep 2)", function(v)
  return ("until [ \"$(%s get cm bench -o jsonpath='{.data.v}')\" = %s ]; do sleep 2; done"):format(kc, v)
end, NLOOP)

print(("%-38s %3s %9s %9s %9s"):format("waiter (latency after the change)", "n", "median ms", "p90 ms", "max ms"))
for _, line in ipairs(results) do print(line) end
