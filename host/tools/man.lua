-- host/tools/man.lua: writes the man page pgr.1 (roff) from pgr's own help text — `pgr help` and
-- each command's --help — so the page never says something the binary does not.
-- Usage: pgr host/tools/man.lua > pgr.1     (SOURCE_DATE_EPOCH fixes the date, for reproducibility)
local cli = require "pgr.cli"
local sys = require "pgr.sys"
local site = require "pgr.site"
local runbook = require "pgr.runbook"

local out = {}
local function w(s) out[#out + 1] = s end

-- a line of text as roff reads it: backslashes escaped, no line taken for a request
local function text(line)
  line = line:gsub("\\", "\\e")
  if line:match("^[.']") then line = "\\&" .. line end
  -- characters beyond ASCII as groff's \[uXXXX], so any man(1) renders them
  return (line:gsub(utf8.charpattern, function(ch)
    local cp = utf8.codepoint(ch)
    return cp < 128 and ch or ("\\[u%04X]"):format(cp)
  end))
end

-- preformatted lines (the help text is laid out for an 80-column terminal already)
local function block(s)
  w(".nf")
  for line in (s .. "\n"):gmatch("(.-)\n") do w(text(line)) end
  w(".fi")
end

local epoch = tonumber(os.getenv("SOURCE_DATE_EPOCH") or "")
local date = os.date("!%Y-%m-%d", epoch or os.time())
local version = sys.versions().pgr

w(('.TH PGR 1 "%s" "pgr %s" "pgr manual"'):format(date, version))
w(".SH NAME")
w("pgr \\- restore a CSM Postgres cluster in one safe command")

-- the overview: usage lines, then the rest of `pgr help` under their own headings
local usage = cli.usage()
local synopsis, rest = usage:match("^[^\n]*\n\n(Usage:.-)\n\n(.*)$")
w(".SH SYNOPSIS")
block(synopsis:gsub("^Usage: ", "       "))
w(".SH DESCRIPTION")
w(text(usage:match("^([^\n]*)")))
w(".PP")
w("Each command below prints the same text with \\fBpgr help\\fR \\fICOMMAND\\fR.")
w(".SH COMMANDS")
for _, name in ipairs(cli.commands()) do
  local ok, cmd = pcall(require, "pgr.cmd." .. name)
  if ok and type(cmd) == "table" then
    w((".SS %s"):format(text(name)))
    block(cli.command_help(name, cmd))
  end
end
local exit_codes = rest:match("(Exit codes:.-)\n\n")
local environment = rest:match("(Environment:.*)$")
w(".SH EXIT STATUS")
block(exit_codes)
w(".SH ENVIRONMENT")
block(environment)
w(".SH FILES")
w(".TP")
w(text(site.DEFAULT_PATH))
w("the site file (see the example beside it, site.example.lua); never installed by a package")
w(".TP")
w(text(table.concat(runbook.SERVICE_DIRS, ", ")))
w("where a service name (spire, keycloak, vcs, hsm, sls) is looked up; the procedures are built")
w("into pgr as well")
w(".TP")
w("/etc/pgr/lua")
w("Lua modules that override the built-in ones (after \\fBPGR_PATH\\fR)")
w(".TP")
w("/etc/ssl/ca-bundle.pem, /etc/pki/tls/certs/ca-bundle.crt, /etc/ssl/certs/ca-certificates.crt, ...")
w("the system's CA bundle, for TLS peers whose configuration names no CA (SUSE's, RHEL's and")
w("Debian's places; \\fBSSL_CERT_FILE\\fR or the site's ca_file come first)")
w(".SH SEE ALSO")
w("\\fBkubectl\\fR(1), \\fBpsql\\fR(1), \\fBpdsh\\fR(1)")
io.write(table.concat(out, "\n"), "\n")
