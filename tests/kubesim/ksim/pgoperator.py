# The Zalando postgres-operator and Patroni, simulated: a postgresql object gets secrets, services, a PDB
# and an OnDelete StatefulSet; the elected master pod runs a real PostgreSQL server on its pod IP.
import base64
import re
import secrets as pysecrets
import string
import threading
import time

from . import spilo, util
from .controllers import PODS, PVCS, STS
from .patroni import Patroni, pod_log

PGS = ("acid.zalan.do", "postgresqls")
SECRETS = ("", "secrets")
SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
PDBS = ("policy", "poddisruptionbudgets")


def secret_name(user, cluster):
    # CSM's secret_name_template {username}.{cluster}.credentials; '_' is not valid in a name.
    return "%s.%s.credentials" % (user.replace("_", "-"), cluster)


def cluster_users(spec):
    return ["postgres", "standby"] + [u for u in (spec.get("users") or {}) if u not in ("postgres", "standby")]


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


def qident(s):
    return '"' + s.replace('"', '""') + '"'


def qlit(s):
    return "'" + s.replace("'", "''") + "'"


def _ordinal(pod):
    m = re.search(r"-(\d+)$", pod["metadata"]["name"])
    return int(m.group(1)) if m else 1 << 30


class Operator:
    def __init__(self, api, ctl, pgm, cfg):
        self.api, self.store, self.ctl, self.pgm, self.cfg = api, api.store, ctl, pgm, cfg
        self.workers = {}
        self.lock = threading.Lock()
        self.fail_rules = []       # admin: [{"match": regex, "status": "CreateFailed"}]
        self.stopping = False
        self.logs = {}             # pod uid -> its container's log lines (pods/log)
        api.pod_log = lambda ns, name, q: pod_log(self, self.store, ns, name, q)
        ctl.extra.append(self.reconcile)
        gate, term = ctl.ready_gate, ctl.on_terminate
        ctl.ready_gate = lambda p: self.ready_gate(p) if self._spilo(p) else gate(p)
        ctl.on_terminate = lambda p: self.on_terminate(p) if self._spilo(p) else term(p)
        self.store.listeners.append(self._wake_all)

    def _wake_all(self, *a):
        for w in list(self.workers.values()):
            w.wake.set()

    @staticmethod
    def _spilo(p):
        return (p["metadata"].get("labels") or {}).get("application") == "spilo"

    def _worker_for_pod(self, p):
        labels = p["metadata"].get("labels") or {}
        return self.workers.get((p["metadata"]["namespace"], labels.get("cluster-name")))

    def config(self):
        """The operator's settings (enable_readiness_probe, enable_persistent_volume_claim_deletion, ...)."""
        from . import opconfig
        return opconfig.read(self.store)

    def ready_gate(self, p):
        # enable_readiness_probe (off by default, as in the operator): without the probe a pod is Ready
        # once its container started, before PostgreSQL accepts connections; with it (Patroni's
        # /readiness), once the pod's own server runs as the leader or as a replica.
        if not self.config()["enable_readiness_probe"]:
            return True
        w = self._worker_for_pod(p)
        return w is not None and w.patroni_sim.ready(p["metadata"]["uid"])

    def on_terminate(self, p):
        # A terminating spilo pod goes once Patroni has stopped its server (and handed the lock over).
        w = self._worker_for_pod(p)
        if w is None:
            return True
        w.wake.set()
        return w.patroni_sim.gone(p["metadata"]["uid"])

    def fail_for(self, ns, name):
        for r in self.fail_rules:
            if re.search(r.get("match", ""), "%s/%s" % (ns, name)):
                return r.get("status", "CreateFailed")
        return None

    def reconcile(self):
        items, _ = self.store.list(PGS, copy=False)
        with self.lock:
            for pg in items:
                key = (pg["metadata"]["namespace"], pg["metadata"]["name"])
                if key not in self.workers:
                    w = Cluster(self, *key)
                    self.workers[key] = w
                    w.start()

    def stop(self):
        self.stopping = True
        for w in list(self.workers.values()):
            w.wake.set()
        for w in list(self.workers.values()):
            w.join(timeout=5)

    def resync(self, ns, name):
        w = self.workers.get((ns, name))
        if w is None:
            raise KeyError("%s/%s" % (ns, name))
        w.last_sync = None
        w.resync_requested = True
        w.wake.set()
        deadline = time.time() + 20
        while w.resync_requested and time.time() < deadline:
            time.sleep(0.05)
        return w.last_sync


class Cluster(threading.Thread):
    """One worker per postgresql object, like the operator's per-cluster event queue."""

    def __init__(self, op, ns, name):
        super().__init__(name="pg-%s-%s" % (ns, name), daemon=True)
        self.op, self.ns, self.name = op, ns, name
        self.key = "%s.%s" % (ns, name)
        self.wake = threading.Event()
        self.uid = None
        self.spec = {}
        self.synced_gen = None
        self.leader_uid = None
        self.leader_name = None
        self.pg_up = False
        self.created_at = time.time()
        self.resync_requested = False
        self.error = None
        self.patroni_sim = Patroni(self)
        self.mem_pw = {}                 # the passwords the operator holds in memory (from the secrets)
        self.next_sync = None            # when the periodic Sync runs next (resync/repair period)
        self.create_login_failed = False
        self.last_sync = None

    # -------------------------------------------------------------- loop
    def run(self):
        while not self.op.stopping:
            # Any store write wakes us; the timeout only paces checks such as create_timeout.
            self.wake.wait(0.5)
            self.wake.clear()
            try:
                if self.step():
                    break
            except Exception:
                import traceback
                util.log("operator %s error: %s" % (self.key, traceback.format_exc()))
                time.sleep(0.5)
        with self.op.lock:
            if self.op.workers.get((self.ns, self.name)) is self and not self.op.stopping:
                del self.op.workers[(self.ns, self.name)]

    def step(self):
        store = self.op.store
        pg = store.get(PGS, self.ns, self.name)
        if self.uid and (pg is None or pg["metadata"]["uid"] != self.uid):
            self.teardown()
            self.uid = None
        if pg is None:
            return True
        if pg["metadata"].get("deletionTimestamp"):
            return False
        if self.uid is None:
            self.uid = pg["metadata"]["uid"]
            self.created_at = time.time()
            self.synced_gen = None
            util.log("operator: new cluster", self.key)
        self.spec = pg.get("spec") or {}
        fail = self.op.fail_for(self.ns, self.name)
        phase = (pg.get("status") or {}).get("PostgresClusterStatus")
        if fail:
            if phase != fail:
                self.set_status(fail)
            return False
        if not phase:
            self.set_status("Creating")
            phase = "Creating"
            time.sleep(self.op.cfg.get("operator_delay", 0.2))
        gen = pg["metadata"].get("generation")
        if self.synced_gen != gen:
            first = self.synced_gen is None
            if not first and phase != "Creating":
                # an Update (spec change): Updating, then Running when it is done, whatever came before
                self.set_status("Updating")
                phase = "Updating"
            self.sync(pg, full=first)
            self.synced_gen = gen
            if not first and phase == "Updating":
                time.sleep(self.op.cfg.get("operator_delay", 0.2))
                self.set_status("Running")
                phase = "Running"
        self.patroni()
        from . import opsync
        if phase in ("Creating", "CreateFailed", "UpdateFailed", "Invalid") and not self.create_login_failed:
            want = self.spec.get("numberOfInstances", 1)
            # the operator's create waits until Patroni has labelled every pod master or replica, then
            # creates the roles logged in as postgres over TLS with the password it holds
            if self.pg_up and self.patroni_sim.roles_ready(want):
                ok, msg, _ = opsync.sync_roles(self)
                cfg = self.op.config()
                if ok:
                    self.set_status("Running")
                    self.next_sync = time.time() + cfg["resync_period"]
                else:
                    util.log("operator: %s could not create users: %s" % (self.key, msg))
                    self.create_login_failed = True
                    self.next_sync = time.time() + min(cfg["repair_period"], cfg["resync_period"])
                    self.set_status("CreateFailed")
            elif phase == "Creating" and time.time() - self.created_at > self.op.cfg.get("create_timeout", 120):
                self.set_status("CreateFailed")
        if self.resync_requested or (self.next_sync is not None and time.time() >= self.next_sync):
            opsync.periodic(self)
            self.resync_requested = False
        return False

    def phase(self):
        pg = self.op.store.peek(PGS, self.ns, self.name)
        return ((pg or {}).get("status") or {}).get("PostgresClusterStatus")

    def set_status(self, phase):
        def fn(o):
            if (o.get("status") or {}).get("PostgresClusterStatus") == phase:
                return False
            o["status"] = {"PostgresClusterStatus": phase}
        self.op.store.mutate(PGS, self.ns, self.name, fn)
        util.log("operator: %s status %s" % (self.key, phase))

    def labels(self):
        return {"application": "spilo", "cluster-name": self.name, "team": self.spec.get("teamId", "")}

    def pods(self):
        items, _ = self.op.store.list(PODS, self.ns, copy=False)
        return sorted((p for p in items if (p["metadata"].get("labels") or {}).get("cluster-name") == self.name
                       and (p["metadata"].get("labels") or {}).get("application") == "spilo"), key=_ordinal)

    def create(self, rkey, obj):
        if self.op.store.peek(rkey, self.ns, obj["metadata"]["name"]) is None:
            obj["metadata"]["namespace"] = self.ns
            self.op.ctl.create(rkey, obj)

    # -------------------------------------------------------------- operator sync
    def sync(self, pg, full):
        spec, name, labels = self.spec, self.name, self.labels()
        team = spec.get("teamId", "")
        if full:
            for user in cluster_users(spec):
                # an existing secret is adopted (its password is the one the operator holds)
                pw = self._password(user) or \
                    "".join(pysecrets.choice(string.ascii_letters + string.digits) for _ in range(64))
                self.mem_pw[user] = pw
                self.create(SECRETS, {"metadata": {"name": secret_name(user, name), "labels": dict(labels)},
                                      "type": "Opaque", "data": {"username": b64(user), "password": b64(pw)}})
            self.create(ENDPOINTS, {"metadata": {"name": name, "labels": dict(labels, **{"spilo-role": "master"})},
                                    "subsets": []})
            self.create(SERVICES, {"metadata": {"name": name, "labels": dict(labels, **{"spilo-role": "master"})},
                                   "spec": {"type": "ClusterIP", "ports": [{"name": "postgresql", "port": 5432,
                                                                            "targetPort": 5432}]}})
            self.create(SERVICES, {"metadata": {"name": name + "-repl",
                                                "labels": dict(labels, **{"spilo-role": "replica"})},
                                   "spec": {"type": "ClusterIP", "ports": [{"name": "postgresql", "port": 5432,
                                                                            "targetPort": 5432}],
                                            "selector": {"application": "spilo", "cluster-name": name,
                                                         "spilo-role": "replica"}}})
            self.create(PDBS, {"metadata": {"name": "postgres-%s-pdb" % name, "labels": dict(labels)},
                               "spec": {"minAvailable": 1, "selector": {"matchLabels": {
                                   "spilo-role": "master", "cluster-name": name}}}})
        sts = self.op.store.peek(STS, self.ns, name)
        n = spec.get("numberOfInstances", 1)
        if sts is None:
            img = "artifactory.algol60.net/csm-docker/stable/spilo:%s-3.0.1" % \
                  (spec.get("postgresql") or {}).get("version", "15")
            self.create(STS, {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {"replicas": n, "serviceName": name, "podManagementPolicy": "OrderedReady",
                         "updateStrategy": {"type": "OnDelete"},
                         "selector": {"matchLabels": {"application": "spilo", "cluster-name": name}},
                         "template": {"metadata": {"labels": dict(labels)},
                                      "spec": {"serviceAccountName": "postgres-pod",
                                               "terminationGracePeriodSeconds": 300,
                                               "containers": [{"name": "postgres", "image": img,
                                                               "ports": [{"containerPort": 8008, "protocol": "TCP"},
                                                                         {"containerPort": 5432, "protocol": "TCP"},
                                                                         {"containerPort": 8080, "protocol": "TCP"}],
                                                               "env": [{"name": "SCOPE", "value": name},
                                                                       {"name": "PGROOT", "value": "/home/postgres/pgdata/pgroot"},
                                                                       {"name": "PGUSER_SUPERUSER", "value": "postgres"},
                                                                       {"name": "PGPASSWORD_SUPERUSER", "valueFrom": {"secretKeyRef": {
                                                                           "name": secret_name("postgres", name), "key": "password"}}},
                                                                       {"name": "PGUSER_STANDBY", "value": "standby"},
                                                                       {"name": "PGPASSWORD_STANDBY", "valueFrom": {"secretKeyRef": {
                                                                           "name": secret_name("standby", name), "key": "password"}}}],
                                                               "volumeMounts": [{"name": "pgdata",
                                                                                 "mountPath": "/home/postgres/pgdata"}]}]}},
                         "volumeClaimTemplates": [{"metadata": {"name": "pgdata"},
                                                   "spec": {"accessModes": ["ReadWriteOnce"],
                                                            "resources": {"requests": {"storage": (spec.get("volume") or {}).get("size", "1Gi")}}}}]}})
        elif sts["spec"].get("replicas") != n:
            def fn(o):
                o["spec"]["replicas"] = n
            self.op.store.mutate(STS, self.ns, name, fn, generation=True)
            util.log("operator: %s statefulset replicas -> %d" % (self.key, n))

    # -------------------------------------------------------------- Patroni
    def patroni(self):
        self.patroni_sim.step()

    def pg_settings(self):
        """Server settings of the cluster's spec: password_encryption is PostgreSQL's default for the
        spec's major version (md5 up to 13, scram-sha-256 from 14), as Spilo leaves it."""
        try:
            major = int(str((self.spec.get("postgresql") or {}).get("version", "15")).split(".")[0])
        except ValueError:
            major = 15
        # Patroni keeps a replication slot per member so a replica never loses the WAL it needs;
        # kubesim has no slots and keeps WAL instead (wal_keep_size), which serves the same end here
        return {"password_encryption": "md5" if major <= 13 else "scram-sha-256", "wal_keep_size": "128MB"}

    def set_endpoint(self, ip):
        subsets = [{"addresses": [{"ip": ip}], "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}]}] \
            if ip else []

        def fn(o):
            if o.get("subsets") == subsets:
                return False
            o["subsets"] = subsets
        self.op.store.mutate(ENDPOINTS, self.ns, self.name, fn)

    def bootstrapped(self):
        import os
        return os.path.exists(self.op.pgm.cdir(self.key) + "/bootstrapped")

    def spilo_bootstrap(self):
        """Spilo's post_init: its roles, extensions and schemas, once per new data directory."""
        import os
        marker = self.op.pgm.cdir(self.key) + "/spilo-bootstrapped"
        if os.path.exists(marker):
            return
        spilo.bootstrap(lambda sql, db: self.op.pgm.psql(self.key, sql, db=db))
        with open(marker, "w") as f:
            f.write("ok\n")
        util.log("spilo: %s bootstrap objects created" % self.key)

    def _password(self, user):
        s = self.op.store.peek(SECRETS, self.ns, secret_name(user, self.name))
        if s is None or "password" not in (s.get("data") or {}):
            return None
        return unb64(s["data"]["password"])

    def bootstrap(self):
        """What Spilo's bootstrap plus the operator's first role/database sync leave in a new cluster."""
        flags = {"superuser": "SUPERUSER", "inherit": "INHERIT", "login": "LOGIN", "nologin": "NOLOGIN",
                 "createrole": "CREATEROLE", "createdb": "CREATEDB", "replication": "REPLICATION",
                 "bypassrls": "BYPASSRLS"}
        sql = []
        for user in cluster_users(self.spec):
            pw = self._password(user)
            opts = ["LOGIN"]
            if user == "standby":
                opts.append("REPLICATION")
            for f in (self.spec.get("users") or {}).get(user) or []:
                if f.lower() in flags:
                    opts.append(flags[f.lower()])
            if user != "postgres":
                sql.append("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN "
                           "CREATE ROLE %s; END IF; END $$;" % (qlit(user), qident(user)))
            sql.append("ALTER ROLE %s WITH %s%s;" % (qident(user), " ".join(opts),
                                                     " PASSWORD %s" % qlit(pw) if pw else ""))
        self.op.pgm.psql(self.key, "\n".join(sql))
        existing = set(self.op.pgm.psql(self.key, "SELECT datname FROM pg_database").split())
        for db, owner in (self.spec.get("databases") or {}).items():
            if db not in existing:
                self.op.pgm.psql(self.key, "CREATE DATABASE %s OWNER %s;" % (qident(db), qident(owner)))
        with open(self.op.pgm.cdir(self.key) + "/bootstrapped", "w") as f:
            f.write("ok\n")
        util.log("operator: %s roles and databases created" % self.key)

    # -------------------------------------------------------------- delete
    def teardown(self):
        store, ctl, pgm = self.op.store, self.op.ctl, self.op.pgm
        util.log("operator: tearing down", self.key)
        sts = store.get(STS, self.ns, self.name)
        if sts is not None:
            ctl.delete(STS, sts, "Orphan")
            self._wait(lambda: store.peek(STS, self.ns, self.name) is None, 30)
        # every member stops (no fail-over from one doomed pod to the next), then the pods go one by one
        self.patroni_sim.stop_all()
        for p in self.pods():
            ctl.delete(PODS, p)
            self._wait(lambda p=p: store.peek(PODS, self.ns, p["metadata"]["name"]) is None, 60)
        pgm.stop(self.key)
        cfg = self.op.config()
        if cfg["enable_persistent_volume_claim_deletion"]:
            items, _ = store.list(PVCS, self.ns)
            for pvc in items:
                lab = pvc["metadata"].get("labels") or {}
                if lab.get("cluster-name") == self.name and lab.get("application") == "spilo":
                    ctl.delete(PVCS, pvc)
            pgm.drop(self.key)
        else:
            # the volumes stay, and with them the data: a cluster of the same name starts on it again
            util.log("operator: %s keeps its volumes (enable_persistent_volume_claim_deletion is false)" % self.key)
        if cfg["enable_secrets_deletion"]:
            for user in cluster_users(self.spec):
                s = store.get(SECRETS, self.ns, secret_name(user, self.name))
                if s:
                    ctl.delete(SECRETS, s)
        for rkey, n in ((PDBS, "postgres-%s-pdb" % self.name), (ENDPOINTS, self.name),
                        (ENDPOINTS, self.name + "-config"), (SERVICES, self.name), (SERVICES, self.name + "-repl")):
            o = store.get(rkey, self.ns, n)
            if o:
                ctl.delete(rkey, o)
        util.log("operator: %s deleted" % self.key)

    def _wait(self, cond, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and not self.op.stopping:
            if cond():
                return True
            time.sleep(0.05)
        return False
