-- Specs of pgr.s3's policy without an S3 server: the credentials chain (arguments, environment,
-- AWS profile files, site file, a Kubernetes Secret in the simulator), endpoint and region
-- resolution, s3:// URLs, and how backups are paired and ordered.
local s3 = require "pgr.s3"
local sys = require "pgr.sys"

local function writefile(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

describe("pgr.s3 configuration", function()
  local home
  setup(function()
    home = os.tmpname()
    os.remove(home)
    assert(sys.mkdir(home .. "/.aws"))
    writefile(home .. "/.aws/credentials", table.concat({
      "[default]", "aws_access_key_id = DEFAULTKEY", "aws_secret_access_key = default-secret", "",
      "[backup]", "aws_access_key_id=BACKUPKEY", "aws_secret_access_key=backup-secret",
      "aws_session_token = backup-token", "",
    }, "\n"))
    writefile(home .. "/.aws/config", table.concat({
      "[default]", "region = eu-west-1", "", "[profile backup]", "endpoint_url = http://rgw-vip.nmn:8080",
      "region = us-west-2", "s3 =", "  addressing_style = path", "",
    }, "\n"))
  end)
  teardown(function() os.execute("rm -rf '" .. home .. "'") end)

  local function env(t)
    return function(k) return t[k] end
  end

  it("takes explicit arguments first", function()
    local cfg = assert(s3.config { site = false, access_key = "ARGKEY", secret_key = "arg-secret",
      endpoint = "http://127.0.0.1:9000/", getenv = env { HOME = home, AWS_ACCESS_KEY_ID = "ENVKEY",
      AWS_SECRET_ACCESS_KEY = "x" } })
    assert.equals("ARGKEY", cfg.access_key)
    assert.equals("arguments", cfg.source)
    assert.equals("http://127.0.0.1:9000", cfg.endpoint)
    assert.equals("eu-west-1", cfg.region)
    assert.equals("postgres-backup", cfg.bucket)
  end)

  it("then the environment, with a session token", function()
    local cfg = assert(s3.config { site = false, getenv = env { HOME = home, AWS_ACCESS_KEY_ID = "ENVKEY",
      AWS_SECRET_ACCESS_KEY = "env-secret", AWS_SESSION_TOKEN = "tok", AWS_ENDPOINT_URL = "https://s3.local",
      AWS_REGION = "ap-south-1" } })
    assert.equals("ENVKEY", cfg.access_key)
    assert.equals("tok", cfg.session_token)
    assert.equals("environment (AWS_ACCESS_KEY_ID)", cfg.source)
    assert.equals("https://s3.local", cfg.endpoint)
    assert.equals("ap-south-1", cfg.region)
  end)

  it("then the AWS_PROFILE profile of ~/.aws/credentials and ~/.aws/config, with its endpoint_url", function()
    local cfg = assert(s3.config { site = false, getenv = env { HOME = home, AWS_PROFILE = "backup" } })
    assert.equals("BACKUPKEY", cfg.access_key)
    assert.equals("backup-token", cfg.session_token)
    assert.equals("http://rgw-vip.nmn:8080", cfg.endpoint)
    assert.equals("us-west-2", cfg.region)
    assert.matches("profile backup in .*/%.aws/credentials", cfg.source)
    local d = assert(s3.config { site = false, endpoint = "http://e", getenv = env { HOME = home } })
    assert.equals("DEFAULTKEY", d.access_key)
    assert.matches("profile default", d.source)
  end)

  it("then the site file: inline keys or a credentials file", function()
    local site = { path = "/etc/pgr/site.lua", s3 = { endpoint = "http://site:7480", bucket = "pb",
      credentials = { access_key = "SITEKEY", secret_key = "site-secret" } } }
    local cfg = assert(s3.config { site = site, getenv = env { HOME = "/nonexistent" } })
    assert.equals("SITEKEY", cfg.access_key)
    assert.equals("s3.credentials in /etc/pgr/site.lua", cfg.source)
    assert.equals("http://site:7480", cfg.endpoint)
    assert.equals("pb", cfg.bucket)
    assert.equals(32 * 1024 * 1024, cfg.readahead) -- the default read-ahead
    site.s3.readahead_mb = 0
    assert.equals(0, assert(s3.config { site = site, getenv = env { HOME = "/nonexistent" } }).readahead)
    site.s3.readahead_mb = 8
    assert.equals(8 * 1024 * 1024, assert(s3.config { site = site, getenv = env { HOME = "/nonexistent" } }).readahead)
    -- a file of keys open to others is refused, naming the fix
    site.s3.credentials = { file = home .. "/.aws/credentials" }
    os.execute("chmod 0644 " .. home .. "/.aws/credentials")
    local none, err = s3.config { site = site, getenv = env { HOME = "/nonexistent" } }
    assert.is_nil(none)
    assert.matches("refusing s3.credentials.file " .. home .. "/.aws/credentials: it holds secrets but is open to "
      .. "others (mode 0644): chmod 0600", err.message, 1, true)
    os.execute("chmod 0600 " .. home .. "/.aws/credentials")
    cfg = assert(s3.config { site = site, getenv = env { HOME = "/nonexistent" } })
    assert.equals("DEFAULTKEY", cfg.access_key)
    assert.equals("file " .. home .. "/.aws/credentials", cfg.source)
    site.s3.credentials = { file = "/nonexistent/creds" }
    none, err = s3.config { site = site, getenv = env { HOME = "/nonexistent" } }
    assert.is_nil(none)
    assert.equals("credentials", err.code)
    assert.matches("/nonexistent/creds", err.message)
  end)

  it("says where it looked when nothing has credentials, and asks for an endpoint", function()
    local cfg, err = s3.config { site = false, getenv = env { HOME = "/nonexistent" } }
    assert.is_nil(cfg)
    assert.equals("credentials", err.code)
    assert.matches("AWS_ACCESS_KEY_ID", err.message)
    assert.matches("site file", err.message)
    cfg, err = s3.config { site = false, access_key = "a", secret_key = "b", getenv = env { HOME = "/nonexistent" } }
    assert.is_nil(cfg)
    assert.equals("config", err.code)
    assert.matches("endpoint", err.message)
  end)

  describe("a Kubernetes Secret named by the site", function()
    local kubesim = require "support.kubesim"
    local k8s = require "pgr.k8s"
    local sim, client
    setup(function()
      sim = kubesim.up { fixture = "none" }
      local manifest = sim.root .. "/secret.yaml"
      writefile(manifest, table.concat({
        "apiVersion: v1", "kind: Namespace", "metadata: {name: services}", "---",
        "apiVersion: v1", "kind: Secret", "metadata: {name: postgres-backup-s3-credentials, namespace: services}",
        "stringData: {access_key: SECRETKEY, secret_key: from-the-secret, http_s3_endpoint: 'http://rgw-vip.nmn'}",
      }, "\n"))
      local out, rc = sim:kubectl("apply -f " .. manifest)
      assert.equals(0, rc, out)
      client = assert(k8s.connect { kubeconfig = sim.kubeconfig })
    end)
    teardown(function()
      if client then client:close() end
      if sim then sim:down() end
    end)

    it("is read last, with the endpoint it carries", function()
      local site = { s3 = { credentials = { secret = "services/postgres-backup-s3-credentials" } } }
      local cfg = assert(s3.config { site = site, k8s = client, getenv = env { HOME = "/nonexistent" } })
      assert.equals("SECRETKEY", cfg.access_key)
      assert.equals("from-the-secret", cfg.secret_key)
      assert.equals("Kubernetes secret services/postgres-backup-s3-credentials", cfg.source)
      assert.equals("http://rgw-vip.nmn", cfg.endpoint)
      -- the environment still wins over it
      cfg = assert(s3.config { site = site, k8s = client, getenv = env { HOME = "/nonexistent",
        AWS_ACCESS_KEY_ID = "ENVKEY", AWS_SECRET_ACCESS_KEY = "e", AWS_ENDPOINT_URL = "http://x" } })
      assert.equals("ENVKEY", cfg.access_key)
    end)

    it("reaches the cluster through the site's kubeconfig, as pgr run does", function()
      local site = { kubeconfig = sim.kubeconfig,
                     s3 = { credentials = { secret = "services/postgres-backup-s3-credentials" } } }
      local cfg = assert(s3.config { site = site, getenv = env { HOME = "/nonexistent" } })
      assert.equals("from-the-secret", cfg.secret_key)
    end)

    it("names the secret when it is missing", function()
      local site = { s3 = { credentials = { secret = "services/nope" } } }
      local cfg, err = s3.config { site = site, k8s = client, getenv = env { HOME = "/nonexistent" } }
      assert.is_nil(cfg)
      assert.equals("credentials", err.code)
      assert.matches("services/nope", err.message)
      assert.matches("kubectl get secret %-n services nope", err.message)
    end)
  end)
end)

describe("pgr backups with a site file it cannot use", function()
  local function run(site)
    local p = io.popen(("PGR_SITE=%s HOME=/nonexistent AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= %s backups spire 2>&1; echo rc=$?")
      :format(site, os.getenv("PGR") or "./pgr"))
    local out = p:read("a")
    p:close()
    return out
  end

  it("says what is wrong with the site file, not that credentials are missing", function()
    local path = os.tmpname()
    writefile(path, "return {\n  s3 = { endpoint = 'http://x' }\n  state_dir = '/tmp'\n}\n")
    local out = run(path)
    os.remove(path)
    assert.matches(path .. ":3: .}. expected", out)
    assert.not_matches("no S3 credentials", out)
    assert.matches("rc=[1-9]", out)
    out = run("/nonexistent/site.lua")
    assert.matches("/nonexistent/site.lua", out, 1, true)
    assert.not_matches("no S3 credentials", out)
  end)
end)

describe("pgr.s3 backups and URLs", function()
  it("pairs .psql and .manifest, newest first by the time in the name", function()
    local objs = {
      { key = "spire-postgres-2022-09-14T03:10:04.psql", size = 100, last_modified = "2022-09-14T03:10:09.000Z" },
      { key = "spire-postgres-2022-09-14T03:10:04.manifest", size = 2, last_modified = "2022-09-14T03:10:09.000Z" },
      { key = "spire-postgres-2022-10-01T00:00:00.psql", size = 200, last_modified = "2020-01-01T00:00:00.000Z" },
      { key = "spire-postgres-2022-09-20T03:10:04.manifest", size = 2, last_modified = "2022-09-20T03:10:09.000Z" },
      { key = "spire-postgres-notes.txt", size = 1, last_modified = "2023-01-01T00:00:00.000Z" },
    }
    local list = s3.pair(objs, "postgres-backup")
    assert.equals(3, #list)
    assert.equals("spire-postgres-2022-10-01T00:00:00", list[1].name)
    assert.is_false(list[1].complete)
    assert.equals("manifest", list[1].missing)
    assert.equals(200, list[1].size)
    assert.equals("psql", list[2].missing)
    assert.is_nil(list[2].url)
    assert.is_true(list[3].complete)
    assert.equals("spire-postgres", list[3].cluster)
    assert.equals("s3://postgres-backup/spire-postgres-2022-09-14T03:10:04.psql", list[3].url)
  end)

  it("orders names without a time by LastModified", function()
    local list = s3.pair({
      { key = "a.psql", last_modified = "2021-01-01T00:00:00.000Z" },
      { key = "b.psql", last_modified = "2022-01-01T00:00:00.000Z" },
    })
    assert.equals("b", list[1].name)
    assert.equals("b", list[1].cluster)
  end)

  it("parses s3:// URLs and maps services to clusters", function()
    assert.same({ "postgres-backup", "a/b:c d.psql" }, { s3.parse_url("s3://postgres-backup/a/b:c d.psql") })
    local b, err = s3.parse_url("s3://bucket-only")
    assert.is_nil(b)
    assert.equals("usage", err.code)
    assert.equals("spire-postgres", s3.cluster_of("spire"))
    assert.equals("gitea-vcs-postgres", s3.cluster_of("vcs"))
    assert.equals("cray-smd-postgres", s3.cluster_of("cray-smd-postgres"))
    assert.equals("2022-09-14T03:10:04", s3.name_time("spire-postgres-2022-09-14T03:10:04"))
  end)
end)
