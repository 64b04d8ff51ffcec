-- Specs of pgr.k8s against a real simulator (tests/kubesim, TLS + token): objects, discovery names,
-- TLS and auth failures, injected faults, watches, waits, rollouts, replace --force, apply, secrets,
-- access reviews, and cross-checks that pgr leaves the same state as kubectl.
local k8s = require "pgr.k8s"
local json = require "pgr.json"
local sys = require "pgr.sys"
local kubesim = require "support.kubesim"

local sim, k
local NS = "default"

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function configmap(name, data)
  return { apiVersion = "v1", kind = "ConfigMap", metadata = { name = name, namespace = NS }, data = data }
end

local function deployment(name, replicas, extra)
  local d = {
    apiVersion = "apps/v1", kind = "Deployment", metadata = { name = name, namespace = NS },
    spec = { replicas = replicas, selector = { matchLabels = { app = name } },
             template = { metadata = { labels = { app = name } },
                          spec = { containers = { { name = "c", image = "busybox" } } } } },
  }
  for key, v in pairs(extra or {}) do d.spec[key] = v end
  return d
end

local function statefulset(name, replicas, strategy)
  return {
    apiVersion = "apps/v1", kind = "StatefulSet", metadata = { name = name, namespace = NS },
    spec = { replicas = replicas, serviceName = name, selector = { matchLabels = { app = name } },
             updateStrategy = { type = strategy or "RollingUpdate" },
             template = { metadata = { labels = { app = name } },
                          spec = { containers = { { name = "c", image = "busybox" } } } } },
  }
end

-- An object's state without what differs between two otherwise equal objects: identity, times,
-- server bookkeeping, and the object's own name (replaced by NAME).
local function normalized(obj, name)
  local o = k8s.deepcopy(obj)
  o.status = nil
  local md = o.metadata
  for _, key in ipairs { "uid", "resourceVersion", "creationTimestamp", "managedFields", "selfLink" } do md[key] = nil end
  local text = json.encode(o)
  text = text:gsub(name:gsub("%p", "%%%0"), "NAME")
  -- uids (generated selectors) and timestamps (restartedAt) differ from run to run
  text = text:gsub("%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x", "UID")
  text = text:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[^\"]*", "TIME")
  return text
end

local manifest = [[
apiVersion: v1
kind: Secret
metadata:
  name: NAME
  namespace: default
  labels: {application: spilo, cluster-name: spire-postgres}
type: Opaque
data:
  username: cG9zdGdyZXM=
  password: czNjcjN0
---
apiVersion: v1
kind: ConfigMap
metadata: {name: NAME-cm, namespace: default}
data: {k: v}
]]

local function kubeconfig_variant(name, fn)
  return write(sim.root .. "/" .. name, fn(read(sim.kubeconfig)))
end

describe("pgr.k8s", function()
  setup(function()
    sim = kubesim.up { fixture = "none" }
    k = assert(k8s.connect { kubeconfig = sim.kubeconfig })
    k8s.defaults.backoff = 0.05
  end)

  teardown(function()
    if k then k:close() end
    if sim then sim:down() end
  end)

  describe("connection", function()
    it("reads the kubeconfig as kubectl does: server, CA data, token, context namespace", function()
      assert.equals(sim.info.server, k.server)
      assert.equals("kubernetes-admin@kubesim", k.context)
      assert.equals("default", k.namespace)
    end)

    it("refuses a server whose certificate another CA signed", function()
      local d = sim.root .. "/otherca"
      assert(os.execute("mkdir -p " .. d .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        .. " -keyout " .. d .. "/ca.key -out " .. d .. "/ca.crt -days 1 -subj /CN=other >/dev/null 2>&1"))
      local path = kubeconfig_variant("wrongca", function(t)
        return (t:gsub("certificate%-authority%-data: %S+", "certificate-authority: " .. d .. "/ca.crt"))
      end)
      local c = assert(k8s.connect { kubeconfig = path })
      local obj, err = c:get("namespaces", "default")
      assert.is_nil(obj)
      assert.equals("tls", err.code)
      assert.matches(sim.info.server, err.message, 1, true)
      assert.matches("checked against certificate-authority " .. d .. "/ca.crt of cluster 'kubesim' (" .. path .. ")",
        err.message, 1, true)
      c:close()
      -- the same server is reachable once verification is switched off, as kubectl allows
      path = kubeconfig_variant("insecure", function(t)
        return (t:gsub("certificate%-authority%-data: %S+", "insecure-skip-tls-verify: true"))
      end)
      local security = require "pgr.security"
      security.reset()
      c = assert(k8s.connect { kubeconfig = path })
      assert.equals("default", assert(c:get("namespaces", "default")).metadata.name)
      c:close()
      -- but never silently
      assert.same({ ("TLS verification of the Kubernetes API server %s is OFF (insecure-skip-tls-verify of "
        .. "cluster 'kubesim' in the kubeconfig): anyone on the path can pose as it; give its CA instead")
        :format(sim.info.server) }, security.notices())
      security.reset()
      assert(k8s.connect { kubeconfig = sim.kubeconfig }):close()
      assert.same({}, security.notices())
    end)

    it("reports a wrong token as the server's 401 Unauthorized", function()
      local path = kubeconfig_variant("wrongtoken", function(t) return (t:gsub("token: %S+", "token: not-the-token")) end)
      local c = assert(k8s.connect { kubeconfig = path })
      local obj, err = c:get("namespaces", "default")
      assert.is_nil(obj)
      assert.equals(401, err.code)
      assert.equals("Unauthorized", err.reason)
      assert.matches("refused the credentials of user 'kubernetes-admin' (" .. path .. ")", err.message, 1, true)
      -- also once discovery is known (a client whose token was revoked later)
      c.resources = assert(k:discover())
      obj, err = c:get("secrets", "s1")
      assert.equals(401, err.code)
      assert.equals("get secret default/s1: Unauthorized (the server refused the credentials of user 'kubernetes-admin' ("
        .. path .. "))", err.message)
      c:close()
    end)

    it("reports what a token may not do as 403 Forbidden, without retrying", function()
      sim:admin { op = "deny", verb = "get", resource = "secrets", namespace = "default" }
      local obj, err = k:get("secret", "anything")
      sim:admin { op = "allow_all" }
      assert.is_nil(obj)
      assert.equals(403, err.code)
      assert.equals("Forbidden", err.reason)
      assert.matches("get secret default/anything: ", err.message, 1, true)
    end)

    it("uses the in-cluster service account when there is no kubeconfig", function()
      local sa = sim.root .. "/serviceaccount"
      os.execute("mkdir -p " .. sa)
      write(sa .. "/token", sim.info.token_kubeconfig .. "\n")
      write(sa .. "/ca.crt", read(sim.info.ca))
      write(sa .. "/namespace", "kube-system\n")
      local port = sim.info.server:match(":(%d+)$")
      local c = assert(k8s.connect { serviceaccount = sa,
        env = { HOME = sim.root .. "/nohome", KUBERNETES_SERVICE_HOST = "127.0.0.1", KUBERNETES_SERVICE_PORT = port } })
      assert.equals("kube-system", c.namespace)
      assert.equals("default", assert(c:get("namespaces", "default")).metadata.name)
      c:close()
    end)

    it("names the contexts when the asked one is missing", function()
      local c, err = k8s.connect { kubeconfig = sim.kubeconfig, context = "prod" }
      assert.is_nil(c)
      assert.equals("kubeconfig: context 'prod' not found; contexts are: 'kubernetes-admin@kubesim'", err.message)
    end)

    it("works through the module functions on a configured default client", function()
      k8s.configure { kubeconfig = sim.kubeconfig }
      assert.equals("default", assert(k8s.get("ns", "default")).metadata.name)
      k8s.configure { kubeconfig = sim.root .. "/nonexistent" }
      local obj, err = k8s.get("ns", "default")
      assert.is_nil(obj)
      assert.equals("kubeconfig", err.code)
    end)
  end)

  describe("discovery", function()
    it("resolves kinds, plurals, short names and group-qualified names as kubectl does", function()
      local cases = {
        { "postgresql", "acid.zalan.do", "postgresqls" }, { "sts", "apps", "statefulsets" },
        { "deploy", "apps", "deployments" }, { "ds", "apps", "daemonsets" }, { "job", "batch", "jobs" },
        { "po", "", "pods" }, { "Secret", "", "secrets" }, { "statefulsets.apps", "apps", "statefulsets" },
        { "pvc", "", "persistentvolumeclaims" }, { "cm", "", "configmaps" },
      }
      for _, case in ipairs(cases) do
        local r = assert(k:resource(case[1]))
        assert.equals(case[2], r.group, case[1])
        assert.equals(case[3], r.name, case[1])
      end
      assert.is_true(k:resource("sts").subresources.scale)
      assert.is_nil(k:resource("ds").subresources.scale)
      local r, err = k:resource("frobnicators")
      assert.is_nil(r)
      assert.equals("unknown_resource", err.code)
      assert.matches('doesn\'t have a resource type "frobnicators"', err.message, 1, true)
    end)
  end)

  describe("objects", function()
    it("creates, gets, lists by label and field, replaces, patches three ways and deletes", function()
      local cm = assert(k:create(configmap("o1", { a = "1" })))
      assert.equals("ConfigMap", cm.kind)
      local other = configmap("o2", { a = "2" })
      other.metadata.labels = { tier = "x" }
      assert(k:create(other))
      local items = assert(k:list("cm", { labels = "tier=x" }))
      assert.equals(1, #items)
      assert.equals("o2", items[1].metadata.name)
      assert.equals("ConfigMap", items[1].kind)
      items = assert(k:list("configmaps", { labels = { tier = "x" } }))
      assert.equals(1, #items)
      items = assert(k:list("configmaps", { fields = "metadata.name=o1" }))
      assert.equals(1, #items)
      assert.equals("o1", items[1].metadata.name)

      cm.data.a = "replaced"
      cm = assert(k:replace(cm))
      assert.equals("replaced", cm.data.a)
      -- a stale resourceVersion is a Conflict
      local stale = k8s.deepcopy(cm)
      stale.metadata.resourceVersion = "1"
      local out, err = k:replace(stale)
      assert.is_nil(out)
      assert.equals(409, err.code)
      assert.is_true(k8s.is_conflict(err))

      assert.equals("m", assert(k:patch("cm", "o1", { data = { b = "m" } }, { type = "merge" })).data.b)
      assert.equals("s", assert(k:patch("cm", "o1", { data = { c = "s" } })).data.c)
      local jp = json.decode('[{"op":"replace","path":"/data/a","value":"j"},{"op":"remove","path":"/data/b"}]')
      local final = assert(k:patch("cm", "o1", jp, { type = "json" }))
      assert.equals("j", final.data.a)
      assert.is_nil(final.data.b)
      assert.equals("s", final.data.c)

      assert.is_true(k:delete("cm", "o1", { wait = true }))
      out, err = k:get("cm", "o1")
      assert.is_nil(out)
      assert.is_true(k8s.is_not_found(err))
      assert.equals("NotFound", err.reason)
      assert.equals("configmap default/o1 not found (kubectl get configmap -n default)", err.message)
      out, err = k:delete("cm", "o1")
      assert.equals(404, err.code)
      assert.is_true(k:delete("cm", "o1", { ignore_not_found = true }))
      assert(k:delete("cm", "o2"))
    end)

    it("refuses a name the API would not take ('.', '..', '/') before any request: nothing else is touched", function()
      assert(k:create(configmap("keep1", { a = "1" })))
      assert(k:create(configmap("keep2", { a = "2" })))
      for _, bad in ipairs { "..", ".", "a/b", "%2e%2e", "" } do
        local out, err = k:delete("cm", bad)
        assert.is_nil(out)
        assert.equals("invalid", err.code, tostring(err))
        assert.matches("configmap name", err.message, 1, true)
        out, err = k:get("cm", bad)
        assert.equals("invalid", err.code)
        out, err = k:patch("cm", bad, { data = { a = "x" } })
        assert.equals("invalid", err.code)
        out, err = k:scale("sts", bad, 0)
        assert.equals("invalid", err.code)
        out, err = k:delete("cm", "keep1", { namespace = bad })
        assert.equals("invalid", err.code)
        assert.matches("namespace", err.message, 1, true)
      end
      local out, err = k:create(configmap("..", { a = "x" }))
      assert.is_nil(out)
      assert.equals("invalid", err.code)
      local names = {}
      for _, o in ipairs(assert(k:list("cm"))) do names[#names + 1] = o.metadata.name end
      table.sort(names)
      assert.same({ "keep1", "keep2" }, names)
      assert(k:delete("cm", "keep1"))
      assert(k:delete("cm", "keep2"))
    end)

    it("validates names as the API does: DNS-1123 subdomains and labels", function()
      for _, good in ipairs { "spire-postgres", "postgres.spire-postgres.credentials", "a", "0x" } do
        assert.is_true(k8s.valid_dns_subdomain(good), good)
      end
      for _, bad in ipairs { "", ".", "..", "a..b", "-a", "a-", "A", "a_b", "a/b", ".a", "a.", ("a"):rep(254) } do
        assert.is_nil(k8s.valid_dns_subdomain(bad), bad)
      end
      assert.is_true(k8s.valid_dns_label("services"))
      for _, bad in ipairs { "a.b", "..", "", ("a"):rep(64), "Spire" } do
        assert.is_nil(k8s.valid_dns_label(bad), bad)
      end
    end)

    it("deletes with a propagation policy: Orphan keeps a deployment's replica sets", function()
      assert(k:create(deployment("orph", 1)))
      assert(k:wait_for("rs", "app=orph", function(list) return #list == 1 end, { timeout = 20 }))
      assert.is_true(k:delete("deploy", "orph", { propagation = "Orphan", wait = true, timeout = 20 }))
      local rs = assert(k:list("rs", { labels = "app=orph" }))
      assert.equals(1, #rs)
      for _, r in ipairs(rs) do assert(k:delete("rs", r.metadata.name, { propagation = "Background" })) end
      assert(k:pods_gone("app=orph", { timeout = 30 }))
    end)
  end)

  describe("faults", function()
    setup(function() assert(k:create(configmap("f1", { v = "1" }))) end)
    after_each(function() sim:admin { op = "clear_faults" } end)

    it("retries a GET through a burst of 5xx", function()
      sim:fault { kind = "error", code = 503, count = 3, method = "GET", path = "configmaps/f1$" }
      assert.equals("1", assert(k:get("cm", "f1")).data.v)
      -- all three failures were consumed by retries
      assert.equals(0, sim:admin({ op = "faults" }).faults[1].count)
    end)

    it("gives up after its attempts with the server's status", function()
      local attempts = k8s.defaults.attempts
      k8s.defaults.attempts = 3
      sim:fault { kind = "error", code = 500, count = -1, method = "GET", path = "configmaps/f1$" }
      local obj, err = k:get("cm", "f1")
      k8s.defaults.attempts = attempts
      assert.is_nil(obj)
      assert.equals(500, err.code)
      assert.equals("InternalError", err.reason)
      assert.matches("kubesim injected fault", err.message, 1, true)
    end)

    it("does not repeat a POST the server failed with 500", function()
      sim:fault { kind = "error", code = 500, count = 1, method = "POST", path = "configmaps" }
      local obj, err = k:create(configmap("f2", { v = "x" }))
      assert.is_nil(obj)
      assert.equals(500, err.code)
      assert(k:create(configmap("f2", { v = "x" })))
      assert(k:delete("cm", "f2"))
    end)

    it("honours Retry-After on 429, for any method", function()
      sim:fault { kind = "error", code = 429, count = 1, retryAfter = 1, path = "configmaps/f1$" }
      local t0 = sys.now()
      assert.equals("1", assert(k:get("cm", "f1")).data.v)
      assert.is_true(sys.now() - t0 >= 0.95)
      sim:fault { kind = "error", code = 429, count = 1, retryAfter = 1, method = "PATCH", path = "configmaps/f1$" }
      t0 = sys.now()
      assert.equals("2", assert(k:patch("cm", "f1", { data = { v = "2" } })).data.v)
      assert.is_true(sys.now() - t0 >= 0.95)
    end)

    -- reads events until one shows data.v == want (or the wait runs out)
    local function until_value(w, want, seconds)
      local deadline = sys.now() + seconds
      local seen = {}
      while sys.now() < deadline do
        local ev, err = w:next(deadline - sys.now())
        assert(ev ~= nil, err)
        if ev and ev.type ~= "DELETED" then
          seen[#seen + 1] = ev.object.data.v
          if ev.object.data.v == want then return seen end
        end
      end
      return seen
    end

    it("a watch resumes after its stream is cut, losing no event", function()
      sim:fault { kind = "cut_watch", after = 1, count = 1, path = "configmaps.*watch" }
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert.is_false(w:next(0.3))  -- the stream is open and quiet
      assert(k:patch("cm", "f1", { data = { v = "c1" } }))
      assert(k:patch("cm", "f1", { data = { v = "c2" } }))
      local seen = until_value(w, "c2", 10)
      assert.same({ "c1", "c2" }, seen)
      assert.is_true(w.opens >= 2)
      w:close()
    end)

    it("a watch answered 410 Gone lists again and carries on", function()
      sim:fault { kind = "gone", count = 1, path = "configmaps.*watch" }
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert(k:patch("cm", "f1", { data = { v = "g1" } }))
      assert.same({ "g1" }, until_value(w, "g1", 10))
      assert.equals(1, w.relists)
      -- the same watch as a for-loop iterator, ending at its time limit
      assert(k:patch("cm", "f1", { data = { v = "g2" } }))
      local types = {}
      local t0 = sys.now()
      for ev in w:events(0.5) do types[#types + 1] = ev.type .. " " .. ev.object.data.v end
      assert.same({ "MODIFIED g2" }, types)
      assert.is_true(sys.now() - t0 >= 0.5)
      assert.is_nil(w.error)
      w:close()
    end)

    it("a watch sent an ERROR event of the server's trouble (500) opens again and carries on", function()
      sim:fault { kind = "gone", code = 500, count = 2, path = "configmaps.*watch=1" }
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert(k:patch("cm", "f1", { data = { v = "i1" } }))
      assert.same({ "i1" }, until_value(w, "i1", 10))
      assert.equals(0, w.relists)
      assert.equals(500, w.last_error.code)
      assert.equals(0, sim:admin({ op = "faults" }).faults[1].count)
      w:close()
    end)

    it("a watch refused with a plain HTTP 410 lists again", function()
      sim:fault { kind = "error", code = 410, count = 1, method = "GET", path = "configmaps.*watch=1" }
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert(k:patch("cm", "f1", { data = { v = "h1" } }))
      assert.same({ "h1" }, until_value(w, "h1", 10))
      assert.equals(1, w.relists)
      w:close()
    end)

    it("a watch the server ends (timeoutSeconds) is opened again from where it was", function()
      local seconds = k8s.defaults.watch_seconds
      k8s.defaults.watch_seconds = 1
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert.is_false(w:next(1.5))  -- long enough for the server to end the first stream
      k8s.defaults.watch_seconds = seconds
      assert(k:patch("cm", "f1", { data = { v = "t1" } }))
      assert.same({ "t1" }, until_value(w, "t1", 10))
      assert.is_true(w.opens >= 2)
      assert.equals(0, w.relists)
      w:close()
    end)

    it("a watch whose re-list after 410 failed lists again before it watches: no deletion is missed", function()
      for _, n in ipairs { "gap-a", "gap-b" } do
        local cm = configmap(n, { v = "1" })
        cm.metadata.labels = { t = "gap" }
        assert(k:create(cm))
      end
      local w = assert(k:watch("cm", { labels = "t=gap" }))
      assert.equals("ADDED", w:next(1).type)
      assert.equals("ADDED", w:next(1).type)
      -- the next watch gets 410, and every attempt of the re-list that follows fails
      sim:fault { kind = "gone", count = 1, path = "configmaps.*watch=1" }
      sim:fault { kind = "error", code = 503, count = k8s.defaults.attempts, method = "GET",
                  path = "configmaps\\?labelSelector" }
      w:drop_stream()
      assert(k:delete("cm", "gap-a"))
      assert(k:delete("cm", "gap-b"))
      local gone = {}
      for ev in w:events(5) do
        if ev.type == "DELETED" then gone[#gone + 1] = ev.object.metadata.name end
        if #gone == 2 then break end
      end
      table.sort(gone)
      assert.same({ "gap-a", "gap-b" }, gone)
      assert.same({}, w.objects)
      w:close()
    end)

    it("a DELETE the server applied but whose answer was lost is done, not 'not found'", function()
      assert(k:create(configmap("lost-reply", { v = "1" })))
      sim:fault { kind = "error", code = 503, count = 1, applied = true, method = "DELETE", path = "configmaps/lost-reply$" }
      assert.is_true(assert(k:delete("cm", "lost-reply")) ~= nil)
      assert.equals(0, sim:admin({ op = "faults" }).faults[1].count) -- the fault was met
      local obj, err = k:get("cm", "lost-reply")
      assert.is_nil(obj)
      assert.equals(404, err.code)
    end)

    it("a wait is bounded by its timeout when the server holds the watch without an answer", function()
      -- no speed assumption: the server holds the watch for 300 s; returning before that (with the
      -- wait's own timeout) shows the bound works however slow the machine
      sim:fault { kind = "stall", seconds = 300, count = -1, path = "configmaps.*watch=1" }
      local t0 = sys.now()
      local ok, err = k:wait_for("cm", "f1", function(o) return o and o.data.v == "never" end, { timeout = 2 })
      local took = sys.now() - t0
      sim:admin { op = "clear_faults" }
      assert.is_nil(ok)
      assert.matches("timed out after 2", tostring(err), 1, true)
      assert.is_true(took < 300, ("returned after %.1f s, once the server answered"):format(took))
    end)

    it("a watch resuming from a compacted resourceVersion lists again", function()
      local w = assert(k:watch("cm", { name = "f1" }))
      assert.equals("ADDED", w:next(1).type)
      assert.is_false(w:next(0.2))
      w:drop_stream()  -- as if the connection were lost
      assert(k:patch("cm", "f1", { data = { v = "e1" } }))
      assert(k:patch("cm", "f1", { data = { v = "e2" } }))
      sim:admin { op = "expire" }
      local seen = until_value(w, "e2", 10)
      assert.same({ "e2" }, seen)  -- the re-list shows the current state only
      assert.equals(1, w.relists)
      w:close()
    end)
  end)

  describe("waits", function()
    it("returns on the watch event that makes the condition hold, not on a poll", function()
      -- No speed assumption: instead of timing the reaction, count the judgements. The writer
      -- patches only once told the wait has listed, and 4.5 s later: a poller on the runbook's 2 s
      -- would judge at least four times (the list, 2 s, 4 s, 6 s), the watch three times (the list,
      -- its ADDED event, the patch's MODIFIED event), however slow the machine.
      assert(k:create(configmap("w1", { ready = "no" })))
      local go = sim.root .. "/w1-go"
      local script = write(sim.root .. "/flip.lua", ([[
        local k8s, sys = require "pgr.k8s", require "pgr.sys"
        local k = assert(k8s.connect { kubeconfig = %q })
        assert(k:resource("cm"))
        local deadline = sys.now() + 60
        while not io.open(%q) and sys.now() < deadline do sys.sleep(0.02) end
        sys.sleep(4.5)
        assert(k:patch("cm", "w1", { data = { ready = "yes" } }))
      ]]):format(sim.kubeconfig, go))
      os.execute(("%s %s >/dev/null 2>&1 &"):format(os.getenv("PGR") or "./pgr", script))
      local judged = 0
      local obj = assert(k:wait_for("cm", "w1", function(o)
        judged = judged + 1
        if judged == 1 then assert(io.open(go, "w")):close() end
        return o and o.data.ready == "yes"
      end, { timeout = 60 }))
      assert.equals("yes", obj.data.ready)
      assert.equals(3, judged)
    end)

    it("times out with a message naming what it waited for and the last state seen", function()
      assert(k:create(configmap("w2", { ready = "no" })))
      local t0 = sys.now()
      local obj, err = k:wait_for("cm", "w2", function(o) return o and o.data.ready == "yes", "still " .. o.data.ready end,
        { timeout = 0.6, describe = "configmap w2 to be ready" })
      assert.is_nil(obj)
      assert.is_true(sys.now() - t0 >= 0.6)
      assert.equals("timeout", err.code)
      assert.matches("timed out after 0.6s waiting for configmap w2 to be ready; last seen: configmap w2", err.message, 1, true)
      assert.matches("(still no)", err.message, 1, true)
      assert.equals("no", err.last.data.ready)
    end)

    it("waits for pods to be ready and to be gone, after scale returns the previous count", function()
      assert(k:create(deployment("pw", 2)))
      local pods = assert(k:pods_ready("app=pw", 2, { timeout = 30 }))
      assert.equals(2, #pods)
      assert.equals(2, assert(k:scale("deploy", "pw", 0)))
      assert.is_true(k:pods_gone({ app = "pw" }, { timeout = 30 }))
      assert.equals(0, #assert(k:list("pods", { labels = "app=pw" })))
      assert.equals(0, assert(k:scale("deploy", "pw", 1)))
      local _, err = k:scale("ds", "whatever", 1)
      assert.matches("cannot be scaled", err.message, 1, true)
      -- the timeout message counts what is ready: let the one pod get there first
      assert(k:pods_ready("app=pw", 1, { timeout = 30 }))
      local _, err2 = k:pods_ready("app=pw", 5, { timeout = 0.5 })
      assert.equals("timeout", err2.code)
      assert.matches("1/5 ready", err2.message, 1, true)
    end)
  end)

  describe("rollouts", function()
    it("restarts and waits for a deployment, a daemonset and a statefulset", function()
      assert(k:create(deployment("rd", 2)))
      assert(k:create(statefulset("rs", 2)))
      assert(k:create {
        apiVersion = "apps/v1", kind = "DaemonSet", metadata = { name = "rds", namespace = NS },
        spec = { selector = { matchLabels = { app = "rds" } }, updateStrategy = { type = "RollingUpdate" },
                 template = { metadata = { labels = { app = "rds" } },
                              spec = { containers = { { name = "c", image = "busybox" } } } } },
      })
      for _, target in ipairs { { "deploy", "rd" }, { "sts", "rs" }, { "ds", "rds" } } do
        assert(k:rollout_status(target[1], target[2], { timeout = 60 }))
        local before = assert(k:get(target[1], target[2]))
        local patched = assert(k:rollout_restart(target[1], target[2]))
        assert.is_string(patched.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"])
        assert.equals(before.metadata.generation + 1, patched.metadata.generation)
        local done = assert(k:rollout_status(target[1], target[2], { timeout = 60 }))
        assert.is_true(done.status.observedGeneration >= patched.metadata.generation)
      end
    end)

    it("refuses rollout status on an OnDelete statefulset as kubectl does", function()
      assert(k:create(statefulset("od", 1, "OnDelete")))
      local ok, err = k:rollout_status("sts", "od", { timeout = 5 })
      assert.is_nil(ok)
      assert.equals("rollout status is only available for RollingUpdate strategy type", err.message)
    end)
  end)

  describe("apply, secrets and access", function()
    it("creates, configures and leaves unchanged, and secret() decodes data", function()
      local text = manifest:gsub("NAME", "ap")
      local res = assert(k:apply_manifest(text))
      assert.same({ "created", "created" }, { res[1].action, res[2].action })
      assert.same({ username = "postgres", password = "s3cr3t" }, assert(k:secret("ap")))
      res = assert(k:apply_manifest(text))
      assert.same({ "unchanged", "unchanged" }, { res[1].action, res[2].action })
      -- a key dropped from the manifest is removed; one the server added would stay
      local changed = text:gsub("  password: czNjcjN0\n", "  password: bmV3\n"):gsub("  username: cG9zdGdyZXM=\n", "")
      res = assert(k:apply_manifest(changed))
      assert.equals("configured", res[1].action)
      assert.same({ password = "new" }, assert(k:secret("ap")))
      local _, err = k:secret("nope")
      assert.equals(404, err.code)
      local _, yerr = k:apply_manifest("a: [\n")
      assert.equals("yaml", yerr.code)
    end)

    it("reads a pod's log as text (kubectl logs), and names a missing pod", function()
      assert(k:create({ apiVersion = "v1", kind = "Pod", metadata = { name = "logger", namespace = "default" },
                        spec = { containers = { { name = "main", image = "busybox" } } } }))
      local text, err = k:pod_log("logger", { container = "main", tail = 10, namespace = "default" })
      assert.is_nil(err)
      assert.equals("", text) -- a text/plain answer (kubesim's pods other than Spilo's print nothing)
      local _, merr = k:pod_log("nope", { namespace = "default" })
      assert.equals(404, merr.code)
      assert.matches("pod default/nope not found", merr.message, 1, true)
      assert(k:delete("pod", "logger", { namespace = "default" }))
    end)

    it("answers can_i from a SelfSubjectAccessReview", function()
      assert.is_true((k:can_i("delete", "postgresql", "spire")))
      assert.is_true((k:can_i("patch", "sts/scale")))
      sim:admin { op = "deny", verb = "delete", resource = "postgresqls", group = "acid.zalan.do" }
      local allowed = k:can_i("delete", "postgresql", "spire")
      assert.is_false(allowed)
      assert.is_true((k:can_i("get", "postgresql", "spire")))
      sim:admin { op = "allow_all" }
    end)
  end)

  describe("the same state as kubectl", function()
    it("scale", function()
      assert(k:create(statefulset("xs-k", 1)))
      assert(k:create(statefulset("xs-p", 1)))
      local _, rc = sim:kubectl("scale sts xs-k --replicas=3")
      assert.equals(0, rc)
      assert.equals(1, assert(k:scale("sts", "xs-p", 3)))
      assert.equals(normalized(assert(k:get("sts", "xs-k")), "xs-k"), normalized(assert(k:get("sts", "xs-p")), "xs-p"))
    end)

    it("rollout restart", function()
      assert(k:create(deployment("xr-k", 1)))
      assert(k:create(deployment("xr-p", 1)))
      local out, rc = sim:kubectl("rollout restart deploy xr-k")
      assert.equals(0, rc, out)
      assert(k:rollout_restart("deploy", "xr-p"))
      local a, b = assert(k:get("deploy", "xr-k")), assert(k:get("deploy", "xr-p"))
      assert.equals(normalized(a, "xr-k"), normalized(b, "xr-p"))
    end)

    it("replace --force of a finished job, stripped as the runbook strips it", function()
      for _, n in ipairs { "xj-k", "xj-p" } do
        assert(k:create {
          apiVersion = "batch/v1", kind = "Job", metadata = { name = n, namespace = NS },
          spec = { template = { spec = { restartPolicy = "Never",
            containers = { { name = "c", image = "busybox", command = { "true" } } } } } },
        })
      end
      local old = assert(k:get("job", "xj-k"))
      local file = write(sim.root .. "/job.json", json.encode(k8s.strip(old)))
      local out, rc = sim:kubectl("replace --force -f " .. file)
      assert.equals(0, rc, out)
      local oldp = assert(k:get("job", "xj-p"))
      local newp = assert(k:replace_force(oldp))
      assert.is_not.equals(oldp.metadata.uid, newp.metadata.uid)
      local a = assert(k:get("job", "xj-k"))
      assert.is_not.equals(old.metadata.uid, a.metadata.uid)
      assert.equals(normalized(a, "xj-k"), normalized(assert(k:get("job", "xj-p")), "xj-p"))
    end)

    it("apply, created and then configured", function()
      local ka, pa = manifest:gsub("NAME", "xa-k"), manifest:gsub("NAME", "xa-p")
      local out, rc = sim:kubectl("apply -f " .. write(sim.root .. "/xa-k.yaml", ka))
      assert.equals(0, rc, out)
      assert(k:apply_manifest(pa))
      local function both()
        for _, kind in ipairs { { "secret", "xa-k", "xa-p" }, { "cm", "xa-k-cm", "xa-p-cm" } } do
          local a, b = assert(k:get(kind[1], kind[2])), assert(k:get(kind[1], kind[3]))
          assert.equals(normalized(a, "xa-k"), normalized(b, "xa-p"))
        end
      end
      both()
      local function change(t) return (t:gsub("  password: czNjcjN0\n", "  other: eA==\n"):gsub("{k: v}", "{k: w, l: x}")) end
      out, rc = sim:kubectl("apply -f " .. write(sim.root .. "/xa-k.yaml", change(ka)))
      assert.equals(0, rc, out)
      assert(k:apply_manifest(change(pa)))
      both()
    end)
  end)
end)
