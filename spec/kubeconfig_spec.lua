-- Specs of pgr.kubeconfig: kubectl's rules for finding and merging kubeconfig files, contexts,
-- credentials, relative paths, in-cluster configuration, and the errors that name what is wrong.
local kubeconfig = require "pgr.kubeconfig"
local base64 = require "pgr.base64"

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/pgr-kubeconfig-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local dir

local function cfg(name, clusters, users, contexts, current)
  local lines = { "apiVersion: v1", "kind: Config", "clusters:" }
  for _, c in ipairs(clusters) do
    lines[#lines + 1] = "- name: " .. c[1]
    lines[#lines + 1] = "  cluster:"
    for k, v in pairs(c[2]) do lines[#lines + 1] = ("    %s: %s"):format(k, v) end
  end
  lines[#lines + 1] = "users:"
  for _, u in ipairs(users) do
    lines[#lines + 1] = "- name: " .. u[1]
    lines[#lines + 1] = "  user:"
    for k, v in pairs(u[2]) do lines[#lines + 1] = ("    %s: %s"):format(k, v) end
  end
  lines[#lines + 1] = "contexts:"
  for _, c in ipairs(contexts) do
    lines[#lines + 1] = "- name: " .. c[1]
    lines[#lines + 1] = "  context:"
    for k, v in pairs(c[2]) do lines[#lines + 1] = ("    %s: %s"):format(k, v) end
  end
  if current then lines[#lines + 1] = "current-context: " .. current end
  return write(dir .. "/" .. name, table.concat(lines, "\n") .. "\n")
end

describe("pgr.kubeconfig", function()
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("reads ~/.kube/config when KUBECONFIG is unset, with the context's namespace", function()
    os.execute("mkdir -p " .. dir .. "/home/.kube")
    cfg("home/.kube/config", { { "c1", { server = "https://10.0.0.1:6443/" } } }, { { "u1", { token = "tok1" } } },
      { { "ctx", { cluster = "c1", user = "u1", namespace = "spire" } } }, "ctx")
    local s = assert(kubeconfig.load { env = { HOME = dir .. "/home" } })
    assert.equals("https://10.0.0.1:6443", s.server)
    assert.equals("tok1", s.token)
    assert.equals("spire", s.namespace)
    assert.equals("ctx", s.context)
    assert.is_false(s.insecure)
  end)

  it("merges KUBECONFIG files: the first file to define a name or current-context wins", function()
    local a = cfg("a.yaml", { { "shared", { server = "https://first:1" } } }, { { "ua", { token = "A" } } },
      { { "one", { cluster = "shared", user = "ua" } } }, nil)
    local b = cfg("b.yaml", { { "shared", { server = "https://second:2" } }, { "onlyb", { server = "https://b:3" } } },
      { { "ua", { token = "B" } }, { "ub", { token = "BB" } } },
      { { "one", { cluster = "onlyb", user = "ub" } }, { "two", { cluster = "onlyb", user = "ub" } } }, "two")
    local c = cfg("c.yaml", {}, {}, { { "three", { cluster = "shared", user = "ua" } } }, "three")
    local env = { KUBECONFIG = a .. ":" .. dir .. "/missing.yaml::" .. b .. ":" .. c }
    local s = assert(kubeconfig.load { env = env })
    -- current-context from b (a sets none, b is before c)
    assert.equals("two", s.context)
    assert.equals("https://b:3", s.server)
    assert.equals("BB", s.token)
    -- context "one" is a's whole entry, and cluster "shared" a's, user "ua" a's
    s = assert(kubeconfig.load { env = env, context = "one" })
    assert.equals("https://first:1", s.server)
    assert.equals("A", s.token)
    s = assert(kubeconfig.load { env = env, context = "three" })
    assert.equals("https://first:1", s.server)
    assert.equals("default", s.namespace)
  end)

  it("names the contexts when the one asked for is missing", function()
    local a = cfg("ctx.yaml", { { "c", { server = "https://x:1" } } }, {},
      { { "b", { cluster = "c" } }, { "a", { cluster = "c" } } }, "a")
    local s, err = kubeconfig.load { env = { KUBECONFIG = a }, context = "x" }
    assert.is_nil(s)
    assert.equals("kubeconfig", err.code)
    assert.equals("kubeconfig: context 'x' not found; contexts are: 'a', 'b'", err.message)
  end)

  it("reports a context without a current-context, a missing cluster, a missing user", function()
    local a = cfg("nocur.yaml", { { "c", { server = "https://x:1" } } }, {},
      { { "a", { cluster = "c", user = "ghost" } }, { "b", { cluster = "nowhere" } } }, nil)
    local _, err = kubeconfig.load { env = { KUBECONFIG = a } }
    assert.matches("current-context is not set", err.message, 1, true)
    _, err = kubeconfig.load { env = { KUBECONFIG = a }, context = "b" }
    assert.matches("cluster 'nowhere' of context 'b' not found; clusters are: 'c'", err.message, 1, true)
    _, err = kubeconfig.load { env = { KUBECONFIG = a }, context = "a" }
    assert.matches("user 'ghost' of context 'a' not found", err.message, 1, true)
  end)

  it("resolves relative certificate paths against the file that names them", function()
    os.execute("mkdir -p " .. dir .. "/rel/pki")
    write(dir .. "/rel/pki/ca.crt", "CA")
    write(dir .. "/rel/pki/c.crt", "CERT")
    write(dir .. "/rel/pki/c.key", "KEY")
    write(dir .. "/rel/pki/token", "  from-file\n")
    local a = cfg("rel/config", { { "c", { server = "https://x:1", ["certificate-authority"] = "pki/ca.crt" } } },
      { { "u", { ["client-certificate"] = "pki/c.crt", ["client-key"] = "pki/c.key", tokenFile = "pki/token" } } },
      { { "ctx", { cluster = "c", user = "u" } } }, "ctx")
    local s = assert(kubeconfig.load { kubeconfig = a })
    assert.equals(dir .. "/rel/pki/ca.crt", s.ca_file)
    assert.equals(dir .. "/rel/pki/c.crt", s.cert_file)
    assert.equals(dir .. "/rel/pki/c.key", s.key_file)
    assert.equals("  from-file", s.token)
  end)

  it("decodes the -data fields and prefers a literal token over tokenFile", function()
    local a = cfg("data.yaml", { { "c", { server = "https://x:1", ["certificate-authority-data"] = base64.encode("PEM-CA") } } },
      { { "u", { ["client-certificate-data"] = base64.encode("PEM-C"), ["client-key-data"] = base64.encode("PEM-K"),
                 token = "literal", tokenFile = "/nonexistent" } } },
      { { "ctx", { cluster = "c", user = "u", namespace = "ns1" } } }, "ctx")
    local s = assert(kubeconfig.load { kubeconfig = a, namespace = "override" })
    assert.equals("PEM-CA", s.ca_data)
    assert.equals("PEM-C", s.cert_data)
    assert.equals("PEM-K", s.key_data)
    assert.equals("literal", s.token)
    assert.equals("override", s.namespace)
  end)

  it("refuses what it cannot do, saying which field is wrong", function()
    local a = cfg("bad.yaml", { { "c", { server = "https://x:1", ["certificate-authority"] = "/nonexistent/ca.crt" } },
                                { "ins", { server = "https://x:1", ["insecure-skip-tls-verify"] = "true",
                                           ["certificate-authority-data"] = base64.encode("x") } },
                                { "ok", { server = "https://x:1" } }, { "noserver", { ["insecure-skip-tls-verify"] = "true" } },
                                { "proxy", { server = "https://x:1", ["proxy-url"] = "http://proxy:3128" } } },
      { { "exec", { exec = "{command: aws}" } }, { "both", { token = "t", username = "u", password = "p" } },
        { "half", { ["client-certificate-data"] = base64.encode("x") } }, { "badb64", { ["client-key-data"] = "'%%%'" } } },
      { { "ca", { cluster = "c" } }, { "ins", { cluster = "ins" } }, { "exec", { cluster = "ok", user = "exec" } },
        { "both", { cluster = "ok", user = "both" } }, { "half", { cluster = "ok", user = "half" } },
        { "noserver", { cluster = "noserver" } }, { "badb64", { cluster = "ok", user = "badb64" } },
        { "proxy", { cluster = "proxy" } } }, "ca")
    local function msg(ctx)
      local s, err = kubeconfig.load { kubeconfig = a, context = ctx }
      assert.is_nil(s)
      return err.message
    end
    assert.matches("certificate-authority /nonexistent/ca.crt cannot be read", msg("ca"), 1, true)
    assert.matches("both insecure-skip-tls-verify and a certificate authority", msg("ins"), 1, true)
    assert.matches("user 'exec' .* exec credential plugin, which pgr does not run", msg("exec"))
    assert.matches("more than one authentication method", msg("both"), 1, true)
    assert.matches("client-certificate but no client-key", msg("half"), 1, true)
    assert.matches("cluster 'noserver' .* has no server", msg("noserver"))
    assert.matches("client-key-data is not valid base64", msg("badb64"), 1, true)
    assert.matches("sets proxy-url, which pgr does not support", msg("proxy"), 1, true)
  end)

  it("names the file when it does not parse or an explicit one is missing", function()
    local a = write(dir .. "/broken.yaml", "clusters: [\n  - {name: x\n")
    local _, err = kubeconfig.load { kubeconfig = a }
    assert.matches("kubeconfig: " .. a, err.message, 1, true)
    _, err = kubeconfig.load { kubeconfig = dir .. "/nope.yaml" }
    assert.matches("cannot read " .. dir .. "/nope.yaml", err.message, 1, true)
  end)

  it("falls back to the in-cluster service account when no file exists", function()
    os.execute("mkdir -p " .. dir .. "/sa")
    write(dir .. "/sa/token", "sa-token\n")
    write(dir .. "/sa/ca.crt", "CA")
    write(dir .. "/sa/namespace", "services\n")
    local env = { HOME = dir .. "/nohome", KUBERNETES_SERVICE_HOST = "10.96.0.1", KUBERNETES_SERVICE_PORT = "443" }
    local s = assert(kubeconfig.load { env = env, serviceaccount = dir .. "/sa" })
    assert.equals("https://10.96.0.1:443", s.server)
    assert.equals("sa-token", s.token)
    assert.equals(dir .. "/sa/ca.crt", s.ca_file)
    assert.equals("services", s.namespace)
    env.KUBERNETES_SERVICE_HOST = "fd00::1"
    s = assert(kubeconfig.load { env = env, serviceaccount = dir .. "/sa" })
    assert.equals("https://[fd00::1]:443", s.server)
    local _, err = kubeconfig.load { env = { HOME = dir .. "/nohome" } }
    assert.matches("no configuration: " .. dir .. "/nohome/.kube/config not found", err.message, 1, true)
  end)
end)
