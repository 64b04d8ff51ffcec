-- etc/site.example.lua: an example pgr site file; copy it to /etc/pgr/site.lua (or point PGR_SITE at
-- it) and change what differs on your system. Every field is optional; the defaults are the runbook's.
return {
  -- The management NCNs, for commands run on every node (hostlist syntax, as pdsh -w takes it).
  nodes = "ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]",

  -- How pgr reaches the nodes: ssh as this user; at most `fanout` at once; seconds per node.
  -- options are ssh's own argument words, each option with its "-" ("-o", "Key=value").
  ssh = { user = "root", fanout = 32, timeout = 60, options = { "-o", "StrictHostKeyChecking=yes" } },

  -- Where the postgres-backup bucket lives (the cronjobs' S3), and whose keys read it.
  s3 = {
    endpoint = "https://rgw-vip.nmn",
    region = "us-east-1",
    bucket = "postgres-backup",
    -- one of: { access_key = "...", secret_key = "..." } | { file = "/root/.s3cfg-pgr" } |
    --         { secret = "services/postgres-backup-s3-credentials" }
    credentials = { secret = "services/postgres-backup-s3-credentials" },
    -- MiB of the dump read ahead of the database's load (0: none), so the network and the load
    -- overlap; with restore_jobs > 1 as much again is held for the loading connections
    readahead_mb = 32,
    -- The CA that signed the endpoint's certificate (default: the system's CA store).
    -- ca_bundle = "/etc/pki/trust/anchors/platform-ca-certs.crt",
    -- insecure = true would skip the certificate check: pgr warns on every use; give the CA instead.
  },

  -- The database pods: Spilo serves TLS with a certificate of its own. "require" (the default) uses
  -- TLS and sends the password only inside SCRAM with channel binding (no cleartext or md5 login a
  -- man in the middle could take or relay); "verify-ca"/"verify-full" also check the certificate
  -- against sslrootcert, the CA (PEM) that signed the pods' certificates (e.g. taken from the
  -- cluster's TLS secret), and then let md5-kept passwords (PostgreSQL 13 and older) log in.
  -- "prefer" (TLS if offered) and channel_binding = "prefer" are fallbacks pgr warns about on every run.
  postgres = {
    sslmode = "require",
    -- sslmode = "verify-ca", sslrootcert = "/etc/pgr/spilo-ca.crt",
  },

  -- Connections that load the dump's tables side by side, then build their indexes side by side
  -- (pgr run --jobs N wins). 1 is psql's way; 2-4 shortens the restore of a dump with several large
  -- tables when the database pod has the CPUs for it. From S3 the dump is read once (with a
  -- read-ahead; readahead_mb = 0 fetches each table's rows again by a Range request instead).
  -- A gzip'd dump always loads over one connection.
  restore_jobs = 1,

  -- pgr run, pgr drill and pgr backup hold a Lease pgr-<cluster> in the cluster's namespace while they
  -- work, so that a second pgr, from any machine, refuses. A pgr that dies (kill -9, a lost node)
  -- stops renewing it: after this many seconds another may take it over (`pgr run --resume` of the
  -- same run takes it back at once). Longer than any single blocking call of a run.
  lease_seconds = 300,

  -- pgr run's backup of the live cluster before its first change (the way back): true (default: to
  -- S3 under pgr/ when the s3 settings reach it, else the state directory's backups/), "s3", an
  -- absolute directory, or false (no way back; pgr run --no-safety-backup does the same once).
  safety_backup = true,

  -- Journals of every run (default $XDG_STATE_HOME/pgr or ~/.local/state/pgr; PGR_STATE_DIR wins).
  state_dir = "/var/lib/pgr",

  -- The CA bundle (PEM) for TLS peers whose own configuration names no CA (S3 without ca_bundle,
  -- a kubeconfig without certificate-authority, libpq's sslmode=verify-full). Default: the system's,
  -- found where SUSE (/etc/ssl/ca-bundle.pem), RHEL (/etc/pki/tls/certs/ca-bundle.crt) or Debian
  -- (/etc/ssl/certs/ca-certificates.crt) keep it; $CURL_CA_BUNDLE and $SSL_CERT_FILE win over this.
  -- ca_file = "/etc/pgr/ca-bundle.pem",

  -- Kubernetes: default $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
  -- kubeconfig = "/etc/kubernetes/admin.conf",
  -- context = "kubernetes-admin@kubernetes",

  -- Keycloak verification: the token endpoint; credentials are asked on the terminal unless a file
  -- (two lines: username, password; mode 0600) is named here.
  keycloak = {
    token_url = "https://api-gw-service-nmn.local/keycloak/realms/shasta/protocol/openid-connect/token",
    client_id = "shasta",
    -- credentials_file = "/root/.pgr-keycloak",   -- refused unless root's or yours, mode 0600
    -- insecure = true would skip the certificate check: pgr warns on every use.
  },

  -- External commands of the services' last steps: an argv list (run directly), a string (run by
  -- /bin/sh -c), or false to skip the step.
  commands = {
    spire_restart_agent = { "systemctl", "restart", "spire-agent" },         -- on every node
    spire_fix_storage = { "/opt/cray/platform-utils/spire/fix-spire-on-storage.sh" },
    spire_verify_jwt = { "/usr/bin/heartbeat-spire-agent", "api", "fetch", "jwt",
                         "-socketPath=/root/spire/agent.sock", "-audience", "test" },
    hsm_verify = "cray hsm service ready list",
    hsm_rediscover = false,
    sls_verify = { "cray", "sls", "version", "list" },
  },
}
