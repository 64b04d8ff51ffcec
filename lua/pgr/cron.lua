-- pgr.cron: Kubernetes CronJob schedules (the five-field cron syntax with its names and macros, as
-- the CronJob controller reads it) and UTC times — when a schedule last fired before a given time.
--
-- cron.parse("10 3 * * *") -> schedule | nil, err      schedule.text; schedule:previous(epoch) ->
--   the last time at or before epoch (UTC, whole minutes) the schedule fires, or nil within 4 years
-- cron.epoch("2022-09-14T03:10:04") -> seconds since the epoch, the text read as UTC | nil
-- cron.iso(epoch) -> "2022-09-14T03:10:04Z"
-- Fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 (or jan..dec), day of week 0-7
-- (0 and 7 Sunday, or sun..sat); each "*", "N", "A-B", "*/S", "A-B/S", "N/S" or a comma list; "?" as
-- "*" in the day fields. Macros: @yearly @annually @monthly @weekly @daily @midnight @hourly. When both
-- day fields are restricted a day matching either fires (cron's rule). Time zones (CRON_TZ=, TZ=) are
-- refused: CronJobs take spec.timeZone instead, and without it the controller's zone (UTC in CSM).
local M = {}

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
  ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *", ["@hourly"] = "0 * * * *",
}
local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
                 nov = 11, dec = 12 }
local DAYS = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }
local FIELDS = {
  { name = "minute", lo = 0, hi = 59 },
  { name = "hour", lo = 0, hi = 23 },
  { name = "day of month", lo = 1, hi = 31 },
  { name = "month", lo = 1, hi = 12, names = MONTHS },
  { name = "day of week", lo = 0, hi = 7, names = DAYS },
}

local function value(f, s)
  local n = tonumber(s)
  if not n and f.names then n = f.names[s:lower()] end
  if not n or math.type(n) ~= "integer" then return nil end
  return n
end

-- One field -> set {[n] = true}, restricted (not "*") | nil, message
local function field(f, text)
  local set, restricted = {}, false
  for part in (text .. ","):gmatch("([^,]*),") do
    if part == "" then return nil, ("empty item in the %s field %q"):format(f.name, text) end
    local range, step = part:match("^([^/]+)/(%d+)$")
    if not range then range, step = part, nil end
    step = step and tonumber(step) or 1
    if step < 1 then return nil, ("step 0 in the %s field %q"):format(f.name, text) end
    local lo, hi
    if range == "*" or range == "?" then
      lo, hi = f.lo, f.hi
      if step > 1 then restricted = true end
    else
      restricted = true
      local a, b = range:match("^([^-]+)-([^-]+)$")
      if a then
        lo, hi = value(f, a), value(f, b)
      else
        lo = value(f, range)
        -- "N/S" runs from N to the end of the field, as cron reads it
        hi = lo and (step > 1 and f.hi or lo)
      end
      if not lo or not hi then return nil, ("%q is not a valid %s"):format(part, f.name) end
      if lo < f.lo or hi > f.hi or lo > hi then
        return nil, ("%q is out of range for the %s (%d-%d)"):format(part, f.name, f.lo, f.hi)
      end
    end
    for n = lo, hi, step do set[n] = true end
  end
  return set, restricted
end

function M.parse(text)
  if type(text) ~= "string" then return nil, "a schedule must be a string" end
  local expr = text:match("^%s*(.-)%s*$")
  if expr:match("^CRON_TZ=") or expr:match("^TZ=") then
    return nil, ("schedule %q names a time zone in the text; CronJobs take spec.timeZone"):format(text)
  end
  expr = MACROS[expr:lower()] or expr
  local parts = {}
  for w in expr:gmatch("%S+") do parts[#parts + 1] = w end
  if #parts ~= 5 then return nil, ("schedule %q does not have 5 fields (minute hour day month weekday)"):format(text) end
  local sets, restricted = {}, {}
  for i, f in ipairs(FIELDS) do
    local set, r = field(f, parts[i])
    if not set then return nil, ("schedule %q: %s"):format(text, r) end
    sets[i], restricted[i] = set, r
  end
  if sets[5][7] then sets[5][0] = true end
  return setmetatable({ text = text, sets = sets, dom_restricted = restricted[3], dow_restricted = restricted[5] },
    { __index = M.Schedule })
end

-- Days since 1970-01-01 of a civil (proleptic Gregorian) date, and back (Howard Hinnant's algorithms).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  return m <= 2 and y + 1 or y, m, d
end

function M.epoch(text)
  local y, mo, d, h, mi, s = tostring(text):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)")
  if not y then return nil end
  return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(s)
end

function M.iso(t)
  t = math.floor(t)
  local y, m, d = civil_from_days(t // 86400)
  local r = t % 86400
  return ("%04d-%02d-%02dT%02d:%02d:%02dZ"):format(y, m, d, r // 3600, r % 3600 // 60, r % 60)
end

M.Schedule = {}

function M.Schedule:day_matches(days)
  local _, m, d = civil_from_days(days)
  if not self.sets[4][m] then return false end
  local dow = (days + 4) % 7 -- 1970-01-01 was a Thursday
  local dom_ok, dow_ok = self.sets[3][d] == true, self.sets[5][dow] == true
  if self.dom_restricted and self.dow_restricted then return dom_ok or dow_ok end
  return dom_ok and dow_ok
end

-- The largest member of set in [0, limit], or nil.
local function largest(set, limit)
  for n = limit, 0, -1 do if set[n] then return n end end
end

function M.Schedule:previous(t)
  t = math.floor(t)
  local day, rest = t // 86400, t % 86400
  local limit_h, limit_m = rest // 3600, rest % 3600 // 60
  for back = 0, 4 * 366 do
    local days = day - back
    if self:day_matches(days) then
      local h = largest(self.sets[2], back == 0 and limit_h or 23)
      while h do
        local m = largest(self.sets[1], (back == 0 and h == limit_h) and limit_m or 59)
        if m then return days * 86400 + h * 3600 + m * 60 end
        h = largest(self.sets[2], h - 1)
      end
    end
  end
  return nil
end

return M
