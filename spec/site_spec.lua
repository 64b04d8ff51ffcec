-- Specs of pgr.site: the defaults, a site file merged over them, and validation errors that name
-- the field; the state directory's order of precedence.
local site = require "pgr.site"

local function tmpfile(body)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(body)
  f:close()
  return p
end

describe("pgr.site", function()
  it("merges a site file over the defaults, one level deep", function()
    local p = tmpfile([[return { nodes = "ncn-w00[1-3]", s3 = { endpoint = "http://127.25.0.1:9000" },
      commands = { spire_verify_jwt = "true" } }]])
    local s = assert(site.load(p))
    os.remove(p)
    assert.equals("ncn-w00[1-3]", s.nodes)
    assert.equals("http://127.25.0.1:9000", s.s3.endpoint)
    assert.equals("postgres-backup", s.s3.bucket)
    assert.equals("us-east-1", s.s3.region)
    assert.equals(32, s.s3.readahead_mb)
    assert.same({ "/bin/sh", "-c", "true" }, site.command(s, "spire_verify_jwt"))
    assert.same({ "systemctl", "restart", "spire-agent" }, site.command(s, "spire_restart_agent"))
    assert.is_nil(site.command(s, "hsm_rediscover"))
    local none, err = site.command(s, "no_such")
    assert.is_nil(none)
    assert.equals("site", err.code)
  end)

  it("takes the safety backup's destination: true (the default), false, s3 or a directory", function()
    assert.is_true(site.defaults().safety_backup)
    for _, v in ipairs({ "false", '"s3"', '"/var/lib/pgr/way-back"' }) do
      local p = tmpfile("return { safety_backup = " .. v .. " }")
      local s = assert(site.load(p))
      os.remove(p)
      assert.equals(load("return " .. v)(), s.safety_backup)
    end
  end)

  it("loads the example site file, whose ssh options reach ssh as options, before the host", function()
    local s = assert(site.load("etc/site.example.lua"))
    assert.equals("ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]", s.nodes)
    assert.equals(1, s.restore_jobs)
    assert.equals(300, s.lease_seconds)
    local fanout = require "pgr.fanout"
    local argv = fanout.ssh_argv("ncn-w001", fanout.site_options(s), "true")
    local dashdash
    for i, w in ipairs(argv) do if w == "--" then dashdash = i end end
    assert.equals("ncn-w001", argv[dashdash + 1])
    for i = 2, dashdash - 1 do
      assert.is_true(argv[i]:sub(1, 1) == "-" or argv[i - 1]:match("^%-[BbcDEeFIiJLlmOopQRSWw]$") ~= nil,
        ("ssh argument %d (%s) is neither an option nor an option's argument"):format(i, argv[i]))
    end
  end)

  it("names a misspelt field of a sub-table, and checks the insecure switches' types", function()
    for _, case in ipairs {
      { [[return { s3 = { endpiont = "https://x" } }]], "s3.endpiont is not a field of s3 (known: bucket, ca_bundle, " },
      { [[return { ssh = { optoins = {} } }]], "ssh.optoins is not a field of ssh" },
      { [[return { keycloak = { tokenurl = "https://x" } }]], "keycloak.tokenurl is not a field of keycloak" },
      { [[return { s3 = { credentials = { access_key = "a", secret_key = "b", sercet = "c" } } }]],
        "s3.credentials.sercet is not a field of s3.credentials" },
      { [[return { s3 = { insecure = "yes" } }]], "s3.insecure must be true or false" },
      { [[return { s3 = { insecure = true, ca_bundle = "/x.pem" } }]], "s3.insecure and s3.ca_bundle exclude each other" },
      { [[return { ssh = { options = { "StrictHostKeyChecking=yes" } } }]],
        'ssh.options[1] "StrictHostKeyChecking=yes" is not an ssh option: ssh would take it for the host name' },
      { [[return { ssh = { options = { "-o" } } }]], "ssh.options[1] -o needs its argument as the next word" },
      { [[return { ssh = { options = { "-F", "cfg", "BatchMode=no" } } }]], 'ssh.options[3] "BatchMode=no" is not an ssh option' },
      { [[return { ssh = { options = { o = "x" } } }]], "ssh.options must be a list of ssh arguments" },
      { [[return { postgres = { ssl_mode = "require" } }]], "postgres.ssl_mode is not a field of postgres (known: channel_binding, sslmode, sslrootcert)" },
      { [[return { postgres = { sslmode = "verify" } }]], "postgres.sslmode must be one of require, verify-ca, verify-full" },
      { [[return { postgres = { sslmode = "verify-ca" } }]], 'postgres.sslrootcert is needed with sslmode "verify-ca"' },
      { [[return { postgres = { sslmode = "verify-full", sslrootcert = "/nonexistent/ca.crt" } }]],
        "postgres.sslrootcert /nonexistent/ca.crt cannot be read" },
      { [[return { postgres = { channel_binding = "yes" } }]], "postgres.channel_binding must be require, prefer or disable" },
    } do
      local p = tmpfile(case[1])
      local s, err = site.load(p)
      os.remove(p)
      assert.is_nil(s, case[1])
      assert.equals("site", err.code)
      assert.matches(case[2], err.message, 1, true)
    end
    local p = tmpfile([[return { ssh = { options = { "-F", "cfg", "-oBatchMode=yes", "-4", "-p", "2222" } },
      s3 = { insecure = false, virtual_host = true, resumes = 0 } }]])
    assert(site.load(p))
    os.remove(p)
  end)

  it("refuses a site file others may write, or that is not root's or yours", function()
    local p = tmpfile("return {}")
    assert(site.load(p))
    os.execute("chmod 0666 " .. p)
    local s, err = site.load(p)
    assert.is_nil(s)
    assert.matches(("refusing the site file %s: file %s is writable by others (mode 0666): chmod go-w"):format(p, p),
      err.message, 1, true)
    os.execute("chmod 0644 " .. p .. "; chown 65534 " .. p .. " 2>/dev/null")
    if require("pgr.sys").stat(p).uid == 65534 then
      s, err = site.load(p)
      assert.is_nil(s)
      assert.matches("is owned by uid 65534, neither root nor you", err.message, 1, true)
    end
    os.remove(p)
  end)

  for _, case in ipairs({
    { [[return { s3 = { endpoint = "ftp://x" } }]], "s3.endpoint must be an http:// or https:// URL" },
    { [[return { nodes = 3 }]], "nodes must be a string" },
    { [[return { colour = true }]], "colour is not a site field" },
    { [[return { commands = { spire_fix_storage = { 1, 2 } } }]], "commands.spire_fix_storage must be an argv list" },
    { [[return { s3 = { credentials = { access_key = "a" } } }]], "s3.credentials needs both access_key and secret_key" },
    { [[return { ssh = { fanout = 0 } }]], "ssh.fanout must be a positive number" },
    { [[return { restore_jobs = 2.5 }]], "restore_jobs must be a whole number from 1 to 64" },
    { [[return { restore_jobs = 0 }]], "restore_jobs must be a whole number from 1 to 64" },
    { [[return { s3 = { readahead_mb = -1 } }]], "s3.readahead_mb must be a whole number of MiB from 0" },
    { [[return { s3 = { readahead_mb = 1.5 } }]], "s3.readahead_mb must be a whole number of MiB from 0" },
    { [[return { s3 = { readahead_mb = "32" } }]], "s3.readahead_mb must be a whole number of MiB from 0" },
    { [[return { lease_seconds = 0 }]], "lease_seconds must be a whole number of seconds from 1 to 86400" },
    { [[return { lease_seconds = 1.5 }]], "lease_seconds must be a whole number of seconds from 1 to 86400" },
    { [[return { safety_backup = "backups" }]], 'safety_backup must be true, false, "s3" or an absolute directory' },
    { [[return { safety_backup = 0 }]], 'safety_backup must be true, false, "s3" or an absolute directory' },
    { [[return 1]], "must return a table" },
    { [[nodes = "ncn-m001"]], "must return a table" },
    { [[return {]], "site file" },
  }) do
    it("rejects " .. case[1], function()
      local p = tmpfile(case[1])
      local s, err = site.load(p)
      os.remove(p)
      assert.is_nil(s)
      assert.equals("site", err.code)
      assert.matches(case[2], tostring(err), 1, true)
    end)
  end

  it("treats an empty file (PGR_SITE=/dev/null) as all defaults", function()
    local s = assert(site.load("/dev/null"))
    assert.same(site.defaults().commands, s.commands)
    assert.equals("/dev/null", s.path)
  end)

  it("treats an absent default file as all defaults, an absent named file as an error", function()
    local s, err = site.load("/nonexistent/site.lua")
    assert.is_nil(s)
    assert.matches("cannot be read", tostring(err))
  end)

  it("chooses the state directory: PGR_STATE_DIR, the site's, XDG_STATE_HOME, ~/.local/state", function()
    local cmd = (os.getenv("PGR") or "./pgr")
      .. [[ -e 'print(require("pgr.site").state_dir({state_dir="/site"}), require("pgr.site").state_dir({}))']]
    local function run(env)
      local p = io.popen("env -u PGR_STATE_DIR -u XDG_STATE_HOME " .. env .. " " .. cmd)
      local o = p:read("a")
      p:close()
      return o
    end
    assert.equals("/s\t/s\n", run("PGR_STATE_DIR=/s"))
    assert.equals("/site\t/x/pgr\n", run("XDG_STATE_HOME=/x"))
    assert.equals("/site\t/h/.local/state/pgr\n", run("HOME=/h"))
  end)
end)
