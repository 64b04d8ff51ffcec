-- spec/support/values.lua — random JSON-shaped Lua values for round-trip property tests, and a deep
-- equality that tells integers from floats and [] from {} (json.array_mt / json.object_mt).
local json = require "pgr.json"

local M = {}

-- integers at the edges; JSON specs narrow this to +-2^53 (cJSON parses numbers as doubles)
M.big_ints = { math.maxinteger, math.mininteger, 4294967297, -9007199254740992, 9007199254740992 }

-- a small deterministic PRNG, so a failing case can be reproduced from its seed
function M.rng(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state % n
  end
end

local words = { "", "a", "yes", "no", "on", "null", "~", "0777", "1.5", "-", "x: y", "# c", "multi\nline",
  "tab\tx", "quote\"", "back\\slash", "é", "日本", "true", "  lead", "trail  ", "- item", "{}", "[]", "2024-01-01" }

local function scalar(r)
  local k = r(7)
  if k == 0 then return json.null end
  if k == 1 then return r(2) == 0 end
  if k == 2 then return r(2000001) - 1000000 end
  if k == 3 then
    return M.big_ints[r(#M.big_ints) + 1]
  end
  -- never integral: JSON writes integral floats as integers (see json.encode)
  if k == 4 then return (r(2000001) - 1000000) / 64 + 1 / 128 end
  if k == 5 then return words[r(#words) + 1] end
  local t = {}
  for i = 1, r(12) do t[i] = string.char(32 + r(95)) end
  return table.concat(t)
end

function M.value(r, depth)
  depth = depth or 0
  local k = depth > 3 and 0 or r(4)
  if k <= 1 then return scalar(r) end
  if k == 2 then
    local t = json.array()
    for i = 1, r(5) do t[i] = M.value(r, depth + 1) end
    return t
  end
  local t = json.object()
  for _ = 1, r(5) do t[scalar(r) == json.null and "k" or tostring(r(1000)) .. words[r(#words) + 1]] = M.value(r, depth + 1) end
  return t
end

-- equal(a, b): same types (integer vs float too), same array/object marks, same contents
function M.equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then return math.type(a) == math.type(b) and (a == b or (a ~= a and b ~= b)) end
  if type(a) ~= "table" then return a == b end
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do
    if not M.equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

return M
