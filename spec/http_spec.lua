-- Specs of pgr.http (the shared libcurl layer, host/httpcore.c) against real HTTP and HTTPS servers
-- on loopback (spec/support/httpd.py): methods and bodies, headers, auth, keep-alive, timeouts,
-- refused and cut connections, body limits, TLS verification with a CA file, a CA blob, or none.
local http = require "pgr.http"
local json = require "pgr.json"
local sys = require "pgr.sys"

local ROOT = os.getenv("PGR_ROOT") or "."
local ADDR = "127.22.2.1"
local OTHER = "127.22.2.2"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function start_httpd(dir, name, cert, key, addr)
  local out = dir .. "/" .. name .. ".out"
  local pid = run(("python3 %s/spec/support/httpd.py %s %d %s %s > %s 2>&1 & echo $!"):format(
    ROOT, addr or ADDR, sys.getpid(), cert or "", key or "", out)):match("%d+")
  for _ = 1, 600 do -- 30 s: a busy machine starts python slowly
    local f = io.open(out)
    local port = f and f:read("a"):match("port=(%d+)")
    if f then f:close() end
    if port then return pid, tonumber(port) end
    sys.sleep(0.05)
  end
  os.execute("kill " .. pid)
  error("httpd did not start: " .. (io.open(out) and io.open(out):read("a") or ""))
end

describe("pgr.http", function()
  local dir, pids, base, tls, tls_other = nil, {}, nil, nil, nil
  local cert
  setup(function()
    dir = run("mktemp -d /tmp/pgr-http.XXXXXX"):gsub("%s+$", "")
    cert = dir .. "/cert.pem"
    run(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s -days 2 -subj /CN=%s "
      .. "-addext subjectAltName=IP:%s"):format(dir, cert, ADDR, ADDR))
    local pid, port = start_httpd(dir, "plain")
    pids[#pids + 1] = pid
    base = ("http://%s:%d"):format(ADDR, port)
    local tpid, tport = start_httpd(dir, "tls", cert, dir .. "/key.pem")
    pids[#pids + 1] = tpid
    tls = ("https://%s:%d"):format(ADDR, tport)
    -- the same certificate served from another address: its name does not match there
    local opid, oport = start_httpd(dir, "tls-other", cert, dir .. "/key.pem", OTHER)
    pids[#pids + 1] = opid
    tls_other = ("https://%s:%d"):format(OTHER, oport)
  end)
  teardown(function()
    for _, p in ipairs(pids) do os.execute("kill " .. p .. " 2>/dev/null") end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("sends method, headers and body, and returns status, headers and body", function()
    local r = assert(http.request { method = "POST", url = base .. "/echo?x=1",
                                    headers = { ["X-Test"] = "yes", "X-Line: also" }, body = "a=1&b" })
    assert.equals(200, r.status)
    assert.equals("application/json", r.headers["content-type"])
    assert.equals("a, b", r.headers["x-multi"])
    local e = json.decode(r.body)
    assert.equals("POST", e.method)
    assert.equals("/echo?x=1", e.path)
    assert.equals("yes", e.headers["x-test"])
    assert.equals("also", e.headers["x-line"])
    assert.equals("a=1&b", e.body)
    assert.matches("^pgr/", e.headers["user-agent"])
    local put = json.decode(assert(http.request { method = "PUT", url = base .. "/echo", body = "" }).body)
    assert.equals("PUT", put.method)
    local del = json.decode(assert(http.request { method = "DELETE", url = base .. "/echo" }).body)
    assert.equals("DELETE", del.method)
    local head = assert(http.request { method = "HEAD", url = base .. "/bytes/10" })
    assert.equals("10", head.headers["content-length"])
    assert.equals("", head.body)
  end)

  it("sends the path as given: no '.' or '..' segment is resolved away", function()
    for _, path in ipairs { "/echo/ns/secrets/..", "/echo/ns/secrets/.", "/echo/a/../../b" } do
      local r = assert(http.request { url = base .. path })
      assert.equals(path, json.decode(r.body).path)
    end
  end)

  it("treats any HTTP status as a response", function()
    local r = assert(http.request { url = base .. "/status/404" })
    assert.equals(404, r.status)
    assert.equals("status body", r.body)
    assert.equals(503, assert(http.request { url = base .. "/status/503" }).status)
  end)

  it("sends a bearer token or basic credentials", function()
    local e = json.decode(assert(http.request { url = base .. "/echo", bearer = "tok-123" }).body)
    assert.equals("Bearer tok-123", e.headers.authorization)
    e = json.decode(assert(http.request { url = base .. "/echo", username = "u", password = "p w" }).body)
    assert.equals("Basic dTpwIHc=", e.headers.authorization)
  end)

  it("keeps the connection alive across requests of one client", function()
    local c = assert(http.client {})
    local a = assert(c:request { url = base .. "/conn" }).body
    local b = assert(c:request { url = base .. "/conn" }).body
    assert.equals(a, b)
    c:close()
    c:close()
    assert.has_error(function() c:request { url = base .. "/conn" } end)
    local d = assert(http.request { url = base .. "/conn" }).body
    assert.are_not.equals(a, d)
  end)

  it("times out, names the origin and never the path's query", function()
    -- (the server would answer after 5 s: a timeout error, not an answer, shows the bound ended it)
    local r, err = http.request { url = base .. "/sleep/5?token=s3cr3t", timeout = 0.5 }
    assert.is_nil(r)
    assert.equals("timeout", err.code, tostring(err))
    assert.matches(base, err.message, 1, true)
    assert.is_nil(err.message:find("s3cr3t", 1, true))
    assert.equals(28, err.curl_code)
  end)

  it("reports a refused connection, a cut body and an oversized body by kind", function()
    local _, err = http.request { url = "http://" .. ADDR .. ":1/x" }
    assert.equals("connect", err.code)
    _, err = http.request { url = base .. "/cut" }
    assert.equals("transfer", err.code)
    _, err = http.request { url = base .. "/bytes/100000", max_body = 1000 }
    assert.equals("too_large", err.code)
    assert.equals(100000, #assert(http.request { url = base .. "/bytes/100000" }).body)
  end)

  it("verifies TLS by default, with a CA file, a CA blob, or not at all when asked", function()
    local r, err = http.request { url = tls .. "/echo" }
    assert.is_nil(r)
    assert.equals("tls", err.code)
    assert.equals(200, assert(http.request { url = tls .. "/echo", cainfo = cert }).status)
    local f = assert(io.open(cert))
    local pem = f:read("a")
    f:close()
    assert.equals(200, assert(http.request { url = tls .. "/echo", ca_pem = pem }).status)
    assert.equals(200, assert(http.request { url = tls .. "/echo", insecure = true }).status)
    -- the right CA for another name still fails: the host name is checked too
    _, err = http.request { url = tls_other .. "/echo", cainfo = cert }
    assert.equals("tls", err.code)
    assert.equals(200, assert(http.request { url = tls_other .. "/echo", insecure = true }).status)
  end)

  it("without a CA of its own trusts $CURL_CA_BUNDLE, $SSL_CERT_FILE, the site's ca_file, else the system's", function()
    local PGR = os.getenv("PGR") or "pgr"
    local get = ("%s -e 'local r, e = require(\"pgr.http\").request{url=\"%s/echo\"} "
      .. "print(r and r.status or e.code .. \": \" .. e.message)'"):format(PGR, tls)
    -- this machine's own bundle does not hold the test CA: refused
    assert.matches("^tls: ", run("env -u SSL_CERT_FILE -u CURL_CA_BUNDLE " .. get))
    assert.equals("200\n", run("env -u CURL_CA_BUNDLE SSL_CERT_FILE=" .. cert .. " " .. get))
    assert.equals("200\n", run("env -u SSL_CERT_FILE CURL_CA_BUNDLE=" .. cert .. " " .. get))
    -- a variable naming a missing file is an error naming it, not another trust store
    local out = run("env -u CURL_CA_BUNDLE SSL_CERT_FILE=" .. dir .. "/none.pem " .. get)
    assert.matches("^tls: GET https://127%.22%.2%.1:%d+: CA bundle " .. dir:gsub("%p", "%%%0")
      .. "/none%.pem %(from %$SSL_CERT_FILE%) cannot be read", out)
    -- the site file's ca_file, once the site is loaded
    local site = dir .. "/site.lua"
    local f = assert(io.open(site, "w"))
    f:write(("return { ca_file = %q }\n"):format(cert))
    f:close()
    local with_site = ("env -u SSL_CERT_FILE -u CURL_CA_BUNDLE PGR_SITE=%s %s -e "
      .. "'assert(require(\"pgr.site\").load()) print(require(\"pgr.http\").ca_bundle())'"):format(site, PGR)
    assert.equals(cert .. "\n", run(with_site))
    local set = ("env -u SSL_CERT_FILE -u CURL_CA_BUNDLE %s -e 'local http = require \"pgr.http\" "
      .. "http.set_ca_file(%q) print(http.request{url=\"%s/echo\"}.status) http.set_ca_file(nil) "
      .. "local _, e = http.request{url=\"%s/echo\"} print(e.code)'"):format(PGR, cert, tls, tls)
    assert.equals("200\ntls\n", run(set))
    -- the variables win over the site's file
    assert.matches("^tls: ", run("env -u CURL_CA_BUNDLE SSL_CERT_FILE=/etc/hostname PGR_SITE=" .. site .. " "
      .. get:gsub("%-e '", "-e 'require(\"pgr.site\").load() ")))
  end)

  it("raises on misuse", function()
    assert.has_error(function() http.request {} end)
    assert.has_error(function() http.request { url = base, headers = { ["X"] = "a\r\nInjected: 1" } } end)
    assert.has_error(function() http.request { url = base, timeout = "soon" } end)
    assert.equals("a%20b%2Fc", http.urlencode("a b/c"))
    assert.equals("a%20b/c", http.urlencode("a b/c", true))
  end)
end)
