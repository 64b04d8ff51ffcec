-- Specs of pgr.ui: what a person sees (step lines, bars redrawn on a terminal and plain lines
-- otherwise, colours and NO_COLOR, quiet) and what a program sees (--json events), via set_output.
local ui = require "pgr.ui"
local json = require "pgr.json"

describe("pgr.ui", function()
  local out, t, restore_clock
  before_each(function()
    out = {}
    ui.set_output(function(stream, text) out[#out + 1] = { stream, text } end)
    t = 100
    restore_clock = ui.set_clock(function() return t end)
    ui.reset()
    ui.configure({ tty = false, width = 80 })
    ui.set_redactor(nil)
  end)
  after_each(function()
    ui.set_output(nil)
    ui.set_clock(restore_clock)
    ui.reset()
  end)

  local function text(stream)
    local parts = {}
    for _, o in ipairs(out) do if not stream or o[1] == stream then parts[#parts + 1] = o[2] end end
    return table.concat(parts)
  end

  it("writes one line per step with its duration", function()
    ui.step_start(1, 12, "Scale spire-server to 0")
    ui.step_done(1, 12, "Scale spire-server to 0", 4.25)
    ui.step_failed(2, 12, "Delete the postgresql object", 0.31, "forbidden")
    ui.step_skipped(3, 12, "Wait", "done in an earlier run")
    assert.equals("[ 1/12] ok   Scale spire-server to 0  (4.2s)\n"
      .. "[ 2/12] FAIL Delete the postgresql object  (0.3s)\n       forbidden\n"
      .. "[ 3/12] skip Wait  (done in an earlier run)\n", text("out"))
  end)

  it("prints a plain progress line at most every few seconds without a terminal", function()
    local bar = ui.progress({ label = "dump", total = 1000, unit = "bytes" })
    for i = 1, 10 do
      t = t + 1
      bar:update(i * 100)
    end
    bar:finish()
    local s = text("err")
    local _, lines = s:gsub("\n", "")
    assert.equals(3, lines) -- at 5 s, at 10 s, and the summary
    assert.matches("dump  %[##########%.%.%.%.%.%.%.%.%.%.%]   50%%  500 B of 1000 B  100 B/s  ETA 0:05\n", s)
    assert.matches("dump: 1000 B in 10s %(100 B/s%)\n$", s)
  end)

  it("redraws the bar on a terminal at most ten times a second, then clears it", function()
    ui.configure({ tty = true })
    local bar = ui.progress({ label = "rows", unit = "rows" })
    for i = 1, 100 do
      t = t + 0.01
      bar:update(i * 10)
    end
    local redraws = 0
    for _, o in ipairs(out) do if o[2]:find("\r\27[K", 1, true) then redraws = redraws + 1 end end
    assert.is_true(redraws >= 9 and redraws <= 11, "redraws: " .. redraws)
    bar:finish("restored 1000 rows")
    assert.matches("\r\27%[Krestored 1000 rows\n$", text("err"))
  end)

  it("colours only on a terminal and never with NO_COLOR", function()
    assert.equals("x", ui.color("red", "x"))
    ui.configure({ color = true })
    assert.equals("\27[31mx\27[0m", ui.color("red", "x"))
    ui.reset()
    ui.configure({ tty = true })
    local prev = os.getenv("NO_COLOR")
    if prev and prev ~= "" then
      assert.equals("x", ui.color("red", "x"))
    end
  end)

  it("shows a status line once per change without a terminal, and nothing when quiet", function()
    ui.status("waiting for pods to go")
    ui.status("waiting for pods to go")
    t = t + 6
    ui.status("waiting for pods to go")
    ui.status("waiting for the pod to start")
    assert.equals("waiting for pods to go\nwaiting for pods to go\nwaiting for the pod to start\n", text("err"))
    out = {}
    ui.configure({ quiet = true })
    ui.status("hidden")
    ui.info("hidden")
    ui.progress({ label = "x", total = 1 }):update(1)
    assert.equals("", text())
  end)

  it("emits JSON events on stdout and moves human lines to stderr with --json", function()
    ui.configure({ json = true })
    ui.step_done(2, 3, "b", 1.5, "note")
    local lines = {}
    for l in text("out"):gmatch("[^\n]+") do lines[#lines + 1] = assert(json.decode(l)) end
    assert.equals(1, #lines)
    assert.equals("step_done", lines[1].event)
    assert.equals(2, lines[1].step)
    assert.equals(1.5, lines[1].seconds)
    assert.matches("%[2/3%] ok   b", text("err"))
  end)

  it("passes every line through the redactor", function()
    ui.set_redactor(function(s) return (s:gsub("hunter2", "‹redacted›")) end)
    ui.info("password hunter2")
    ui.configure({ json = true })
    ui.json({ event = "x", msg = "hunter2" })
    assert.is_nil(text():find("hunter2", 1, true))
    ui.set_redactor(nil)
  end)

  it("formats sizes and durations", function()
    assert.equals("512 B", ui.bytes(512))
    assert.equals("1.5 MiB", ui.bytes(1.5 * 1024 * 1024))
    assert.equals("4.2s", ui.duration(4.2))
    assert.equals("2m05s", ui.duration(125))
  end)
end)
