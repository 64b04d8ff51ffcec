-- pgr.hostlist: the pdsh / ClusterShell hostlist syntax — expansion of `ncn-w00[1-3,5]`, folding a
-- list back to its shortest bracketed form, and set operations (union, difference, intersection).
--
-- hostlist.expand(pattern | list) -> { host... } | nil, err     (order kept, duplicates dropped)
-- hostlist.fold(list | pattern) -> "ncn-m[001-003],ncn-w[001-003]"   (sorted, like nodeset -f)
-- hostlist.count(x) -> n | nil, err
-- hostlist.union(a, b, ...), .difference(a, b) (alias .exclude), .intersection(a, b), .xor(a, b)
--   -> list | nil, err    (a and b: patterns or lists)
-- hostlist.contains(x, host) -> boolean | nil, err
--
-- Syntax: comma-separated names; each name may have several bracket groups `[1-3,5,08-10,0-10/2]`
-- (zero padding kept, `/step` as ClusterShell has it); a group multiplies out, first group
-- outermost. Between names: `,` union, `!` difference, `&` intersection, `^` symmetric difference,
-- applied left to right (ClusterShell's extended patterns); a name starting with `-` is excluded
-- (pdsh's `-w host[1-9],-host5`). Errors name the 1-based character position.
local errors = require "pgr.errors"

local M = {}

-- No pattern may expand beyond this: a typo like [1-1000000000] must not eat the machine.
M.MAX_HOSTS = 1000000

local function bad(pattern, pos, what)
  return nil, errors.new("hostlist", ("bad hostlist %q: %s at position %d"):format(pattern, what, pos),
    { pattern = pattern, position = pos })
end

local function pad_of(digits)
  if #digits > 1 and digits:sub(1, 1) == "0" then return #digits end
  return 0
end

local function format_number(pad, v)
  if pad > 0 then return ("%0" .. pad .. "d"):format(v) end
  return ("%d"):format(v)
end

-- Expands the inside of one bracket group, starting at `pos` in the pattern, into a list of
-- digit strings.
local function expand_range(pattern, body, pos)
  local out = {}
  if body == "" then return bad(pattern, pos - 1, "empty brackets '[]'") end
  local at = pos
  for elem in (body .. ","):gmatch("([^,]*),") do
    local e = elem:match("^%s*(.-)%s*$")
    if e == "" then return bad(pattern, at, "empty range") end
    local a, b, step = e:match("^(%d+)%-(%d+)/(%d+)$")
    if not a then a, b = e:match("^(%d+)%-(%d+)$") end
    if not a then a = e:match("^(%d+)$"); b = a end
    if not a then return bad(pattern, at, ("bad range '%s' (digits, a-b or a-b/step)"):format(e)) end
    local va, vb = math.tointeger(tonumber(a)), math.tointeger(tonumber(b))
    if not va or not vb then return bad(pattern, at, ("number too large in '%s'"):format(e)) end
    if vb < va then return bad(pattern, at, ("reversed range '%s'"):format(e)) end
    local st = step and math.tointeger(tonumber(step)) or 1
    if not st or st < 1 then return bad(pattern, at, ("bad step in '%s'"):format(e)) end
    if (vb - va) // st + 1 > M.MAX_HOSTS then
      return bad(pattern, at, ("range '%s' is too large (more than %d)"):format(e, M.MAX_HOSTS))
    end
    if a == b then
      out[#out + 1] = a
    else
      local pad = pad_of(a)
      for v = va, vb, st do out[#out + 1] = format_number(pad, v) end
    end
    at = at + #elem + 1
  end
  return out
end

-- Expands one name (no top-level commas or operators) that starts at `pos` in the pattern.
local function expand_name(pattern, name, pos)
  -- pieces: literal strings and lists of alternatives, in order
  local pieces, i = {}, 1
  while i <= #name do
    local open = name:find("[%[%]]", i)
    if not open then
      pieces[#pieces + 1] = name:sub(i)
      break
    end
    if name:sub(open, open) == "]" then return bad(pattern, pos + open - 1, "unexpected ']'") end
    pieces[#pieces + 1] = name:sub(i, open - 1)
    local close = name:find("]", open + 1, true)
    local nested = name:find("[", open + 1, true)
    if not close then return bad(pattern, pos + open - 1, "unclosed '['") end
    if nested and nested < close then return bad(pattern, pos + nested - 1, "nested '['") end
    local alts, err = expand_range(pattern, name:sub(open + 1, close - 1), pos + open)
    if not alts then return nil, err end
    pieces[#pieces + 1] = alts
    i = close + 1
  end
  local hosts = { "" }
  for _, p in ipairs(pieces) do
    if type(p) == "string" then
      for k = 1, #hosts do hosts[k] = hosts[k] .. p end
    else
      if #hosts * #p > M.MAX_HOSTS then
        return bad(pattern, pos, ("more than %d hosts"):format(M.MAX_HOSTS))
      end
      local nx = {}
      for _, h in ipairs(hosts) do
        for _, alt in ipairs(p) do nx[#nx + 1] = h .. alt end
      end
      hosts = nx
    end
  end
  if #hosts == 1 and hosts[1] == "" then return bad(pattern, pos, "empty host name") end
  return hosts
end

-- Ordered set helpers over plain lists.
local function dedupe(list)
  local seen, out = {}, {}
  for _, h in ipairs(list) do
    if not seen[h] then seen[h] = true; out[#out + 1] = h end
  end
  return out
end

local function members(list)
  local s = {}
  for _, h in ipairs(list) do s[h] = true end
  return s
end

local OPS = {
  [","] = function(a, b)
    local out = table.move(a, 1, #a, 1, {})
    table.move(b, 1, #b, #out + 1, out)
    return dedupe(out)
  end,
  ["!"] = function(a, b)
    local s, out = members(b), {}
    for _, h in ipairs(a) do if not s[h] then out[#out + 1] = h end end
    return out
  end,
  ["&"] = function(a, b)
    local s, out = members(b), {}
    for _, h in ipairs(a) do if s[h] then out[#out + 1] = h end end
    return out
  end,
  ["^"] = function(a, b)
    local sa, sb, out = members(a), members(b), {}
    for _, h in ipairs(a) do if not sb[h] then out[#out + 1] = h end end
    for _, h in ipairs(b) do if not sa[h] then out[#out + 1] = h end end
    return out
  end,
}

local function expand_pattern(pattern)
  local result = {}
  local i, depth, start, op = 1, 0, 1, ","
  local n = #pattern
  -- the operand ends at an operator outside brackets, or at the end
  while i <= n + 1 do
    local c = i <= n and pattern:sub(i, i) or nil
    if c == "[" then
      depth = depth + 1
    elseif c == "]" then
      depth = math.max(depth - 1, 0)
    end
    if c == nil or (depth == 0 and OPS[c]) then
      local raw = pattern:sub(start, i - 1)
      local lead = #raw:match("^%s*")
      local name = raw:match("^%s*(.-)%s*$")
      local pos = start + lead
      if name == "" then
        -- pdsh and clush shrug at empty list items (a trailing comma); not after !, & or ^
        if op ~= "," then return bad(pattern, pos, ("missing host after '%s'"):format(op)) end
      else
        local this_op = op
        if this_op == "," and name:sub(1, 1) == "-" then
          this_op, name, pos = "!", name:sub(2), pos + 1
          if name == "" then return bad(pattern, pos - 1, "missing host after '-'") end
        end
        if name:find("%s") then
          return bad(pattern, pos + name:find("%s") - 1, "space inside a host name")
        end
        local hosts, err = expand_name(pattern, name, pos)
        if not hosts then return nil, err end
        result = OPS[this_op](result, hosts)
        if #result > M.MAX_HOSTS then return bad(pattern, pos, ("more than %d hosts"):format(M.MAX_HOSTS)) end
      end
      op = c
      start = i + 1
    end
    i = i + 1
  end
  return dedupe(result)
end

-- A list (table of names) or a pattern string -> list.
function M.expand(x)
  if type(x) == "table" then
    for k, h in ipairs(x) do
      if type(h) ~= "string" then
        error(("hostlist: item %d is a %s, not a host name"):format(k, type(h)), 2)
      end
    end
    return dedupe(x)
  end
  if type(x) ~= "string" then
    error(("hostlist: expected a pattern or a list of hosts, got %s"):format(type(x)), 2)
  end
  return expand_pattern(x)
end

function M.count(x)
  local list, err = M.expand(x)
  if not list then return nil, err end
  return #list
end

function M.contains(x, host)
  local list, err = M.expand(x)
  if not list then return nil, err end
  for _, h in ipairs(list) do if h == host then return true end end
  return false
end

local function binary(op)
  return function(a, ...)
    local acc, err = M.expand(a)
    if not acc then return nil, err end
    for k = 1, select("#", ...) do
      local b
      b, err = M.expand((select(k, ...)))
      if not b then return nil, err end
      acc = OPS[op](acc, b)
    end
    return acc
  end
end

M.union = binary(",")
M.difference = binary("!")
M.exclude = M.difference
M.intersection = binary("&")
M.xor = binary("^")

-- Folding ------------------------------------------------------------------------------------

-- Folds a set of digit strings ({["001"]=true, ...}) to "001-003,007"; runs keep one padding.
local function fold_numbers(set)
  local items = {}
  for s in pairs(set) do items[#items + 1] = s end
  table.sort(items, function(x, y)
    local vx, vy = tonumber(x), tonumber(y)
    if vx ~= vy then return vx < vy end
    return #x < #y
  end)
  local runs, by_end = {}, {}
  for _, s in ipairs(items) do
    local v = math.tointeger(tonumber(s))
    local run
    if v then
      for _, pad in ipairs({ pad_of(s), #s, 0 }) do
        local cand = by_end[pad .. ":" .. (v - 1)]
        if cand and format_number(cand.pad, v) == s then run = cand break end
      end
    end
    if run then
      by_end[run.pad .. ":" .. run.lastv] = nil
      run.last, run.lastv = s, v
    else
      run = { first = s, last = s, lastv = v or -1, pad = pad_of(s) }
      runs[#runs + 1] = run
    end
    if v then by_end[run.pad .. ":" .. v] = run end
  end
  local parts = {}
  for _, r in ipairs(runs) do
    parts[#parts + 1] = r.first == r.last and r.first or (r.first .. "-" .. r.last)
  end
  return table.concat(parts, ","), #items
end

local function set_text(set)
  local text, n = fold_numbers(set)
  if n == 1 then return text end
  return "[" .. text .. "]"
end

local function split_host(h)
  local texts, nums = {}, {}
  local pos = 1
  while true do
    local s, e = h:find("%d+", pos)
    if not s then break end
    texts[#texts + 1] = h:sub(pos, s - 1)
    nums[#nums + 1] = h:sub(s, e)
    pos = e + 1
  end
  texts[#texts + 1] = h:sub(pos)
  return texts, nums
end

-- Folds hosts that share a template (same text between their numbers) over every dimension:
-- each pass merges items that differ in one dimension only, last dimension first, until stable.
local function fold_template(texts, items, dims)
  local function key_except(item, k)
    local parts = {}
    for d = 1, dims do parts[d] = d == k and "*" or set_text(item[d]) end
    return table.concat(parts, "\0")
  end
  local changed = true
  while changed do
    changed = false
    for k = dims, 1, -1 do
      local groups, order = {}, {}
      for _, item in ipairs(items) do
        local key = key_except(item, k)
        local g = groups[key]
        if g then
          for s in pairs(item[k]) do g[k][s] = true end
          changed = true
        else
          groups[key] = item
          order[#order + 1] = item
        end
      end
      items = order
    end
  end
  local out = {}
  for _, item in ipairs(items) do
    local parts = {}
    for d = 1, dims do
      parts[#parts + 1] = texts[d]
      parts[#parts + 1] = set_text(item[d])
    end
    parts[#parts + 1] = texts[dims + 1]
    out[#out + 1] = { text = table.concat(parts), item = item }
  end
  return out
end

local function first_number(set)
  local best
  for s in pairs(set) do
    local v = tonumber(s)
    if not best or v < best then best = v end
  end
  return best or 0
end

function M.fold(x)
  local list, err = M.expand(x)
  if not list then return nil, err end
  local templates, tnames = {}, {}
  for _, h in ipairs(list) do
    local texts, nums = split_host(h)
    local key = table.concat(texts, "\1")
    local t = templates[key]
    if not t then
      t = { texts = texts, dims = #nums, items = {} }
      templates[key] = t
      tnames[#tnames + 1] = key
    end
    local item = {}
    for d, s in ipairs(nums) do item[d] = { [s] = true } end
    t.items[#t.items + 1] = item
  end
  table.sort(tnames)
  local out = {}
  for _, key in ipairs(tnames) do
    local t = templates[key]
    if t.dims == 0 then
      out[#out + 1] = t.texts[1]
    else
      local folded = fold_template(t.texts, t.items, t.dims)
      table.sort(folded, function(a, b)
        for d = 1, t.dims do
          local va, vb = first_number(a.item[d]), first_number(b.item[d])
          if va ~= vb then return va < vb end
        end
        return a.text < b.text
      end)
      for _, f in ipairs(folded) do out[#out + 1] = f.text end
    end
  end
  return table.concat(out, ",")
end

return M
