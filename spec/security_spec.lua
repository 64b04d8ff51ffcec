-- Specs of pgr.security: insecure connections said once per process (plain HTTP, verification off),
-- never with a URL's path, query or user info; files of secrets refused unless 0600 and root's or yours.
local security = require "pgr.security"
local sys = require "pgr.sys"

local function tmpfile(body, mode)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(body)
  f:close()
  os.execute(("chmod %s %s"):format(mode, p))
  return p
end

describe("pgr.security", function()
  before_each(function() security.reset() end)

  it("warns once about a plain-HTTP endpoint, naming its origin only", function()
    security.check_endpoint("http://user:pw@rgw-vip.nmn:8080/bucket/key?X-Amz-Signature=abc", "the S3 endpoint",
      { secret = "the backups" })
    security.check_endpoint("http://user:pw@rgw-vip.nmn:8080/other", "the S3 endpoint", { secret = "the backups" })
    local n = security.notices()
    assert.equals(1, #n)
    assert.equals("the S3 endpoint http://rgw-vip.nmn:8080 is plain HTTP: what goes over it (the backups) is not "
      .. "encrypted and the server is not authenticated (use an https:// URL)", n[1])
  end)

  it("warns when verification is off, and says nothing of a verified https endpoint", function()
    security.check_endpoint("https://api-gw-service-nmn.local/keycloak/token", "the Keycloak token endpoint")
    assert.same({}, security.notices())
    security.check_endpoint("https://api-gw-service-nmn.local/keycloak/token", "the Keycloak token endpoint",
      { insecure = true, where = "keycloak.insecure in the site file" })
    assert.same({ "TLS verification of the Keycloak token endpoint https://api-gw-service-nmn.local is OFF "
      .. "(keycloak.insecure in the site file): anyone on the path can pose as it; give its CA instead" },
      security.notices())
  end)

  it("warns through s3.connect for an http:// endpoint and for s3.insecure", function()
    local c = assert(require("pgr.s3").connect { site = false, endpoint = "http://127.25.0.1:1", access_key = "a",
      secret_key = "b" })
    c:close()
    assert.matches("the S3 endpoint http://127.25.0.1:1 is plain HTTP", security.notices()[1], 1, true)
    c = assert(require("pgr.s3").connect { site = false, endpoint = "https://127.25.0.1:1", access_key = "a",
      secret_key = "b", insecure = true })
    c:close()
    assert.matches("TLS verification of the S3 endpoint https://127.25.0.1:1 is OFF (s3.insecure)",
      security.notices()[2], 1, true)
  end)

  it("takes a file of secrets only when it is 0600 and root's or yours", function()
    local p = tmpfile("admin\npassword\n", "0600")
    assert.is_true(security.secret_file(p, "keycloak.credentials_file"))
    os.execute("chmod 0644 " .. p)
    local ok, err = security.secret_file(p, "keycloak.credentials_file")
    assert.is_nil(ok)
    assert.equals("untrusted", err.code)
    assert.equals(("refusing keycloak.credentials_file %s: it holds secrets but is open to others (mode 0644): "
      .. "chmod 0600 %s"):format(p, p), err.message)
    os.execute("chmod 0640 " .. p)
    ok, err = security.secret_file(p, "keycloak.credentials_file")
    assert.matches("open to its group (mode 0640)", err.message, 1, true)
    os.execute("chmod 0600 " .. p .. "; chown 65534 " .. p .. " 2>/dev/null")
    if sys.stat(p).uid == 65534 then
      ok, err = security.secret_file(p, "keycloak.credentials_file")
      assert.is_nil(ok)
      assert.matches("owned by uid 65534, neither root nor you", err.message, 1, true)
    end
    os.remove(p)
    ok, err = security.secret_file(p, "keycloak.credentials_file")
    assert.equals("io", err.code)
  end)
end)
