-- pgr help [COMMAND]: the list of commands with one line each, or one command's full help.
local cli = require "pgr.cli"

return {
  summary = "list the commands, or show one command's options",
  usage = "Usage: pgr help [COMMAND]",
  run = function(args)
    local name = args[1]
    if not name then
      print(cli.usage())
      return 0
    end
    local ok, cmd = pcall(require, "pgr.cmd." .. name)
    if not ok then
      cli.eprint(("pgr help: no command '%s' (pgr help lists them)"):format(name))
      return cli.EXIT.usage
    end
    print(cli.command_help(name, cmd))
    return 0
  end,
}
