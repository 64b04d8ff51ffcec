# The CSM fixture: namespaces, nodes and the five services pgr restores (Spire, Keycloak, VCS, HSM, SLS)
# with their clients, loader jobs and postgresql clusters, then realistic data in every database.
import time

from .controllers import NODES, NAMESPACES, PODS, pod_ready
from .pgmanager import server_major

PGS = ("acid.zalan.do", "postgresqls")

NODE_NAMES = ["ncn-m001", "ncn-m002", "ncn-m003", "ncn-w001", "ncn-w002", "ncn-w003"]


def nodes(net):
    out = []
    for i, n in enumerate(NODE_NAMES):
        labels = {"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        spec = {}
        if n.startswith("ncn-m"):
            labels["node-role.kubernetes.io/control-plane"] = ""
            spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        out.append({"metadata": {"name": n, "labels": labels}, "spec": spec,
                    "status": {"addresses": [{"type": "InternalIP", "address": "%s.0.%d" % (net, 10 + i)},
                                             {"type": "Hostname", "address": n}],
                               "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                               "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "SUSE Linux Enterprise Server 15 SP5"}}})
    return out


def _c(name, image, **kw):
    c = {"name": name, "image": "artifactory.algol60.net/csm-docker/stable/" + image}
    c.update(kw)
    return c


def _tpl(labels, containers, **spec):
    s = {"containers": containers}
    s.update(spec)
    return {"metadata": {"labels": dict(labels)}, "spec": s}


def deployment(ns, name, replicas, labels, containers, **kw):
    return ("apps", "deployments"), {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                                     "spec": dict({"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                                                   "template": _tpl(labels, containers)}, **kw)}


def statefulset(ns, name, replicas, labels, containers):
    return ("apps", "statefulsets"), {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                                      "spec": {"replicas": replicas, "serviceName": name,
                                               "selector": {"matchLabels": dict(labels)},
                                               "template": _tpl(labels, containers)}}


def daemonset(ns, name, labels, containers):
    return ("apps", "daemonsets"), {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                                    "spec": {"selector": {"matchLabels": dict(labels)},
                                             "template": _tpl(labels, containers)}}


def job(ns, name, labels, image, command):
    return ("batch", "jobs"), {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                               "spec": {"backoffLimit": 6, "template": {
                                   # The pods carry only their own name label: the runbook counts a
                                   # client's pods by app.kubernetes.io/instance and expects no job pods.
                                   "metadata": {"labels": {"app.kubernetes.io/name": name}},
                                   "spec": {"restartPolicy": "Never",
                                            "containers": [_c(name, image, command=command)]}}}}


# spec.postgresql.version is the major the simulated pods really run (Debian's 15): CSM's clusters run
# 12-14, but a spec that named another version than the server would mislead pgr's version check.
def postgresql(ns, name, team, users, databases, size="20Gi"):
    return PGS, {"apiVersion": "acid.zalan.do/v1", "kind": "postgresql",
                 "metadata": {"name": name, "namespace": ns,
                              "labels": {"app.kubernetes.io/managed-by": "Helm", "team": team}},
                 "spec": {"teamId": team, "numberOfInstances": 3, "enableLogicalBackup": False,
                          "postgresql": {"version": server_major(), "parameters": {"max_connections": "550"}},
                          "volume": {"size": size},
                          "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                                        "limits": {"cpu": "4", "memory": "4Gi"}},
                          "users": users, "databases": databases}}


def pvc(ns, name, labels, size):
    return ("", "persistentvolumeclaims"), {"metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": size}}}}


def cronjob(ns, name, cluster):
    return ("batch", "cronjobs"), {"metadata": {"name": name, "namespace": ns},
                                   "spec": {"schedule": "10 */8 * * *", "concurrencyPolicy": "Forbid",
                                            "jobTemplate": {"spec": {"template": {"spec": {
                                                "restartPolicy": "Never",
                                                "containers": [_c("postgres-db-backup", "cray-postgres-db-backup:0.2.3",
                                                                  env=[{"name": "DB_NAME", "value": cluster}])]}}}}}}


def csm_objects():
    """Every object of the CSM fixture, in creation order."""
    sp, sv = "spire", "services"
    objs = []
    # ---- Spire
    objs += [
        postgresql(sp, "spire-postgres", "spire", {"service_account": ["superuser", "createdb"], "spire": ["createdb"]},
                   {"spire": "spire"}),
        statefulset(sp, "spire-server", 3, {"app.kubernetes.io/name": "spire-server",
                                            "app.kubernetes.io/instance": "spire"},
                    [_c("spire-server", "spiffe/spire-server:0.12.2"), _c("spire-registration-server", "cray-spire:1.5.3")]),
        daemonset(sp, "spire-agent", {"app.kubernetes.io/name": "spire-agent", "app.kubernetes.io/instance": "spire"},
                  [_c("spire-agent", "spiffe/spire-agent:0.12.2")]),
        deployment(sp, "spire-jwks", 3, {"app.kubernetes.io/name": "spire-jwks", "app.kubernetes.io/instance": "spire"},
                   [_c("spire-jwks", "cray-spire-jwks:1.5.3")]),
        cronjob(sp, "spire-postgresql-db-backup", "spire-postgres"),
    ]
    # ---- Keycloak
    kc = {"app.kubernetes.io/instance": "cray-keycloak", "app.kubernetes.io/name": "keycloak"}
    objs += [
        postgresql(sv, "keycloak-postgres", "keycloak", {"service_account": ["superuser", "createdb"]},
                   {"service_db": "service_account"}),
        statefulset(sv, "cray-keycloak", 3, kc, [_c("keycloak", "keycloak:21.1.1"), _c("istio-proxy", "istio/proxyv2:1.19.10")]),
        job(sv, "keycloak-setup", {"app.kubernetes.io/instance": "cray-keycloak", "app.kubernetes.io/name": "keycloak-setup"},
            "cray-keycloak-setup:4.2.0", ["/app/keycloak_setup.py"]),
        job(sv, "keycloak-users-localize", {"app.kubernetes.io/instance": "cray-keycloak-users-localize",
                                            "app.kubernetes.io/name": "keycloak-users-localize"},
            "cray-keycloak-setup:4.2.0", ["/app/keycloak_localize.py"]),
        cronjob(sv, "cray-keycloak-postgresql-db-backup", "keycloak-postgres"),
    ]
    for suffix in ("customer-access-ingress", "customer-high-speed-ingress", "customer-management-ingress"):
        name = "cray-oauth2-proxies-" + suffix
        objs.append(deployment(sv, name, 1, {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "cray-oauth2-proxies"},
                               [_c("oauth2-proxy", "oauth2-proxy/oauth2-proxy:v7.4.0")]))
    # ---- VCS (gitea)
    vcs = {"app.kubernetes.io/name": "vcs", "app.kubernetes.io/instance": "gitea"}
    objs += [
        postgresql(sv, "gitea-vcs-postgres", "gitea-vcs", {"service_account": ["superuser", "createdb"]},
                   {"service_db": "service_account"}),
        pvc(sv, "gitea-vcs-data-claim", vcs, "50Gi"),
        deployment(sv, "gitea-vcs", 1, vcs, [_c("vcs", "gitea:1.20.5")], strategy={"type": "Recreate"}),
        cronjob(sv, "gitea-vcs-postgresql-db-backup", "gitea-vcs-postgres"),
    ]
    # ---- HSM (cray-smd)
    objs += [
        postgresql(sv, "cray-smd-postgres", "cray-smd", {"hmsdsuser": ["superuser"], "service_account": ["superuser"]},
                   {"hmsds": "hmsdsuser"}),
        deployment(sv, "cray-smd", 3, {"app.kubernetes.io/name": "cray-smd", "app.kubernetes.io/instance": "cray-hms-smd"},
                   [_c("cray-smd", "cray-smd:2.13.0")]),
        job(sv, "cray-smd-init", {"app.kubernetes.io/name": "cray-smd-init", "app.kubernetes.io/instance": "cray-hms-smd"},
            "cray-smd:2.13.0", ["/entrypoint.sh", "smd-init"]),
        cronjob(sv, "cray-smd-postgresql-db-backup", "cray-smd-postgres"),
    ]
    # ---- SLS
    objs += [
        postgresql(sv, "cray-sls-postgres", "cray-sls", {"slsuser": ["superuser"], "service_account": ["superuser"]},
                   {"sls": "slsuser", "service_db": "slsuser"}),
        deployment(sv, "cray-sls", 3, {"app.kubernetes.io/name": "cray-sls", "app.kubernetes.io/instance": "cray-hms-sls"},
                   [_c("cray-sls", "cray-sls:2.4.0")]),
        job(sv, "cray-sls-init-load", {"app.kubernetes.io/name": "cray-sls-init-load", "app.kubernetes.io/instance": "cray-hms-sls"},
            "cray-sls:2.4.0", ["/entrypoint.sh", "sls-init-load"]),
        cronjob(sv, "cray-sls-postgresql-db-backup", "cray-sls-postgres"),
    ]
    return objs


CLUSTERS = ["spire/spire-postgres", "services/keycloak-postgres", "services/gitea-vcs-postgres",
            "services/cray-smd-postgres", "services/cray-sls-postgres"]


# ------------------------------------------------------------------ data (SQL run as the service user)

def _xname(i):
    return "x3000c0s%db0n0" % (i + 1)


SQL = {
    "spire/spire-postgres": [("spire", "spire", """
CREATE TABLE migrations (id serial PRIMARY KEY, created_at timestamptz, updated_at timestamptz, version integer, code_version text);
INSERT INTO migrations (created_at, updated_at, version, code_version) VALUES (now(), now(), 14, '0.12.2');
CREATE TABLE bundles (id serial PRIMARY KEY, created_at timestamptz, updated_at timestamptz, trust_domain text UNIQUE, data bytea);
INSERT INTO bundles (created_at, updated_at, trust_domain, data) VALUES (now(), now(), 'spiffe://shasta', decode(md5('bundle'), 'hex'));
CREATE TABLE attested_node_entries (id serial PRIMARY KEY, created_at timestamptz, updated_at timestamptz, spiffe_id text UNIQUE, data_type text, serial_number text, expires_at timestamptz);
INSERT INTO attested_node_entries (created_at, updated_at, spiffe_id, data_type, serial_number, expires_at)
  SELECT now(), now(), 'spiffe://shasta/ncn/x3000c0s' || g || 'b0n0', 'tpm', md5(g::text), now() + interval '1 day' FROM generate_series(1, 150) g;
CREATE TABLE registered_entries (id serial PRIMARY KEY, created_at timestamptz, updated_at timestamptz, entry_id text UNIQUE, spiffe_id text, parent_id text, ttl integer, admin boolean, downstream boolean, expiry bigint);
INSERT INTO registered_entries (created_at, updated_at, entry_id, spiffe_id, parent_id, ttl, admin, downstream, expiry)
  SELECT now(), now(), md5('entry' || g), 'spiffe://shasta/workload/' || g, 'spiffe://shasta/ncn/x3000c0s' || (g % 150 + 1) || 'b0n0', 3600, false, false, 0 FROM generate_series(1, 400) g;
CREATE TABLE selectors (id serial PRIMARY KEY, registered_entry_id integer REFERENCES registered_entries(id), type text, value text);
INSERT INTO selectors (registered_entry_id, type, value) SELECT g, 'k8s', 'ns:services' FROM generate_series(1, 400) g;
""")],
    "services/keycloak-postgres": [("service_db", "service_account", """
CREATE TABLE realm (id varchar(36) PRIMARY KEY, name varchar(255) UNIQUE, enabled boolean, ssl_required varchar(255));
INSERT INTO realm VALUES ('master', 'master', true, 'EXTERNAL'), ('shasta', 'shasta', true, 'NONE');
CREATE TABLE user_entity (id varchar(36) PRIMARY KEY, email varchar(255), enabled boolean, first_name varchar(255), last_name varchar(255), realm_id varchar(255), username varchar(255), created_timestamp bigint);
INSERT INTO user_entity SELECT md5('user' || g), 'user' || g || '@example.com', true, 'First' || g, 'Last' || g, 'shasta', 'user' || g, 1663124400000 + g FROM generate_series(1, 300) g;
INSERT INTO user_entity VALUES ('admin-id', NULL, true, NULL, NULL, 'master', 'admin', 1663124400000);
CREATE TABLE keycloak_role (id varchar(36) PRIMARY KEY, client_realm_constraint varchar(255), client_role boolean, description varchar(255), name varchar(255), realm_id varchar(255));
INSERT INTO keycloak_role SELECT md5('role' || g), 'shasta', false, 'role ' || g, 'role-' || g, 'shasta' FROM generate_series(1, 40) g;
CREATE TABLE user_role_mapping (role_id varchar(255), user_id varchar(36), PRIMARY KEY (role_id, user_id));
INSERT INTO user_role_mapping SELECT md5('role' || (g % 40 + 1)), md5('user' || g) FROM generate_series(1, 300) g;
CREATE TABLE credential (id varchar(36) PRIMARY KEY, salt bytea, type varchar(255), user_id varchar(36), created_date bigint, secret_data text, credential_data text);
INSERT INTO credential SELECT md5('cred' || g), NULL, 'password', md5('user' || g), 1663124400000, '{"value":"' || md5('pw' || g) || '"}', '{"hashIterations":27500,"algorithm":"pbkdf2-sha256"}' FROM generate_series(1, 300) g;
""")],
    "services/gitea-vcs-postgres": [("service_db", "service_account", """
CREATE TABLE "user" (id bigserial PRIMARY KEY, lower_name varchar(255) UNIQUE, name varchar(255), email varchar(255), passwd varchar(255), is_admin boolean, created_unix bigint);
INSERT INTO "user" (lower_name, name, email, passwd, is_admin, created_unix) VALUES ('crayvcs', 'crayvcs', 'crayvcs@example.com', md5('x'), true, 1663124400);
INSERT INTO "user" (lower_name, name, email, passwd, is_admin, created_unix) SELECT 'user' || g, 'user' || g, 'user' || g || '@example.com', md5('u' || g), false, 1663124400 + g FROM generate_series(1, 50) g;
CREATE TABLE repository (id bigserial PRIMARY KEY, owner_id bigint, lower_name varchar(255), name varchar(255), description text, is_private boolean, num_stars integer, created_unix bigint);
INSERT INTO repository (owner_id, lower_name, name, description, is_private, num_stars, created_unix)
  SELECT 1, lower(n), n, 'CSM configuration ' || n, false, 0, 1663124400 FROM unnest(ARRAY['csm-config-management', 'uan-config-management', 'cos-config-management', 'sma-config-management', 'slingshot-host-software-config-management', 'analytics-config-management']) n;
CREATE TABLE action (id bigserial PRIMARY KEY, user_id bigint, op_type integer, act_user_id bigint, repo_id bigint, ref_name varchar(255), is_private boolean, content text, created_unix bigint);
INSERT INTO action (user_id, op_type, act_user_id, repo_id, ref_name, is_private, content, created_unix)
  SELECT 1, 5, 1, (g % 6) + 1, 'refs/heads/integration', false, md5(g::text), 1663124400 + g FROM generate_series(1, 500) g;
""")],
    "services/cray-smd-postgres": [("hmsds", "hmsdsuser", """
CREATE TABLE system (id integer PRIMARY KEY, schema_version integer NOT NULL, dirty boolean);
INSERT INTO system VALUES (0, 21, false);
CREATE TABLE components (id varchar(63) PRIMARY KEY, type varchar(63) NOT NULL, state varchar(32) NOT NULL, admin varchar(32), enabled boolean, flag varchar(32), role varchar(32), subrole varchar(32), nid bigint, subtype varchar(64), nettype varchar(64), arch varchar(64), class varchar(32), reservation_disabled boolean DEFAULT false, locked boolean DEFAULT false);
INSERT INTO components SELECT 'x3000c0s' || g || 'b0n0', 'Node', CASE WHEN g % 17 = 0 THEN 'Off' ELSE 'Ready' END, '', true, 'OK',
  CASE WHEN g <= 9 THEN 'Management' ELSE 'Compute' END, CASE WHEN g <= 3 THEN 'Master' WHEN g <= 6 THEN 'Storage' WHEN g <= 9 THEN 'Worker' ELSE '' END,
  g, '', 'Sling', 'X86', 'River' FROM generate_series(1, 240) g;
INSERT INTO components SELECT 'x3000c0s' || g || 'b0', 'NodeBMC', 'Ready', '', true, 'OK', '', '', -1, '', 'Sling', 'X86', 'River' FROM generate_series(1, 240) g;
CREATE TABLE comp_eth_interfaces (id varchar(32) PRIMARY KEY, description text, macaddr varchar(32), last_update timestamptz, compid varchar(63), comptype varchar(63), ip_addresses json DEFAULT '[]');
INSERT INTO comp_eth_interfaces SELECT 'b42e99' || lpad(to_hex(g), 6, '0'), 'Ethernet Interface Lan1', substr(md5(g::text), 1, 12), now(), 'x3000c0s' || g || 'b0n0', 'Node',
  json_build_array(json_build_object('IPAddress', '10.252.1.' || g))::json FROM generate_series(1, 240) g;
CREATE TABLE rf_endpoints (id varchar(63) PRIMARY KEY, type varchar(63), name text, hostname varchar(63), domain varchar(192), fqdn varchar(255), ip_info json DEFAULT '{}', enabled boolean, uuid varchar(64), "user" varchar(128), password varchar(128), usessdp boolean, macrequired boolean, macaddr varchar(32), rediscoveronupdate boolean, templateid varchar(128), discovery_info json);
INSERT INTO rf_endpoints SELECT 'x3000c0s' || g || 'b0', 'NodeBMC', '', 'x3000c0s' || g || 'b0', '', 'x3000c0s' || g || 'b0', '{}', true, md5(g::text), 'root', '', false, false, '', true, '', '{"LastDiscoveryStatus":"DiscoverOK"}' FROM generate_series(1, 240) g;
CREATE TABLE node_nid_mapping (id varchar(63) PRIMARY KEY, nid bigint UNIQUE, role varchar(32), subrole varchar(32), node_info json);
INSERT INTO node_nid_mapping SELECT 'x3000c0s' || g || 'b0n0', g, 'Compute', '', '{}' FROM generate_series(1, 240) g;
""")],
    "services/cray-sls-postgres": [("sls", "slsuser", """
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (4, false);
CREATE TABLE version_history (id serial PRIMARY KEY, version integer, last_updated timestamptz DEFAULT now());
INSERT INTO version_history (version) SELECT g FROM generate_series(1, 12) g;
CREATE TABLE components (xname varchar(255) PRIMARY KEY, parent varchar(255), comp_type varchar(255), comp_class varchar(255), extra_properties jsonb, last_updated timestamptz DEFAULT now(), last_updated_version integer);
INSERT INTO components (xname, parent, comp_type, comp_class, extra_properties, last_updated_version)
  SELECT 'x3000c0s' || g || 'b0n0', 'x3000c0s' || g || 'b0', 'comptype_node', 'River',
         jsonb_build_object('Role', CASE WHEN g <= 9 THEN 'Management' ELSE 'Compute' END, 'NID', g, 'Aliases', jsonb_build_array('nid' || lpad(g::text, 6, '0'))), 12
  FROM generate_series(1, 300) g;
CREATE TABLE networks (name varchar(255) PRIMARY KEY, full_name text, ip_ranges text[], type varchar(255), extra_properties jsonb, last_updated timestamptz DEFAULT now(), last_updated_version integer);
INSERT INTO networks (name, full_name, ip_ranges, type, extra_properties, last_updated_version) VALUES
  ('CAN', 'Customer Access Network', '{10.102.4.0/24}', 'ethernet', '{}', 12), ('CMN', 'Customer Management Network', '{10.102.3.0/25}', 'ethernet', '{}', 12),
  ('HMN', 'Hardware Management Network', '{10.254.0.0/17}', 'ethernet', '{}', 12), ('NMN', 'Node Management Network', '{10.252.0.0/17}', 'ethernet', '{}', 12),
  ('MTL', 'Provisioning Network (untagged)', '{10.1.1.0/16}', 'ethernet', '{}', 12), ('HSN', 'High Speed Network', '{10.253.0.0/16}', 'slingshot10', '{}', 12);
"""), ("service_db", "slsuser", """
CREATE TABLE sls_dumpstate (id serial PRIMARY KEY, taken timestamptz DEFAULT now(), note text);
INSERT INTO sls_dumpstate (note) SELECT 'loaded by cray-sls-init-load ' || g FROM generate_series(1, 20) g;
""")],
}


def load_data(pgm, key, items):
    for db, owner, sql in items:
        pgm.psql(key, "SET ROLE %s;\n%s" % ('"%s"' % owner, sql), db=db)


class Fixture:
    def __init__(self, name, ctl, operator, pgm, net):
        self.name, self.ctl, self.op, self.pgm, self.net = name, ctl, operator, pgm, net
        self.store = ctl.store

    def create_base(self):
        for n in nodes(self.net):
            self.ctl.create(NODES, n)
        for ns in ("default", "kube-system", "kube-public") + (("spire", "services") if self.name == "csm" else ()):
            self.ctl.create(NAMESPACES, {"metadata": {"name": ns}})

    def create(self):
        if self.name != "csm":
            return
        # The postgres template initdb runs while the API objects are created (it is the slow part).
        import threading
        t = threading.Thread(target=self.pgm.ensure_template, daemon=True)
        t.start()
        for rkey, obj in csm_objects():
            self.ctl.create(rkey, obj)
        t.join()

    def wait_ready(self, timeout):
        """Until every fixture pod is Running/Ready (or Succeeded, for jobs) and every cluster Running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pods, _ = self.store.list(PODS, copy=False)
            pgs, _ = self.store.list(PGS, copy=False)
            pending = [p["metadata"]["name"] for p in pods
                       if not (pod_ready(p) or p.get("status", {}).get("phase") == "Succeeded")]
            notrun = [p["metadata"]["name"] for p in pgs
                      if (p.get("status") or {}).get("PostgresClusterStatus") != "Running"]
            jobs, _ = self.store.list(("batch", "jobs"), copy=False)
            notdone = [j["metadata"]["name"] for j in jobs
                       if not any(c["type"] == "Complete" and c["status"] == "True"
                                  for c in (j.get("status") or {}).get("conditions") or [])]
            want_pods = 0 if self.name != "csm" else 1
            if pods and not pending and not notrun and not notdone or (not want_pods and not pending):
                return True
            time.sleep(0.05)
        raise RuntimeError("fixture not ready after %ss: pods %s, clusters %s, jobs %s" %
                           (timeout, pending, notrun, notdone))

    def load(self):
        if self.name != "csm":
            return
        import threading
        errs = []

        def one(c):
            try:
                load_data(self.pgm, c.replace("/", "."), SQL[c])
            except Exception as e:
                errs.append(e)
        ts = [threading.Thread(target=one, args=(c,)) for c in CLUSTERS]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errs:
            raise errs[0]
