-- Specs of pgr.s3 listings against a server that would never end them (spec/support/httpd.py's
-- /s3-* routes): a repeated continuation token, keys that go round, empty truncated pages, and a
-- listing that grows for ever are each refused within a few pages, never a loop that eats memory.
local s3 = require "pgr.s3"
local http = require "pgr.http"
local sys = require "pgr.sys"

local ROOT = os.getenv("PGR_ROOT") or "."
local ADDR = "127.22.2.9"

describe("pgr.s3 listing from a server that never ends it", function()
  local pid, base, c
  setup(function()
    local p = io.popen("mktemp -d /tmp/pgr-s3list.XXXXXX")
    local dir = p:read("l")
    p:close()
    local out = dir .. "/httpd.out"
    p = io.popen(("python3 %s/spec/support/httpd.py %s %d > %s 2>&1 & echo $!"):format(ROOT, ADDR, sys.getpid(), out))
    pid = p:read("l")
    p:close()
    local port
    for _ = 1, 600 do -- 30 s
      local f = io.open(out)
      port = f and f:read("a"):match("port=(%d+)")
      if f then f:close() end
      if port then break end
      sys.sleep(0.05)
    end
    assert(port, "httpd did not start")
    base = ("http://%s:%s"):format(ADDR, port)
    c = assert(s3.connect { site = false, endpoint = base, access_key = "a", secret_key = "b" })
  end)
  teardown(function()
    if c then c:close() end
    if pid then os.execute("kill " .. pid) end
  end)

  local function pages(mode)
    return tonumber(assert(http.request { url = base .. "/s3-count/" .. mode }).body)
  end

  it("refuses a continuation token sent again", function()
    local list, err = c:list("s3-loop")
    assert.is_nil(list)
    assert.equals("bad_response", err.code)
    assert.matches("sent the same continuation token again: the listing would never end", err.message, 1, true)
    assert.equals(2, pages("loop"))
  end)

  it("refuses keys that do not move forward (tokens that go round)", function()
    local list, err = c:list("s3-cycle")
    assert.is_nil(list)
    assert.matches("(page 2): a key does not come after k2: the server repeats or reorders its listing", err.message, 1, true)
    assert.equals(2, pages("cycle"))
  end)

  it("refuses truncated pages without a key, after a hundred in a row", function()
    local list, err = c:list("s3-empty")
    assert.is_nil(list)
    assert.matches("101 truncated pages in a row without a key", err.message, 1, true)
    assert.equals(101, pages("empty"))
  end)

  it("stops a listing that grows for ever at max_objects", function()
    local list, err = c:list("s3-grow", { max_objects = 55 })
    assert.is_nil(list)
    assert.equals("too_many", err.code)
    assert.matches("listing s3://s3-grow: more than 55 objects (give a narrower prefix)", err.message, 1, true)
    assert.equals(6, pages("grow"))
  end)
end)
