-- Specs of pgr.json: decode/encode of Kubernetes-shaped documents, json.null, [] vs {}, exact
-- integers, sorted keys, errors with byte offsets, and a round-trip property over generated values.
local json = require "pgr.json"
local errors = require "pgr.errors"
local values = require "support.values"

values.big_ints = { 4294967297, -9007199254740992, 9007199254740992, -1 }

describe("pgr.json", function()
  it("keeps [], {} and null apart through decode and encode (the acceptance line)", function()
    local text = [[{"a":[],"b":{},"c":null,"n":4294967297}]]
    assert.equals(text, json.encode(json.decode(text)))
  end)

  it("decodes null to the json.null sentinel and encodes it back", function()
    local v = json.decode('{"x":null,"l":[null,1]}')
    assert.equals(json.null, v.x)
    assert.equals(json.null, v.l[1])
    assert.equals(2, #v.l)
    assert.equals("null", json.encode(json.null))
    assert.equals("null", json.encode(nil))
    assert.equals(json.null, json.decode("null"))
  end)

  it("marks decoded arrays and objects with json.array_mt and json.object_mt", function()
    local v = json.decode('{"a":[1],"o":{}}')
    assert.equals(json.object_mt, getmetatable(v))
    assert.equals(json.array_mt, getmetatable(v.a))
    assert.equals(json.object_mt, getmetatable(v.o))
  end)

  it("encodes unmarked tables by their keys: 1..n is an array, empty or string keys an object", function()
    assert.equals("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.equals("{}", json.encode({}))
    assert.equals("[]", json.encode(json.array()))
    assert.equals("[]", json.encode(json.array({})))
    assert.equals('{"a":1}', json.encode({ a = 1 }))
    assert.equals('{"1":"x","2":"y"}', json.encode(json.object({ "x", "y" })))
  end)

  it("writes object keys in sorted order", function()
    assert.equals('{"a":1,"b":2,"c":{"x":1,"y":2},"z":3}', json.encode({ z = 3, c = { y = 2, x = 1 }, b = 2, a = 1 }))
  end)

  it("keeps integers exact and floats as floats", function()
    local v = json.decode("[4294967297, -9007199254740992, 9007199254740992, 1.5, 1e2, 0.1]")
    assert.equals("integer", math.type(v[1]))
    assert.equals(4294967297, v[1])
    assert.equals(-9007199254740992, v[2])
    assert.equals(9007199254740992, v[3])
    assert.equals("float", math.type(v[4]))
    assert.equals("integer", math.type(v[5])) -- integer-valued numbers come back as integers
    assert.equals("[4294967297,-9007199254740992,9007199254740992,1.5,100,0.1]", json.encode(v))
    assert.equals("9223372036854775807", json.encode(math.maxinteger))
    assert.equals("-9223372036854775808", json.encode(math.mininteger))
    assert.equals("3", json.encode(3.0)) -- Kubernetes' integer fields accept it
    -- the documented limit: cJSON parses numbers as doubles, so beyond 2^53 integers round
    assert.equals(9007199254740992, json.decode("9007199254740993"))
    assert.equals("float", math.type(json.decode("9223372036854775807")))
  end)

  it("passes strings through byte for byte and escapes control characters", function()
    local s = "é日本\1\n\t\"\\/\127"
    local text = json.encode(s)
    assert.equals('"é日本\\u0001\\n\\t\\"\\\\/\127"', text)
    assert.equals(s, json.decode(text))
    assert.equals('"a\\u0000b"', json.encode("a\0b"))
  end)

  it("refuses \\u0000 in input instead of truncating the string", function()
    local v, err = json.decode('["a\\u0000b"]')
    assert.is_nil(v)
    assert.equals("json", err.code)
    assert.equals(3, err.offset)
    assert.matches("\\u0000", err.message)
  end)

  it("returns nil and an error with the byte offset, line and column on bad input", function()
    local v, err = json.decode('{\n  "a": tru\n}')
    assert.is_nil(v)
    assert.is_true(errors.is(err))
    assert.equals("json", err.code)
    assert.equals(9, err.offset)
    assert.equals(2, err.line)
    assert.equals(8, err.column)
    assert.matches("byte 9", err.message)
    assert.matches("byte 9", tostring(err))
    local _, e2 = json.decode("")
    assert.equals(0, e2.offset)
    local _, e3 = json.decode("[1] [2]")
    assert.equals(4, e3.offset)
  end)

  it("refuses to encode what JSON cannot say, naming where", function()
    local cases = {
      { { a = 0 / 0 }, "NaN.*at %$%.a" },
      { { a = { math.huge } }, "infinity.*at %$%.a%[1%]" },
      { { f = print }, "function at %$%.f" },
      { { 1, 2, x = 3 }, "mixing array and object" },
      { { [1] = 1, [3] = 3 }, "sparse array" },
      { { [true] = 1 }, "neither strings nor positive integers" },
      { json.object({ [1] = "a", ["1"] = "b" }), "same text" },
      { coroutine.create(print), "thread" },
    }
    for _, c in ipairs(cases) do
      local v, err = json.encode(c[1])
      assert.is_nil(v)
      assert.equals("json", err.code)
      assert.matches(c[2], err.message)
    end
    local arr = json.array({ 1, 2 })
    arr.extra = true
    local _, err = json.encode(arr)
    assert.matches("json.array table", err.message)
  end)

  it("detects cycles instead of recursing forever", function()
    local t = { a = {} }
    t.a.back = t
    local v, err = json.encode(t)
    assert.is_nil(v)
    assert.matches("cycle.*%$%.a%.back", err.message)
    -- the same table twice (not a cycle) is fine
    local shared = { 1 }
    assert.equals('{"x":[1],"y":[1]}', json.encode({ x = shared, y = shared }))
  end)

  it("pretty-prints with indent=true", function()
    local text = json.encode({ b = { 1, 2 }, a = {}, c = json.array() }, { indent = true })
    assert.equals('{\n  "a": {},\n  "b": [\n    1,\n    2\n  ],\n  "c": []\n}', text)
    assert.same(json.decode(text), json.decode(json.encode({ b = { 1, 2 }, a = {}, c = json.array() })))
  end)

  it("raises on misuse (wrong argument types)", function()
    assert.has_error(function() json.decode({}) end)
    assert.has_error(function() json.encode({}, { indent = "yes" }) end)
    assert.has_error(function() json.array(5) end)
  end)

  it("round-trips a Kubernetes postgresql object and a merge patch with empty lists", function()
    local cr = [[{"apiVersion":"acid.zalan.do/v1","kind":"postgresql","metadata":{"creationTimestamp":"2024-05-01T10:00:00Z","generation":3,"labels":{"team":"cray"},"name":"spire-postgres","namespace":"spire","resourceVersion":"4294967297"},"spec":{"databases":{"spire":"spire"},"numberOfInstances":3,"postgresql":{"parameters":{"max_connections":"300"},"version":"14"},"resources":{"limits":{"cpu":"4","memory":"4Gi"}},"teamId":"cray","tolerations":[],"users":{"service_account":[],"spire":["superuser","createdb"]},"volume":{"size":"60Gi"}},"status":{"PostgresClusterStatus":"Running"}}]]
    local v = assert(json.decode(cr))
    assert.equals(3, v.spec.numberOfInstances)
    assert.equals("integer", math.type(v.spec.numberOfInstances))
    assert.equals(0, #v.spec.tolerations)
    assert.equals(cr, json.encode(v))
    v.spec.numberOfInstances = 1
    v.spec.tolerations[1] = { key = "node", operator = "Exists" }
    local again = json.decode(json.encode(v))
    assert.equals(1, again.spec.numberOfInstances)
    assert.equals("Exists", again.spec.tolerations[1].operator)
    assert.equals("[]", json.encode(again.spec.users.service_account))
  end)

  it("decodes a large list quickly and exactly", function()
    local parts = {}
    for i = 1, 20000 do parts[i] = string.format('{"name":"pod-%d","n":%d}', i, i * 1000003) end
    local v = assert(json.decode("[" .. table.concat(parts, ",") .. "]"))
    assert.equals(20000, #v)
    assert.equals(20000 * 1000003, v[20000].n)
  end)

  it("round-trips generated values (property)", function()
    for seed = 1, 300 do
      local r = values.rng(seed)
      local v = values.value(r)
      local text = assert(json.encode(v))
      local back, err = json.decode(text)
      assert.is_nil(err) -- back may be false
      if not values.equal(v, back) then
        error(string.format("seed %d: %s did not round-trip", seed, text))
      end
      assert.equals(text, json.encode(back))
    end
  end)
end)
