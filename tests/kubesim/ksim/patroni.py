# Patroni, as it runs in each Spilo pod of a cluster, simulated by the cluster's operator worker: the
# leader lock (annotations of the <cluster> Endpoints, Patroni's use_endpoints mode, and <cluster>-config),
# a real PostgreSQL server per pod on its pod IP with the pod's own data directory (its PVC), replicas
# made by pg_basebackup from the leader as `standby` with the password the pod got from its Secret when
# it started (PGPASSWORD_STANDBY), then streaming; fail-over to an in-sync replica when the leader's pod
# goes; the spilo-role label and the `status` annotation Patroni keeps on each pod; and the pod's log
# (what `kubectl logs` shows of Patroni), served by the API server's pods/log.
import collections
import json
import os
import time

from . import util
from .controllers import PODS
from .pgmanager import PgError, lsn_int

ENDPOINTS = ("", "endpoints")
# Spilo's maximum_lag_on_failover: a replica further behind the leader's last position is not promoted.
MAX_LAG = 33554432
PGDATA = "/home/postgres/pgdata/pgroot/data"


def ordinal(pod):
    name = pod["metadata"]["name"]
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


class Member:
    """One pod's Patroni: its volume (idx), the environment its container started with, its state."""

    def __init__(self, pod, env):
        self.uid = pod["metadata"]["uid"]
        self.name = pod["metadata"]["name"]
        self.idx = ordinal(pod)
        self.ip = pod["status"]["podIP"]
        self.env = env
        self.state = "starting"          # Patroni's: starting, creating replica, running, stopped, ...
        self.role = "uninitialized"      # master | replica | uninitialized
        self.following = None            # the leader IP its primary_conninfo names
        self.next_try = 0.0
        self.timeline = 1


class Patroni:
    def __init__(self, cluster):
        self.c = cluster
        self.op = cluster.op
        self.members = {}                # pod uid -> Member
        self.leader = None               # Member holding the leader lock
        self.leader_idx = None           # the volume of the last leader (it has the newest data)
        self.transitions = 0

    # -------------------------------------------------------------- helpers
    @property
    def pgm(self):
        return self.op.pgm

    @property
    def key(self):
        return self.c.key

    def log(self, m, level, msg):
        """A line of the pod's log (Patroni's format), also in kubesim.log."""
        t = time.time()
        line = "%s,%03d %s: %s" % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)), int(t * 1000) % 1000,
                                   level, msg)
        self.op.logs.setdefault(m.uid, collections.deque(maxlen=400)).append(line)
        util.log("patroni %s/%s: %s %s" % (self.c.ns, m.name, level, msg))

    def retry_delay(self):
        return float(self.op.cfg.get("patroni_loop", 2.0))

    def conninfo(self, m, leader_ip):
        pw = m.env.get("PGPASSWORD_STANDBY")
        if pw is None:
            pw = self.c._password("standby") or ""
        user = m.env.get("PGUSER_STANDBY", "standby")

        def q(v):
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "host=%s port=5432 user=%s password=%s sslmode=prefer application_name=%s" % (
            leader_ip, q(user), q(pw), q(m.name))

    def sysid(self, idx):
        import subprocess
        r = subprocess.run([os.path.join(self.pgm.bindir, "pg_controldata"), self.pgm.datadir(self.key, idx)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, LC_ALL="C"))
        for ln in r.stdout.decode(errors="replace").splitlines():
            if ln.startswith("Database system identifier:"):
                return ln.split(":", 1)[1].strip()
        return None

    def query(self, m, sql):
        try:
            return self.pgm.psql(self.key, sql, idx=m.idx).strip()
        except PgError:
            return None

    def running(self, m):
        return self.pgm.running_ip(self.key, m.idx) is not None

    # -------------------------------------------------------------- the loop
    def step(self):
        pods = self.c.pods()
        live = {}
        for p in pods:
            st = p.get("status") or {}
            if p["metadata"].get("deletionTimestamp") or st.get("phase") != "Running" or not st.get("podIP"):
                continue
            live[p["metadata"]["uid"]] = p
        for uid in [u for u in self.members if u not in live]:
            self.member_gone(self.members[uid])
        for uid, p in sorted(live.items(), key=lambda kv: ordinal(kv[1])):
            if uid not in self.members:
                env = self.op.ctl.container_env(p).get("postgres", {})
                m = self.members[uid] = Member(p, env)
                self.log(m, "INFO", "Selected new K8s API server endpoint https://127.0.0.1:%s" % self.op.api.port)
                self.log(m, "INFO", "No PostgreSQL configuration items changed, nothing to reload.")
        if self.leader is None:
            self.elect()
        elif not self.running(self.leader):
            # its server died under it (a test killed it): Patroni starts it again
            m = self.leader
            self.log(m, "WARNING", "Postgresql is not running.")
            self.c.pg_up = False
            try:
                self.pgm.start(self.key, m.ip, settings=self.c.pg_settings(), idx=m.idx)
                self.c.pg_up = True
                self.log(m, "INFO", "started as a primary")
            except PgError as e:
                self.log(m, "ERROR", str(e))
        if self.leader is not None:
            for m in sorted(self.members.values(), key=lambda x: x.idx):
                if m is not self.leader:
                    self.replica(m)
        for p in live.values():
            self.label(p, self.members.get(p["metadata"]["uid"]))

    # -------------------------------------------------------------- leader
    def take_lock(self, m):
        self.leader = m
        self.leader_idx = m.idx
        m.role, m.state = "master", "running"
        self.transitions += 1
        self.pgm.set_master(self.key, m.idx)
        self.c.leader_uid, self.c.leader_name, self.c.pg_up = m.uid, m.name, True
        self.c.set_endpoint(m.ip)
        self.set_leader_annotations(m)
        self.log(m, "INFO", "acquired session lock as a leader")
        util.log("patroni: %s master is %s (%s)" % (self.key, m.name, m.ip))

    def release_lock(self):
        self.leader = None
        self.c.leader_uid = self.c.leader_name = None
        self.c.pg_up = False
        self.c.set_endpoint(None)
        self.set_leader_annotations(None)

    def elect(self):
        live = sorted(self.members.values(), key=lambda x: x.idx)
        if not live:
            return
        pgm = self.pgm
        have_data = [m for m in live if pgm.has_data(self.key, m.idx)]
        if not have_data and not self.c.bootstrapped():
            # a new cluster: the first member initialises it (Patroni's initialize race)
            m = live[0]
            self.log(m, "INFO", "Lock owner: None; I am %s" % m.name)
            self.log(m, "INFO", "trying to bootstrap a new cluster")
            fresh = pgm.ensure_data(self.key, m.idx)
            pgm.set_master(self.key, m.idx)
            pgm.start(self.key, m.ip, settings=self.c.pg_settings(), idx=m.idx)
            if fresh or not self.c.bootstrapped():
                self.c.spilo_bootstrap()
                self.c.bootstrap()
            self.set_config()
            self.take_lock(m)
            self.log(m, "INFO", "initialized a new cluster")
            return
        # an existing cluster without a leader: the last leader's volume has the newest data; a running
        # replica is promoted; else a member whose volume holds a primary's data starts as the leader
        m = next((x for x in have_data if x.idx == self.leader_idx and not pgm.is_standby_data(self.key, x.idx)),
                 None)
        if m is None:
            m = next((x for x in live if x.role == "replica" and self.running(x)), None)
            if m is not None:
                self.promote(m)
                return
            m = next((x for x in have_data if not pgm.is_standby_data(self.key, x.idx)), None)
        if m is None and have_data:
            # only a standby's data is left (a re-created cluster on kept volumes): the healthiest
            # member, alone, starts and is promoted
            m = have_data[0]
            pgm.unset_standby(self.key, m.idx)
        if m is None:
            for x in live:
                if time.time() >= x.next_try:
                    self.log(x, "INFO", "Lock owner: None; I am %s" % x.name)
                    self.log(x, "INFO", "waiting for leader to bootstrap")
                    x.next_try = time.time() + self.retry_delay()
            return
        self.log(m, "INFO", "Lock owner: None; I am %s" % m.name)
        self.log(m, "INFO", "starting as a secondary")
        pgm.set_master(self.key, m.idx)
        try:
            pgm.start(self.key, m.ip, settings=self.c.pg_settings(), idx=m.idx)
        except PgError as e:
            self.log(m, "ERROR", str(e))
            m.state = "start failed"
            return
        self.log(m, "INFO", "promoted self to leader by acquiring session lock")
        self.take_lock(m)

    def promote(self, m):
        self.log(m, "INFO", "Lock owner: None; I am %s" % m.name)
        self.log(m, "INFO", "promoted self to leader by acquiring session lock")
        try:
            self.pgm.promote(self.key, m.idx)
        except PgError as e:
            self.log(m, "ERROR", str(e))
            return False
        m.timeline += 1
        m.following = None
        self.take_lock(m)
        self.log(m, "INFO", "cleared rewind state after becoming the leader")
        return True

    def member_gone(self, m):
        """Its pod is terminating (or gone): Patroni stops PostgreSQL; a leader hands over to an
        in-sync replica, as Patroni's shutdown and the replicas' leader race do."""
        was_leader = m is self.leader
        self.log(m, "INFO", "Received SIGTERM, shutting down")
        # the pod may go (on_terminate) only once its server has stopped
        self.pgm.stop(self.key, idx=m.idx)
        del self.members[m.uid]
        if not was_leader:
            self.log(m, "INFO", "Lock owner: %s; I am %s" % (self.leader.name if self.leader else None, m.name))
            return
        util.log("patroni: %s leader %s is going away" % (self.key, m.name))
        final = self.pgm.checkpoint_lsn(self.key, m.idx)
        self.log(m, "INFO", "Leader key released")
        self.release_lock()
        best = None
        for r in sorted(self.members.values(), key=lambda x: x.idx):
            if r.role != "replica" or not self.running(r):
                continue
            got = self.query(r, "SELECT pg_last_wal_receive_lsn()")
            if not got or final is None:
                continue
            lag = max(0, final - lsn_int(got))
            if lag <= MAX_LAG:
                best = r
                break
            self.log(r, "INFO", "not healthy enough for leader race (%d bytes behind)" % lag)
        if best is not None:
            self.promote(best)

    # -------------------------------------------------------------- replicas
    def replica(self, m):
        pgm, leader = self.pgm, self.leader
        if self.running(m):
            if m.role == "replica" and m.following != leader.ip:
                # the leader changed: follow the new one (primary_conninfo is reloadable)
                pgm.set_standby(self.key, m.idx, self.conninfo(m, leader.ip))
                pgm.reload(self.key, m.idx)
                m.following, m.timeline = leader.ip, leader.timeline
                self.log(m, "INFO", "Lock owner: %s; I am %s" % (leader.name, m.name))
                self.log(m, "INFO", "following a different leader because i am not the healthiest node")
            return
        if m.role == "replica" and m.state == "running":
            self.log(m, "WARNING", "Postgresql is not running.")
            m.state = "stopped"
        if time.time() < m.next_try:
            return
        m.next_try = time.time() + self.retry_delay()
        self.log(m, "INFO", "Lock owner: %s; I am %s" % (leader.name, m.name))
        usable = pgm.has_data(self.key, m.idx) and pgm.is_standby_data(self.key, m.idx) and \
            self.sysid(m.idx) == self.sysid(leader.idx)
        if not usable:
            if pgm.has_data(self.key, m.idx):
                # Patroni would pg_rewind a former primary; kubesim takes a new base backup instead
                self.log(m, "INFO", "Removing data directory: %s" % PGDATA)
                pgm.remove_data(self.key, m.idx)
            self.log(m, "INFO", "trying to bootstrap from leader '%s'" % leader.name)
            m.state, m.role = "creating replica", "uninitialized"
            self.label(self.op.store.peek(PODS, self.c.ns, m.name), m)
            ok, out = pgm.basebackup(self.key, m.idx, leader.ip, m.env.get("PGUSER_STANDBY", "standby"),
                                     m.env.get("PGPASSWORD_STANDBY") or self.c._password("standby") or "",
                                     m.name)
            for ln in out.splitlines():
                self.op.logs.setdefault(m.uid, collections.deque(maxlen=400)).append(ln)
            if not ok:
                self.log(m, "ERROR", "Error creating replica using method basebackup: pg_basebackup exited with code=1")
                self.log(m, "ERROR", "failed to bootstrap from leader '%s'" % leader.name)
                self.log(m, "INFO", "Removing data directory: %s" % PGDATA)
                m.state = "stopped"
                return
            self.log(m, "INFO", "replica has been created using basebackup")
            self.log(m, "INFO", "bootstrapped from leader '%s'" % leader.name)
        pgm.set_standby(self.key, m.idx, self.conninfo(m, leader.ip))
        m.following = leader.ip
        try:
            pgm.start(self.key, m.ip, settings=self.c.pg_settings(), idx=m.idx)
        except PgError as e:
            self.log(m, "ERROR", str(e))
            m.state = "start failed"
            return
        m.state, m.role, m.timeline = "running", "replica", leader.timeline
        self.log(m, "INFO", "no action. I am (%s), a secondary, and following a leader (%s)" % (m.name, leader.name))

    # -------------------------------------------------------------- objects Patroni writes
    def label(self, pod, m):
        if pod is None:
            return
        role = None
        if m is not None and m is self.leader:
            role = "master"
        elif m is not None and m.role == "replica" and m.state == "running":
            role = "replica"
        status = None
        if m is not None:
            status = json.dumps({"conn_url": "postgres://%s:5432/postgres" % m.ip,
                                 "api_url": "http://%s:8008/patroni" % m.ip,
                                 "state": m.state, "role": m.role if m is not self.leader else "master",
                                 "version": "3.0.1", "timeline": m.timeline}, separators=(",", ":"))

        def fn(o):
            lab = o["metadata"].setdefault("labels", {})
            ann = o["metadata"].setdefault("annotations", {})
            if lab.get("spilo-role") == role and ann.get("status") == status:
                return False
            if role is None:
                lab.pop("spilo-role", None)
            else:
                lab["spilo-role"] = role
            if status is None:
                ann.pop("status", None)
            else:
                ann["status"] = status
        self.op.store.mutate(PODS, self.c.ns, pod["metadata"]["name"], fn)

    def set_leader_annotations(self, m):
        now = util.now_iso()

        def fn(o):
            ann = o["metadata"].setdefault("annotations", {})
            if m is None:
                if "leader" not in ann:
                    return False
                ann.pop("leader", None)
                return
            ann.update({"leader": m.name, "acquireTime": now, "renewTime": now, "ttl": "30",
                        "transitions": str(self.transitions)})
        self.op.store.mutate(ENDPOINTS, self.c.ns, self.c.name, fn)

    def set_config(self):
        """Patroni's <cluster>-config object: the initialize key (the system identifier) and the config."""
        name = self.c.name + "-config"
        ann = {"initialize": self.sysid(self.pgm.master_idx(self.key)) or "",
               "config": json.dumps({"loop_wait": 10, "ttl": 30, "retry_timeout": 10,
                                     "maximum_lag_on_failover": MAX_LAG,
                                     "postgresql": {"use_pg_rewind": True, "use_slots": True}}, separators=(",", ":"))}
        if self.op.store.peek(ENDPOINTS, self.c.ns, name) is None:
            self.c.create(ENDPOINTS, {"metadata": {"name": name, "labels": self.c.labels(), "annotations": ann},
                                      "subsets": []})

    # -------------------------------------------------------------- for the operator and admin ops
    def stop_all(self):
        for m in list(self.members.values()):
            self.pgm.stop(self.key, idx=m.idx)
        self.members.clear()
        self.release_lock()

    def gone(self, uid):
        return uid not in self.members

    def ready(self, uid):
        m = self.members.get(uid)
        return m is not None and m.state == "running" and self.running(m)

    def roles_ready(self, want):
        """The operator's create waits until every pod is labelled master or replica by Patroni."""
        if self.leader is None:
            return False
        n = sum(1 for m in self.members.values() if m is self.leader or (m.role == "replica" and m.state == "running"))
        return n >= want

    def replication(self):
        """Each replica as the leader sees it: [{pod, ip, role, state, streaming, lag_bytes}]."""
        out = []
        rows = {}
        if self.leader is not None and self.running(self.leader):
            got = self.query(self.leader, "SELECT application_name, state, "
                             "COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint "
                             "FROM pg_stat_replication") or ""
            for ln in got.splitlines():
                parts = ln.split("|")
                if len(parts) == 3:
                    rows[parts[0]] = (parts[1], int(parts[2]))
        for m in sorted(self.members.values(), key=lambda x: x.idx):
            r = rows.get(m.name)
            out.append({"pod": m.name, "ip": m.ip, "host": m.ip, "role": "master" if m is self.leader else m.role,
                        "state": m.state, "socket_dir": self.pgm.sockdir(self.key, m.idx),
                        "data_dir": self.pgm.datadir(self.key, m.idx),
                        "streaming": bool(r and r[0] == "streaming") if m is not self.leader else None,
                        "lag_bytes": (r[1] if r and r[1] >= 0 else None) if m is not self.leader else None})
        return out

    def caught_up(self):
        """Every replica streams and has replayed all the leader has written (the fixture's wait)."""
        reps = [m for m in self.members.values() if m is not self.leader]
        if not reps:
            return True
        st = {r["pod"]: r for r in self.replication()}
        return all(st.get(m.name, {}).get("streaming") and st[m.name].get("lag_bytes") == 0 for m in reps)


def pod_log(op, store, ns, name, params):
    """GET pods/NAME/log: the container's output (Patroni's lines for spilo pods); tailLines honoured."""
    p = store.peek(PODS, ns, name)
    if p is None:
        return None
    lines = list(op.logs.get(p["metadata"]["uid"]) or [])
    tail = params.get("tailLines")
    if tail is not None:
        try:
            n = int(tail)
            lines = lines[-n:] if n > 0 else []
        except ValueError:
            pass
    return "".join(ln + "\n" for ln in lines)

