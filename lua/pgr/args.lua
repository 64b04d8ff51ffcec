-- pgr.args: command-line flags for pgr's commands, getopt_long style.
-- A spec lists flags; parse returns options and positionals, or nil and a usage error.
local M = {}

-- spec: array of { name="conn", short="c", value="CONNINFO" (takes an argument) | nil (a switch),
--                  help="...", multi=true (repeatable: collects a list) }
-- Accepts --name VALUE, --name=VALUE, -c VALUE, -cVALUE, bundled switches -yq, and "--" to end flags.
function M.parse(argv, spec)
  local by_long, by_short = {}, {}
  for _, f in ipairs(spec) do
    by_long[f.name] = f
    if f.short then by_short[f.short] = f end
  end
  local opts, pos = {}, {}
  local function set(f, v)
    local key = f.name:gsub("-", "_")
    if f.multi then
      opts[key] = opts[key] or {}
      table.insert(opts[key], v)
    else
      opts[key] = v
    end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, #argv, #pos + 1, pos)
      break
    elseif a:sub(1, 2) == "--" then
      local name, val = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local f = by_long[name]
      if not f then return nil, ("unknown option --%s"):format(name) end
      if f.value then
        if not val then
          i = i + 1
          val = argv[i]
          if val == nil then return nil, ("option --%s needs a value (%s)"):format(name, f.value) end
        end
        set(f, val)
      else
        if val then return nil, ("option --%s takes no value"):format(name) end
        set(f, true)
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local j = 2
      while j <= #a do
        local c = a:sub(j, j)
        local f = by_short[c]
        if not f then return nil, ("unknown option -%s"):format(c) end
        if f.value then
          local val = a:sub(j + 1)
          if val == "" then
            i = i + 1
            val = argv[i]
            if val == nil then return nil, ("option -%s needs a value (%s)"):format(c, f.value) end
          end
          set(f, val)
          break
        end
        set(f, true)
        j = j + 1
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- The options part of a command's --help, aligned.
function M.help(spec)
  local rows, width = {}, 0
  for _, f in ipairs(spec) do
    local left = (f.short and ("-" .. f.short .. ", ") or "    ") .. "--" .. f.name
    if f.value then left = left .. " " .. f.value end
    rows[#rows + 1] = { left, f.help or "" }
    if #left > width then width = #left end
  end
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = ("  %-" .. width .. "s  %s"):format(r[1], r[2])
  end
  return table.concat(out, "\n")
end

return M
