-- Specs of pgr.base64: standard base64 as Kubernetes Secret data uses it (padding required, line
-- breaks tolerated like Go's decoder), the URL alphabet, and error values.
local base64 = require "pgr.base64"
local errors = require "pgr.errors"

describe("pgr.base64", function()
  it("encodes and decodes the RFC 4648 vectors", function()
    local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
      foobar = "Zm9vYmFy" }
    for plain, coded in pairs(vectors) do
      assert.equals(coded, base64.encode(plain))
      assert.equals(plain, base64.decode(coded))
    end
  end)

  it("round-trips every byte value", function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local all = table.concat(t)
    assert.equals(all, base64.decode(base64.encode(all)))
    assert.equals(all, base64.urldecode(base64.urlencode(all)))
  end)

  it("decodes a Secret password as kubectl shows it", function()
    assert.equals("c2VjcmV0LXBhc3N3b3Jk", base64.encode("secret-password"))
    assert.equals("secret-password", base64.decode("c2VjcmV0LXBhc3N3b3Jk"))
  end)

  it("tolerates line breaks, as Go's decoder does", function()
    assert.equals("foobar", base64.decode("Zm9v\nYmFy\r\n"))
  end)

  it("refuses missing padding and foreign characters with an error value", function()
    for _, bad in ipairs({ "Zm9vYg", "Zm9vYg=", "Zm9v YmFy", "Zg==Zg==", "Zm-_", "Z" }) do
      local v, err = base64.decode(bad)
      assert.is_nil(v, bad)
      assert.is_true(errors.is(err))
      assert.equals("base64", err.code)
      assert.is_number(err.offset)
      assert.matches("invalid base64", tostring(err))
    end
    local _, err = base64.decode("Zm9v YmFy")
    assert.equals(4, err.offset)
  end)

  it("uses the URL alphabet without padding for urlencode, either way for urldecode", function()
    assert.equals("-__-", base64.urlencode("\251\255\254"))
    assert.equals("Zg", base64.urlencode("f"))
    assert.equals("f", base64.urldecode("Zg"))
    assert.equals("f", base64.urldecode("Zg=="))
    assert.is_nil(base64.urldecode("+//+"))
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() base64.encode({}) end)
    assert.has_error(function() base64.decode() end)
  end)
end)
