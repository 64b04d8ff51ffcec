# The Zalando postgres-operator and Patroni, simulated: a postgresql object gets secrets, services, a PDB
# and an OnDelete StatefulSet; the elected master pod runs a real PostgreSQL server on its pod IP.
import base64
import re
import secrets as pysecrets
import string
import threading
import time

from . import spilo, util
from .controllers import PODS, PVCS, STS, pod_ready

PGS = ("acid.zalan.do", "postgresqls")
SECRETS = ("", "secrets")
SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
PDBS = ("policy", "poddisruptionbudgets")
ANNOTATION = "kubesim.pgr/postgres"


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

    def ready_gate(self, p):
        w = self._worker_for_pod(p)
        # The master is ready once its server accepts connections; a replica once a master runs
        # (it would be streaming from it).
        return w is not None and w.leader_uid is not None and w.pg_up

    def on_terminate(self, p):
        w = self._worker_for_pod(p)
        if w is None:
            return True
        w.wake.set()
        return w.leader_uid != p["metadata"]["uid"]

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
        w.resync_requested = True
        w.wake.set()
        deadline = time.time() + 20
        while w.resync_requested and time.time() < deadline:
            time.sleep(0.05)
        return not w.resync_requested


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
        if self.synced_gen != gen or self.resync_requested:
            first = self.synced_gen is None
            if not first and phase == "Running":
                self.set_status("Updating")
                phase = "Updating"
            self.sync(pg, full=first or self.resync_requested)
            self.synced_gen = gen
            if self.resync_requested:
                self.resync_roles()
                self.resync_requested = False
            if not first and phase == "Updating":
                time.sleep(self.op.cfg.get("operator_delay", 0.2))
                self.set_status("Running")
                phase = "Running"
        self.patroni()
        if phase in ("Creating", "CreateFailed", "SyncFailed", "UpdateFailed", "Invalid"):
            pods = self.pods()
            want = self.spec.get("numberOfInstances", 1)
            ready = [p for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
            if self.pg_up and len(ready) >= want:
                self.set_status("Running")
            elif phase == "Creating" and time.time() - self.created_at > self.op.cfg.get("create_timeout", 120):
                self.set_status("CreateFailed")
        return False

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
                pw = "".join(pysecrets.choice(string.ascii_letters + string.digits) for _ in range(64))
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
                                                                       {"name": "PGROOT", "value": "/home/postgres/pgdata/pgroot"}],
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
        pgm = self.op.pgm
        pods = self.pods()
        byuid = {p["metadata"]["uid"]: p for p in pods}
        leader = byuid.get(self.leader_uid)
        if self.leader_uid and (leader is None or leader["metadata"].get("deletionTimestamp")
                                or leader.get("status", {}).get("phase") != "Running"):
            util.log("patroni: %s leader %s is going away" % (self.key, self.leader_name))
            pgm.stop(self.key)
            self.pg_up = False
            self.leader_uid = self.leader_name = None
            self.set_endpoint(None)
        candidates = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                      and not p["metadata"].get("deletionTimestamp") and p.get("status", {}).get("podIP")]
        if self.leader_uid is None and candidates:
            p = candidates[0]
            ip = p["status"]["podIP"]
            fresh = pgm.ensure_data(self.key)
            pgm.start(self.key, ip, settings=self.pg_settings())
            if fresh or not self.bootstrapped():
                self.spilo_bootstrap()
                self.bootstrap()
            self.leader_uid, self.leader_name = p["metadata"]["uid"], p["metadata"]["name"]
            self.pg_up = True
            self.set_endpoint(ip)
            util.log("patroni: %s master is %s (%s)" % (self.key, self.leader_name, ip))
        elif self.leader_uid and not pgm.running_ip(self.key):
            # The server died under us (killed by a test): restart it on the same pod.
            util.log("patroni: %s server not running, restarting" % self.key)
            self.pg_up = False
            pgm.start(self.key, leader["status"]["podIP"], settings=self.pg_settings())
            self.pg_up = True
        for p in pods:
            if p["metadata"].get("deletionTimestamp") or p.get("status", {}).get("phase") != "Running":
                continue
            is_leader = p["metadata"]["uid"] == self.leader_uid
            role = "master" if is_leader else "replica"
            note = ("real PostgreSQL server on %s:5432" % p["status"]["podIP"] if is_leader else
                    "simulated replica: no server process; it serves nothing and holds no data")

            def fn(o, role=role, note=note):
                lab = o["metadata"].setdefault("labels", {})
                ann = o["metadata"].setdefault("annotations", {})
                if lab.get("spilo-role") == role and ann.get(ANNOTATION) == note:
                    return False
                lab["spilo-role"] = role
                ann[ANNOTATION] = note
            self.op.store.mutate(PODS, self.ns, p["metadata"]["name"], fn)

    def pg_settings(self):
        """Server settings of the cluster's spec: password_encryption is PostgreSQL's default for the
        spec's major version (md5 up to 13, scram-sha-256 from 14), as Spilo leaves it."""
        try:
            major = int(str((self.spec.get("postgresql") or {}).get("version", "15")).split(".")[0])
        except ValueError:
            major = 15
        return {"password_encryption": "md5" if major <= 13 else "scram-sha-256"}

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

    def resync_roles(self):
        # The operator's periodic Sync: secrets that are missing are re-created, DB passwords follow the secrets.
        if self.pg_up:
            self.bootstrap()

    # -------------------------------------------------------------- delete
    def teardown(self):
        store, ctl, pgm = self.op.store, self.op.ctl, self.op.pgm
        util.log("operator: tearing down", self.key)
        sts = store.get(STS, self.ns, self.name)
        if sts is not None:
            ctl.delete(STS, sts, "Orphan")
            self._wait(lambda: store.peek(STS, self.ns, self.name) is None, 30)
        for p in self.pods():
            if p["metadata"]["uid"] == self.leader_uid:
                pgm.stop(self.key)
                self.pg_up = False
                self.leader_uid = self.leader_name = None
            ctl.delete(PODS, p)
            self._wait(lambda p=p: store.peek(PODS, self.ns, p["metadata"]["name"]) is None, 60)
        pgm.stop(self.key)
        self.pg_up = False
        self.leader_uid = self.leader_name = None
        items, _ = store.list(PVCS, self.ns)
        for pvc in items:
            lab = pvc["metadata"].get("labels") or {}
            if lab.get("cluster-name") == self.name and lab.get("application") == "spilo":
                ctl.delete(PVCS, pvc)
        pgm.drop(self.key)
        for user in cluster_users(self.spec):
            s = store.get(SECRETS, self.ns, secret_name(user, self.name))
            if s:
                ctl.delete(SECRETS, s)
        for rkey, n in ((PDBS, "postgres-%s-pdb" % self.name), (ENDPOINTS, self.name), (SERVICES, self.name),
                        (SERVICES, self.name + "-repl")):
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
