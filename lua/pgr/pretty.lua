-- pgr.pretty: readable rendering of Lua values for the REPL and for error reports:
-- nested tables indented, keys sorted (numbers first, then strings), cycles marked, depth bounded;
-- the string values of credential fields (M.SECRET_KEYS) shown as <redacted> unless opts.reveal.
local M = {}

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    if ta == "number" then return true end
    if tb == "number" then return false end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t == "number" and math.type(v) == "float" and v == math.floor(v) and v == v
    and v ~= math.huge and v ~= -math.huge then
    return ("%.1f"):format(v)
  end
  local mt = getmetatable(v)
  if t ~= "table" and mt and type(mt) == "table" and mt.__tostring then return tostring(v) end
  return tostring(v)
end

-- format(v [, {indent="  ", max_depth=8, width=100, reveal=false}]) -> string
-- Fields whose string values are credentials: shown as <redacted> (s3.connect's cfg, kubeconfig.load).
M.SECRET_KEYS = { secret_key = true, session_token = true, token = true, password = true,
                  key_data = true, access_key = false }

function M.format(v, opts)
  opts = opts or {}
  local indent = opts.indent or "  "
  local max_depth = opts.max_depth or 8
  local width = opts.width or 100
  local seen = {}
  local out = {}

  local function render(x, depth, path)
    if type(x) ~= "table" then return scalar(x) end
    if seen[x] then return "<cycle: " .. seen[x] .. ">" end
    local mt = getmetatable(x)
    if mt and type(mt) == "table" and mt.__tostring then return tostring(x) end
    if depth >= max_depth then return "{...}" end
    seen[x] = path
    local keys, n = {}, #x
    for k in pairs(x) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, key_order)
    local items = {}
    for i = 1, n do items[#items + 1] = render(x[i], depth + 1, path .. "[" .. i .. "]") end
    for _, k in ipairs(keys) do
      local label = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
      local sub = is_identifier(k) and (path .. "." .. k) or (path .. label)
      local val = x[k]
      if M.SECRET_KEYS[k] and type(val) == "string" and not opts.reveal then
        items[#items + 1] = label .. " = <redacted>"
      else
        items[#items + 1] = label .. " = " .. render(val, depth + 1, sub)
      end
    end
    seen[x] = nil
    if #items == 0 then return "{}" end
    local flat = "{ " .. table.concat(items, ", ") .. " }"
    if #flat + depth * #indent <= width and not flat:find("\n", 1, true) then return flat end
    local pad = indent:rep(depth + 1)
    return "{\n" .. pad .. table.concat(items, ",\n" .. pad) .. "\n" .. indent:rep(depth) .. "}"
  end

  out[1] = render(v, 0, "<top>")
  return out[1]
end

-- The REPL's way of showing a result: strings as they are, everything else formatted.
function M.show(v)
  if type(v) == "string" then return v end
  return M.format(v)
end

return M
