-- pgr.ui: everything pgr shows a person or a program while it works: step lines with durations,
-- progress bars, transient "waiting for ..." lines, colours, and --json events — through one writer.
--
-- API (all output passes through ui.set_output's writer and the redactor):
--   ui.configure{json=bool, quiet=bool, color=bool|nil, tty=bool|nil, width=n|nil}
--       json:  events go to stdout as JSON lines (ui.json); human lines move to stderr.
--       quiet: no progress bars, status lines or info lines (step lines and errors stay).
--       color/tty: force or forbid colour / terminal redrawing (default: detected; NO_COLOR honoured;
--       TERM unset, empty or "dumb" means no redrawing and no colour).
--   ui.reset()                        back to the defaults (detected tty and colour)
--   ui.set_output(fn) -> previous    fn(stream, text): stream is "out" or "err"; text has its newlines.
--   ui.set_redactor(fn) -> previous  fn(text) -> text, applied to every line before it is written.
--   ui.set_log(fn) -> previous       fn(line): every permanent line, redacted and uncoloured (a log)
--   ui.set_clock(fn) -> previous     fn() -> seconds (monotonic); for tests.
--   ui.color(name, text)             name: red green yellow blue magenta cyan bold dim
--   ui.line(text) / ui.info(text) / ui.warn(text) / ui.error(text)
--   ui.status(text) / ui.clear_status()      a transient line; plain lines at most every few seconds
--   ui.progress{label=, total=n|nil, unit="bytes"|"rows"|nil} -> bar
--       bar:update(done [, note])    absolute count done so far
--       bar:finish([summary])        the bar becomes one line (summary, or label + total + rate)
--   ui.step_start(n, total, name)
--   ui.step_done(n, total, name, seconds [, note])
--   ui.step_failed(n, total, name, seconds, err)
--   ui.step_skipped(n, total, name, reason)
--   ui.json(event)                   one JSON line on stdout when json mode is on, else nothing
--   ui.encode_json(v)                pgr.json's encode (keys sorted: stable lines)
--   ui.bytes(n), ui.duration(seconds), ui.rate(n, seconds, unit)   formatting helpers
local sys = require "pgr.sys"

local M = {}

local cfg = { json = false, quiet = false }
local writer, redactor
local clock = sys.now
local status_shown = false      -- a transient line is on the terminal and must be erased first
local last_plain_status = { text = nil, at = -math.huge }

-- Colour and redrawing are decided per stream: the bar lives on stderr, step lines on the human
-- stream (stdout, or stderr when stdout carries JSON).
local function human_stream() return cfg.json and "err" or "out" end

-- A terminal that cannot move the cursor or colour (TERM unset, empty or "dumb": an Emacs shell, a
-- serial console, ssh without -t) gets the plain lines a pipe gets.
local function dumb_terminal()
  local term = os.getenv("TERM")
  return term == nil or term == "" or term == "dumb"
end

local function is_tty(stream)
  if cfg.tty ~= nil then return cfg.tty end
  return not dumb_terminal() and sys.isatty(stream == "out" and "stdout" or "stderr")
end

local function color_on(stream)
  if cfg.color ~= nil then return cfg.color end
  local nc = os.getenv("NO_COLOR")
  if nc and nc ~= "" then return false end
  return is_tty(stream)
end

local function raw_write(stream, text)
  if redactor then text = redactor(text) end
  if writer then return writer(stream, text) end
  local f = stream == "out" and io.stdout or io.stderr
  f:write(text)
  f:flush()
end

-- Erases the transient line (status or bar) before anything permanent is written.
local function clear_transient()
  if status_shown then
    raw_write("err", "\r\27[K")
    status_shown = false
  end
end

local logger

local function write_line(stream, text)
  clear_transient()
  raw_write(stream, text .. "\n")
  if logger then
    local plain = text:gsub("\27%[[%d;]*m", "")
    logger(redactor and redactor(plain) or plain)
  end
end

function M.configure(t)
  for k, v in pairs(t or {}) do cfg[k] = v end
  return cfg
end

function M.options() return cfg end

-- Back to the defaults (detection for tty and colour, no json, not quiet).
function M.reset()
  cfg = { json = false, quiet = false }
  status_shown = false
  last_plain_status = { text = nil, at = -math.huge }
end

function M.set_output(fn)
  local prev = writer
  writer = fn
  return prev
end

function M.set_redactor(fn)
  local prev = redactor
  redactor = fn
  return prev
end

-- fn(line) receives every permanent line (not the redrawn bar or status), redacted, uncoloured:
-- the run's log file.
function M.set_log(fn)
  local prev = logger
  logger = fn
  return prev
end

function M.set_clock(fn)
  local prev = clock
  clock = fn or sys.now
  return prev
end

local CODES = { red = 31, green = 32, yellow = 33, blue = 34, magenta = 35, cyan = 36, bold = 1, dim = 2 }

local function paint(stream, name, text)
  local code = CODES[name]
  if not code or not color_on(stream) then return text end
  return ("\27[%dm%s\27[0m"):format(code, text)
end

function M.color(name, text)
  return paint(human_stream(), name, text)
end

-- Formatting -------------------------------------------------------------------------------------

function M.bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  if i == 1 then return ("%d B"):format(n) end
  return ("%.1f %s"):format(n, units[i])
end

function M.duration(s)
  if s < 10 then return ("%.1fs"):format(s) end
  s = math.floor(s + 0.5)
  if s < 60 then return ("%ds"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%dh%02dm"):format(s // 3600, s % 3600 // 60)
end

local function count(n, unit)
  if unit == "bytes" then return M.bytes(n) end
  if unit then return ("%d %s"):format(math.floor(n), unit) end
  return ("%d"):format(math.floor(n))
end

function M.rate(n, seconds, unit)
  if seconds <= 0 then return "" end
  local r = n / seconds
  if unit == "bytes" then return M.bytes(r) .. "/s" end
  return ("%.0f %s/s"):format(r, unit or "")
end

local function clock_eta(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

-- JSON -------------------------------------------------------------------------------------------

local json = require "pgr.json"

function M.encode_json(v)
  return json.encode(v)
end

function M.json(event)
  if not cfg.json then return end
  local line = M.encode_json(event)
  if line then
    clear_transient()
    raw_write("out", line .. "\n")
  end
end

-- Lines ------------------------------------------------------------------------------------------

function M.line(text) write_line(human_stream(), text) end

function M.info(text)
  if cfg.quiet then return end
  write_line(human_stream(), text)
end

function M.warn(text) write_line("err", paint("err", "yellow", "warning: ") .. text) end

function M.error(text) write_line("err", paint("err", "red", "error: ") .. text) end

-- Seconds between plain (non-terminal) progress and status lines.
M.PLAIN_EVERY = 5

function M.status(text)
  if cfg.quiet or cfg.json then return end
  if is_tty("err") then
    local width = cfg.width or tonumber(os.getenv("COLUMNS")) or 80
    if #text > width - 1 then text = text:sub(1, width - 2) .. "…" end
    raw_write("err", "\r\27[K" .. paint("err", "dim", text))
    status_shown = true
    return
  end
  local now = clock()
  -- a changed text is news; the same text again is only repeated as a sign of life
  if text ~= last_plain_status.text or now - last_plain_status.at >= M.PLAIN_EVERY then
    raw_write("err", text .. "\n")
    last_plain_status.text, last_plain_status.at = text, now
  end
end

function M.clear_status()
  clear_transient()
  last_plain_status.text = nil
end

-- Progress bars ----------------------------------------------------------------------------------

local Bar = {}
Bar.__index = Bar

-- Redraws at most this often on a terminal.
M.REDRAW_EVERY = 0.1

function M.progress(opts)
  assert(type(opts) == "table" and opts.label, "ui.progress{label=...}")
  local now = clock()
  local bar = setmetatable({
    label = opts.label, total = opts.total, unit = opts.unit, done = 0, note = nil,
    started = now, drawn_at = -math.huge, printed_at = now, json_at = -math.huge, finished = false,
  }, Bar)
  return bar
end

function Bar:text(width)
  local elapsed = clock() - self.started
  local parts = { self.label }
  if self.total and self.total > 0 then
    local frac = math.min(1, self.done / self.total)
    local cells = 20
    local full = math.floor(frac * cells + 0.5)
    parts[#parts + 1] = "[" .. ("#"):rep(full) .. ("."):rep(cells - full) .. "]"
    parts[#parts + 1] = ("%3d%%"):format(math.floor(frac * 100))
    parts[#parts + 1] = count(self.done, self.unit) .. " of " .. count(self.total, self.unit)
    if elapsed > 0 and self.done > 0 then
      parts[#parts + 1] = M.rate(self.done, elapsed, self.unit)
      local remaining = (self.total - self.done) / (self.done / elapsed)
      parts[#parts + 1] = "ETA " .. clock_eta(math.max(0, remaining))
    end
  else
    parts[#parts + 1] = count(self.done, self.unit)
    if elapsed > 0 and self.done > 0 then parts[#parts + 1] = M.rate(self.done, elapsed, self.unit) end
    parts[#parts + 1] = M.duration(elapsed)
  end
  if self.note then parts[#parts + 1] = self.note end
  local s = table.concat(parts, "  ")
  if width and #s > width - 1 then s = s:sub(1, width - 1) end
  return s
end

function Bar:update(done, note)
  if self.finished then return end
  self.done = done or self.done
  -- a note may come as a table of fields ({note=}, {text=} or a list of words)
  if type(note) == "table" then note = note.note or note.text or table.concat(note, "  ") end
  if note then self.note = tostring(note) end
  local now = clock()
  if cfg.json and now - self.json_at >= 1 then
    self.json_at = now
    M.json({ event = "progress", label = self.label, done = self.done, total = self.total,
             unit = self.unit })
  end
  if cfg.quiet or cfg.json then return end
  if is_tty("err") then
    if now - self.drawn_at < M.REDRAW_EVERY then return end
    self.drawn_at = now
    local width = cfg.width or tonumber(os.getenv("COLUMNS")) or 80
    raw_write("err", "\r\27[K" .. self:text(width))
    status_shown = true
  elseif now - self.printed_at >= M.PLAIN_EVERY then
    self.printed_at = now
    raw_write("err", self:text() .. "\n")
  end
end

function Bar:finish(summary)
  if self.finished then return end
  self.finished = true
  local elapsed = clock() - self.started
  if cfg.json then
    M.json({ event = "progress", label = self.label, done = self.done, total = self.total,
             unit = self.unit, finished = true, seconds = elapsed })
  end
  if cfg.quiet or cfg.json then
    clear_transient()
    return
  end
  if not summary then
    summary = ("%s: %s in %s"):format(self.label, count(self.done, self.unit), M.duration(elapsed))
    local r = M.rate(self.done, elapsed, self.unit)
    if r ~= "" and elapsed >= 0.5 then summary = summary .. " (" .. r .. ")" end
  end
  write_line("err", summary)
end

-- Step lines -------------------------------------------------------------------------------------

local function prefix(n, total)
  local w = #tostring(total)
  return ("[%" .. w .. "d/%d]"):format(n, total)
end

function M.step_start(n, total, name)
  M.json({ event = "step_started", step = n, steps = total, name = name })
  if cfg.quiet or cfg.json then return end
  if is_tty("err") then
    raw_write("err", "\r\27[K" .. prefix(n, total) .. " " .. name .. " ...")
    status_shown = true
  end
end

function M.step_done(n, total, name, seconds, note)
  M.json({ event = "step_done", step = n, steps = total, name = name, seconds = seconds, note = note })
  local s = human_stream()
  local line = ("%s %s %s  %s"):format(prefix(n, total), paint(s, "green", "ok  "), name,
    paint(s, "dim", "(" .. M.duration(seconds or 0) .. ")"))
  if note then line = line .. "  " .. note end
  write_line(s, line)
end

function M.step_failed(n, total, name, seconds, err)
  M.json({ event = "step_failed", step = n, steps = total, name = name, seconds = seconds,
           error = tostring(err), code = type(err) == "table" and err.code or nil })
  local s = human_stream()
  write_line(s, ("%s %s %s  %s"):format(prefix(n, total), paint(s, "red", "FAIL"), name,
    paint(s, "dim", "(" .. M.duration(seconds or 0) .. ")")))
  write_line(s, "       " .. tostring(err))
end

function M.step_skipped(n, total, name, reason)
  M.json({ event = "step_skipped", step = n, steps = total, name = name, reason = reason })
  local s = human_stream()
  write_line(s, ("%s %s %s  %s"):format(prefix(n, total), paint(s, "dim", "skip"), name,
    paint(s, "dim", "(" .. (reason or "skipped") .. ")")))
end

return M
