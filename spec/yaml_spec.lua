-- Specs of pgr.yaml: Kubernetes documents (a kubeconfig with several contexts, a multi-document
-- Secret manifest as CSM's postgres backup writes it, a postgresql CR), typing as Kubernetes reads
-- YAML, errors with line and column, the alias-bomb bound, and round trips through YAML and JSON.
local yaml = require "pgr.yaml"
local json = require "pgr.json"
local base64 = require "pgr.base64"
local errors = require "pgr.errors"
local values = require "support.values"

local KUBECONFIG = [[
apiVersion: v1
kind: Config
preferences: {}
current-context: kubernetes-admin@kubernetes
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://10.252.120.2:6442
  name: kubernetes
- cluster:
    insecure-skip-tls-verify: true
    server: "https://127.0.0.1:16443"
  name: sim
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
- context:
    cluster: sim
    namespace: spire
    user: sim-admin
  name: sim
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: sim-admin
  user:
    token: "0123456789"
]]

local MANIFEST = [[
apiVersion: v1
data:
  password: QUJDWFla
  username: cG9zdGdyZXM=
kind: Secret
metadata:
  labels:
    application: spilo
    cluster-name: spire-postgres
    team: spire
  name: postgres.spire-postgres.credentials
  namespace: spire
type: Opaque
---
apiVersion: v1
data:
  password: QUJDMTIz
  username: c2VydmljZV9hY2NvdW50
kind: Secret
metadata:
  labels:
    application: spilo
    cluster-name: spire-postgres
    team: spire
  name: service-account.spire-postgres.credentials
  namespace: spire
type: Opaque
---
apiVersion: v1
data:
  password: WFlaMTIz
  username: c3BpcmU=
kind: Secret
metadata:
  labels:
    application: spilo
    cluster-name: spire-postgres
    team: spire
  name: spire.spire-postgres.credentials
  namespace: spire
type: Opaque
---
apiVersion: v1
data:
  password: MTIzNDU2
  username: c3RhbmRieQ==
kind: Secret
metadata:
  labels:
    application: spilo
    cluster-name: spire-postgres
    team: spire
  name: standby.spire-postgres.credentials
  namespace: spire
type: Opaque
]]

local POSTGRESQL = [[
apiVersion: "acid.zalan.do/v1"
kind: postgresql
metadata:
  name: spire-postgres
  namespace: spire
  labels: {}
spec:
  teamId: spire
  volume:
    size: 60Gi
  numberOfInstances: 3
  enableLogicalBackup: false
  users:
    service_account: []
    spire:
    - superuser
    - createdb
  databases:
    spire: spire
  postgresql:
    version: "14"
    parameters:
      max_connections: "300"
      shared_buffers: 512MB
  tolerations: []
  podAnnotations:
    sidecar.istio.io/inject: "false"
  resources:
    limits: {cpu: "4", memory: 4Gi}
    requests: {cpu: 500m, memory: 1Gi}
]]

local function one(text)
  local docs, err = yaml.decode(text)
  assert.is_nil(err)
  assert.equals(1, #docs)
  return docs[1]
end

describe("pgr.yaml", function()
  it("reads a kubeconfig with several contexts", function()
    local kc = one(KUBECONFIG)
    assert.equals("Config", kc.kind)
    assert.equals("kubernetes-admin@kubernetes", kc["current-context"])
    assert.equals(2, #kc.contexts)
    assert.equals("sim", kc.contexts[2].name)
    assert.equals("spire", kc.contexts[2].context.namespace)
    assert.is_true(kc.clusters[2].cluster["insecure-skip-tls-verify"])
    assert.equals("https://127.0.0.1:16443", kc.clusters[2].cluster.server)
    assert.equals("0123456789", kc.users[2].user.token) -- quoted digits stay a string
    assert.equals("key", base64.decode(kc.users[1].user["client-key-data"]))
    assert.equals(json.object_mt, getmetatable(kc.preferences))
    assert.equals(json.array_mt, getmetatable(kc.contexts))
  end)

  it("reads CSM's multi-document Secret manifest", function()
    local docs = assert(yaml.decode(MANIFEST))
    assert.equals(4, #docs)
    local users = {}
    for _, s in ipairs(docs) do
      assert.equals("v1", s.apiVersion)
      assert.equals("Secret", s.kind)
      assert.equals("Opaque", s.type)
      assert.equals("spire", s.metadata.namespace)
      assert.equals("spilo", s.metadata.labels.application)
      users[#users + 1] = base64.decode(s.data.username) .. "=" .. base64.decode(s.data.password)
    end
    assert.same({ "postgres=ABCXYZ", "service_account=ABC123", "spire=XYZ123", "standby=123456" }, users)
  end)

  it("writes a Secret manifest back that reads the same (encode_all)", function()
    local docs = assert(yaml.decode(MANIFEST))
    local text = assert(yaml.encode_all(docs))
    assert.equals(MANIFEST, (text:gsub("^%-%-%-\n", ""):gsub("\n%-%-%-\n", "\n---\n")))
    assert.is_true(values.equal(docs, assert(yaml.decode(text))))
  end)

  it("reads a postgresql CR with its types as Kubernetes sees them", function()
    local cr = one(POSTGRESQL)
    assert.equals("acid.zalan.do/v1", cr.apiVersion)
    assert.equals(3, cr.spec.numberOfInstances)
    assert.equals("integer", math.type(cr.spec.numberOfInstances))
    assert.is_false(cr.spec.enableLogicalBackup)
    assert.equals("14", cr.spec.postgresql.version)
    assert.equals("300", cr.spec.postgresql.parameters.max_connections)
    assert.equals("false", cr.spec.podAnnotations["sidecar.istio.io/inject"])
    assert.equals("4", cr.spec.resources.limits.cpu)
    -- yaml -> json keeps [] and {}
    local j = json.encode(cr)
    assert.matches('"tolerations":%[%]', j)
    assert.matches('"service_account":%[%]', j)
    assert.matches('"labels":{}', j)
    assert.is_true(values.equal(cr, json.decode(j)))
  end)

  it("resolves plain scalars as go-yaml v2 (sigs.k8s.io/yaml) does", function()
    local v = one([[
bools: [yes, No, ON, off, y, n, True, FALSE]
strings: ["yes", 'no', yES, nil, 1.2.3, 2024-01-01, "123"]
nulls: [~, null, NULL, ]
ints: [42, -7, +12, 0x1F, 0o17, 0644, 0b101, 1_000]
floats: [1.5, .5, 1e3, 08, -.inf]
empty:
]])
    assert.same({ true, false, true, false, true, false, true, false }, v.bools)
    assert.same({ "yes", "no", "yES", "nil", "1.2.3", "2024-01-01", "123" }, v.strings)
    assert.equals(3, #v.nulls)
    for i = 1, 3 do assert.equals(json.null, v.nulls[i]) end
    assert.same({ 42, -7, 12, 31, 15, 420, 5, 1000 }, v.ints)
    for _, n in ipairs(v.ints) do assert.equals("integer", math.type(n)) end
    assert.same({ 1.5, 0.5, 1000.0, 8.0, -math.huge }, v.floats)
    for _, n in ipairs(v.floats) do assert.equals("float", math.type(n)) end
    assert.equals(json.null, v.empty) -- the key is kept
  end)

  it("turns non-string keys into their text, as Kubernetes does", function()
    local v = one("1: a\ntrue: b\n0x10: c\n")
    assert.same({ ["1"] = "a", ["true"] = "b", ["16"] = "c" }, v)
  end)

  it("resolves anchors, aliases and merge keys into independent copies", function()
    local v = one([[
defaults: &d
  image: postgres
  ports: [5432]
a:
  <<: *d
  image: spilo
b: *d
]])
    assert.equals("spilo", v.a.image)
    assert.same({ 5432 }, v.a.ports)
    assert.same(v.defaults, v.b)
    v.b.ports[1] = 1
    assert.equals(5432, v.defaults.ports[1])
  end)

  it("returns the documents of a stream, dropping empty ones", function()
    local docs = assert(yaml.decode("---\na: 1\n---\n---\n- x\n--- plain\n"))
    assert.equals(3, #docs)
    assert.equals(1, docs[1].a)
    assert.equals("x", docs[2][1])
    assert.equals("plain", docs[3])
    assert.equals(0, #assert(yaml.decode("")))
    assert.equals(0, #assert(yaml.decode("# only a comment\n")))
  end)

  it("returns nil and an error naming line and column on bad input", function()
    local cases = {
      { "a: 1\nb: [1, 2\nc: 3\n", 3 },
      { "a: 1\n  b: 2\n", 2 },
      { "metadata:\n  name: x\n  labels: *missing\n", 3 },
      { "a: \"\255\"\n", 1 },
      { "a: !!int abc\n", 1 },
    }
    for _, c in ipairs(cases) do
      local v, err = yaml.decode(c[1])
      assert.is_nil(v)
      assert.is_true(errors.is(err))
      assert.equals("yaml", err.code)
      assert.equals(c[2], err.line, c[1])
      assert.is_true(err.column >= 1)
      assert.matches("line " .. c[2] .. ", column " .. err.column, err.message)
    end
  end)

  it("bounds alias expansion (billion laughs)", function()
    local lines = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
    local prev = "a"
    for _, name in ipairs({ "b", "c", "d", "e", "f", "g", "h", "i" }) do
      lines[#lines + 1] = string.format("%s: &%s [%s]", name, name, string.rep("*" .. prev, 10, ", "))
      prev = name
    end
    local v, err = yaml.decode(table.concat(lines, "\n"))
    assert.is_nil(v)
    assert.matches("alias", err.message)
    -- the bound is an option
    local small = "a: &a [1, 2, 3]\nb: *a\nc: *a\n"
    assert.is_table(yaml.decode(small))
    assert.is_nil(yaml.decode(small, { max_alias_nodes = 5 }))
    assert.is_nil(yaml.decode("[[[[1]]]]", { max_depth = 3 }))
    -- few nodes but many bytes: a 100 KB string aliased 400 times in a 102 KB manifest
    local long = "data: &a \"" .. ("x"):rep(100000) .. "\"\ncopies: [" .. ("*a"):rep(400, ", ") .. "]\n"
    v, err = yaml.decode(long)
    assert.is_nil(v)
    assert.matches("aliases expand to more than 16777216 bytes", err.message, 1, true)
    assert.equals(400, #yaml.decode(long, { max_alias_bytes = 64 << 20 })[1].copies)
  end)

  it("encodes block style with sorted keys and quotes what would change type (even the key n)", function()
    local text = yaml.encode({
      kind = "Secret", data = { ["on"] = "yes", mode = "0644", n = 7, f = 2.0, e = {}, l = json.array() },
      type = "Opaque", note = "two\nlines\n", empty = "", nothing = json.null,
    })
    assert.equals([[
data:
  e: {}
  f: 2.0
  l: []
  mode: "0644"
  "n": 7
  "on": "yes"
empty: ""
kind: Secret
note: |
  two
  lines
nothing: null
type: Opaque
]], text)
  end)

  it("refuses to encode what YAML cannot carry, naming where", function()
    local cases = {
      { { data = { pw = "\255\254" } }, "UTF%-8.*%$%.data%.pw" },
      { { f = print }, "function at %$%.f" },
      { { 1, 2, x = 3 }, "mixing" },
    }
    for _, c in ipairs(cases) do
      local v, err = yaml.encode(c[1])
      assert.is_nil(v)
      assert.equals("yaml", err.code)
      assert.matches(c[2], err.message)
    end
    local t = {}
    t.t = t
    assert.matches("cycle", select(2, yaml.encode(t)).message)
    assert.has_error(function() yaml.encode_all("x") end)
    assert.has_error(function() yaml.encode_all({ a = 1 }) end)
  end)

  it("keeps yaml -> json -> yaml stable", function()
    local cr = one(POSTGRESQL)
    local again = assert(json.decode(assert(json.encode(cr))))
    assert.equals(yaml.encode(cr), yaml.encode(again))
  end)

  it("round-trips generated values (property)", function()
    for seed = 1, 300 do
      local v = values.value(values.rng(seed))
      local text = assert(yaml.encode(v))
      local docs, err = yaml.decode(text)
      assert.is_nil(err)
      if not values.equal(v, docs[1]) then
        error(string.format("seed %d did not round-trip:\n%s", seed, text))
      end
      local all = assert(yaml.encode_all({ v, v }))
      local two = assert(yaml.decode(all))
      assert.is_true(values.equal(v, two[2]), "seed " .. seed)
    end
  end)
end)
