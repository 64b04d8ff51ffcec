-- pgr.cli: the command line. C's main hands argv here; every command lives in pgr.cmd.<name>
-- (a module returning {summary=, usage=, run=function(args) -> exit code}), found by name.
local sys = require "pgr.sys"

local M = {}

-- Exit codes, documented in `pgr help` and relied on by scripts.
M.EXIT = {
  ok = 0,         -- done
  failed = 1,     -- the work failed (a step, a restore with unexpected errors, a host that failed)
  usage = 2,      -- bad command line
  preflight = 3,  -- a check before any change failed: nothing was touched
  interrupted = 130,
}

local function eprint(...)
  io.stderr:write(table.concat({ ... }, ""), "\n")
end
M.eprint = eprint

-- Every command module: pgr.cmd.* among the embedded modules, plus any found on PGR_PATH.
function M.commands()
  local list = {}
  for _, name in ipairs(require "pgr.embedded") do
    local cmd = name:match("^pgr%.cmd%.([%w_-]+)$")
    if cmd then list[#list + 1] = cmd end
  end
  table.sort(list)
  return list
end

local function load_command(name)
  if not name:match("^[%w_-]+$") then return nil end
  local ok, mod = pcall(require, "pgr.cmd." .. name)
  if ok then return mod end
  if not tostring(mod):find("module 'pgr.cmd." .. name .. "' not found", 1, true) then
    error(mod, 0)
  end
  return nil
end

function M.usage()
  local lines = {
    "pgr — restore CSM Postgres clusters safely; a Lua 5.4 host with Kubernetes, S3, PostgreSQL and SSH",
    "",
    "Usage: pgr COMMAND [ARGS]     run a command (below)",
    "       pgr SCRIPT [ARGS]      run a Lua script, as lua does (the arg table, exit codes)",
    "       pgr -e CHUNK           run a Lua chunk;  pgr -  runs standard input",
    "       pgr                    the REPL on a terminal (same as pgr repl)",
    "",
    "Commands:",
  }
  local names = M.commands()
  local width = 0
  for _, n in ipairs(names) do width = math.max(width, #n) end
  for _, n in ipairs(names) do
    local mod = load_command(n)
    lines[#lines + 1] = ("  %-" .. width .. "s  %s"):format(n, mod and mod.summary or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Run 'pgr help COMMAND' (or pgr COMMAND --help) for a command's options."
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Exit codes: 0 done; 1 failed; 2 bad usage; 3 preflight failed (nothing changed);"
  lines[#lines + 1] = "            130 interrupted (Ctrl-C or SIGTERM: pgr cleans up first; a third stops it at once)."
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Environment: PGR_PATH (Lua modules that override the built-in ones), PGR_SITE (site"
  lines[#lines + 1] = "file, default /etc/pgr/site.lua), PGR_STATE_DIR (journals), NO_COLOR, KUBECONFIG."
  lines[#lines + 1] = "CURL_CA_BUNDLE, SSL_CERT_FILE (the CA bundle of connections that name none)."
  return table.concat(lines, "\n")
end

-- Builds the global `arg` as lua.c does: script at 0, interpreter and options at negative indices.
local function set_arg(argv, script_index)
  local a = {}
  for i = 0, #argv do a[i - script_index] = argv[i] end
  _G.arg = a
  return table.unpack(a, 1, #argv - script_index)
end

local function traceback(e)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    return e
  end
  local tb = debug.traceback(e, 2)
  -- frames below the script are pgr's own CLI machinery: cut them, as lua.c shows none
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

-- Runs a loaded chunk as lua does: an error prints "pgr: <message + traceback>" and gives exit 1;
-- os.exit inside the script ends the process with its own code.
local function run_chunk(fn, ...)
  local ok, err = xpcall(fn, traceback, ...)
  if not ok then
    eprint("pgr: ", tostring(err))
    return M.EXIT.failed
  end
  return M.EXIT.ok
end

local function run_script(argv, i)
  local path = argv[i]
  local fn, err
  if path == "-" then
    fn, err = load(io.stdin:read("a"):gsub("^#![^\n]*", ""), "=stdin")
  else
    fn, err = loadfile(path)
  end
  if not fn then
    eprint("pgr: ", err)
    return M.EXIT.failed
  end
  return run_chunk(fn, set_arg(argv, i))
end

-- Lua-style options before a script: -e CHUNK, -l MOD, -i (REPL afterwards), -v, --, -.
local function lua_style(argv)
  -- the script's index, as lua.c computes it: the first argument that is not an option
  local script_i = 1
  while argv[script_i] do
    local a = argv[script_i]
    if a == "-e" or a == "-l" then script_i = script_i + 2
    elseif a == "-i" or a == "-v" then script_i = script_i + 1
    elseif a == "--" then script_i = script_i + 1 break
    else break end
  end
  set_arg(argv, script_i)
  local i, interactive, did = 1, false, false
  while i <= #argv do
    local a = argv[i]
    if a == "-e" then
      local chunk = argv[i + 1]
      if not chunk then eprint("pgr: '-e' needs argument"); return M.EXIT.usage end
      local fn, err = load(chunk, "=(command line)")
      if not fn then eprint("pgr: ", err); return M.EXIT.failed end
      local code = run_chunk(fn)
      if code ~= 0 then return code end
      did = true
      i = i + 2
    elseif a == "-l" then
      local mod = argv[i + 1]
      if not mod then eprint("pgr: '-l' needs argument"); return M.EXIT.usage end
      local ok, err = pcall(function() _G[mod:match("[^.]+$")] = require(mod) end)
      if not ok then eprint("pgr: ", tostring(err)); return M.EXIT.failed end
      i = i + 2
    elseif a == "-i" then
      interactive = true
      i = i + 1
    elseif a == "-v" then
      print(require("pgr.cmd.version").line())
      did = true
      i = i + 1
    elseif a == "--" then
      i = i + 1
      break
    else
      break
    end
  end
  if argv[i] then
    local code = run_script(argv, i)
    if code ~= 0 or not interactive then return code end
  elseif interactive or not did then
    if interactive or sys.isatty("stdin") then
      return require("pgr.cmd.repl").run({})
    end
    return run_script({ [0] = argv[0], "-" }, 1)
  end
  if interactive then return require("pgr.cmd.repl").run({}) end
  return M.EXIT.ok
end

function M.main(argv)
  local first = argv[1]
  if first == "--help" or first == "-h" then first = "help" end
  if first == "--version" then first = "version" end
  if first and first:sub(1, 1) ~= "-" then
    local cmd = load_command(first)
    local is_file = (first:find("/", 1, true) or first:match("%.lua$")) and io.open(first, "r")
    if is_file then is_file:close() end
    if cmd and not is_file then
      local rest = table.move(argv, 2, #argv, 1, {})
      if rest[1] == "--help" or rest[1] == "-h" then
        print(M.command_help(first, cmd))
        return M.EXIT.ok
      end
      local code = cmd.run(rest)
      if code == nil or code == true then return M.EXIT.ok end
      if code == false then return M.EXIT.failed end
      return code
    end
    -- a script is named as a path (./x, x.lua): a mistyped command word never runs a file of the
    -- current directory
    local f = (first:find("/", 1, true) or first:match("%.lua$")) and io.open(first, "r")
    if not f then
      eprint(("pgr: '%s' is neither a command nor a readable script (pgr help lists the commands; "
        .. "a script is named by its path: ./%s)"):format(first, first))
      return M.EXIT.usage
    end
    f:close()
  end
  return lua_style(argv)
end

function M.command_help(name, cmd)
  local parts = { cmd.usage or ("Usage: pgr " .. name), "" }
  if cmd.summary then parts[#parts + 1] = cmd.summary end
  if cmd.help then parts[#parts + 1] = "" parts[#parts + 1] = cmd.help end
  if cmd.flags then
    parts[#parts + 1] = ""
    parts[#parts + 1] = "Options:"
    parts[#parts + 1] = require("pgr.args").help(cmd.flags)
  end
  return table.concat(parts, "\n")
end

-- Parses a command's arguments against cmd.flags; prints the usage error itself.
-- Returns opts, positionals, or nil (the caller returns EXIT.usage).
function M.parse(name, cmd, argv)
  local opts, pos = require("pgr.args").parse(argv, cmd.flags or {})
  if not opts then
    M.usage_error(name, cmd, pos)
    return nil
  end
  return opts, pos
end

-- A command line a command cannot use: the reason, the usage, where to read more; EXIT.usage.
function M.usage_error(name, cmd, msg)
  eprint(("pgr %s: %s"):format(name, msg))
  eprint(cmd.usage or ("Usage: pgr " .. name))
  eprint(("Run 'pgr %s --help' for more."):format(name))
  return M.EXIT.usage
end

return M
