-- Specs of pgr.pretty: the REPL's rendering of values; credentials are never printed in clear.
local pretty = require "pgr.pretty"

describe("pgr.pretty", function()
  it("sorts keys, numbers first, and marks cycles", function()
    local t = { b = 1, a = { 1, 2 }, 10 }
    t.self = t
    assert.equals('{ 10, a = { 1, 2 }, b = 1, self = <cycle: <top>> }', pretty.format(t))
  end)

  it("shows credential fields as <redacted>, at any depth, unless asked to reveal them", function()
    local cfg = { access_key = "AKIDEXAMPLE", secret_key = "wJalrXUtnFEMI", session_token = "tok123",
                  user = { token = "bearer-xyz", password = "hunter2", key_data = "LS0tLS1C" } }
    local text = pretty.format(cfg)
    for _, secret in ipairs { "wJalrXUtnFEMI", "tok123", "bearer-xyz", "hunter2", "LS0tLS1C" } do
      assert.is_nil(text:find(secret, 1, true), secret)
    end
    assert.matches('secret_key = <redacted>', text, 1, true)
    assert.matches('access_key = "AKIDEXAMPLE"', text, 1, true)
    assert.matches('hunter2', pretty.format(cfg, { reveal = true }), 1, true)
    -- a field of that name that is not a string is shown as it is
    assert.matches("token = false", pretty.format({ token = false }), 1, true)
  end)
end)
