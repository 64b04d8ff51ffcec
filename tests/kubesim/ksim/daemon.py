# The background process `kubesim up` starts: picks a loopback /16, makes the PKI, serves the API,
# runs controllers/operator/postgres, applies the fixture, answers admin ops, and cleans up on SIGTERM.
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

from . import apiserver, execws, pki, podlog, util
from .controllers import Controllers
from .fixture import Fixture
from .pgoperator import Operator, secret_name, cluster_users, SECRETS
from .pgmanager import PgManager

DEFAULT_TIMINGS = {"pod_start": 0.3, "pod_ready": 0.2, "job_duration": 1.0, "grace": 0.2,
                   "operator_delay": 0.1, "create_timeout": 120.0, "bookmark_interval": 5.0, "tick": 0.05,
                   "patroni_loop": 2.0, "exec_ping": 5.0}
TIMING_ENV = {k: "KUBESIM_" + k.upper() for k in DEFAULT_TIMINGS}


def claim_net(want=None):
    """Reserve a 127.N.0.0/16 by binding 127.N.255.254:47999 for the life of the process
    (the kernel releases it when we die, so a crashed kubesim never leaks its claim)."""
    cands = [int(want.split(".")[1])] if want else random.sample(range(16, 251), 235)
    for n in cands:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.%d.255.254" % n, 47999))
            return "127.%d" % n, s
        except OSError:
            s.close()
            # 5432 on the first pod IP in use means someone else's servers live there too.
    raise SystemExit("kubesim: no free 127.N.0.0/16 network (wanted %s)" % want)


def pg_root(d):
    """PostgreSQL data must be reachable by the postgres user; DIR may sit under a 0700 directory."""
    root = os.path.join(d, "pg")
    if os.geteuid() != 0:
        return root
    os.chmod(d, os.stat(d).st_mode | 0o711)
    os.makedirs(root, exist_ok=True)
    r = subprocess.run(["test", "-x", root], user="postgres", stdin=subprocess.DEVNULL)
    if r.returncode == 0:
        return root
    os.rmdir(root)
    import tempfile
    alt = tempfile.mkdtemp(prefix="kubesim-pg-")
    os.chmod(alt, 0o711)
    os.symlink(alt, root)
    return alt


def serve(d, args):
    d = os.path.abspath(d)
    util.set_log_file(os.path.join(d, "kubesim.log"))
    with open(os.path.join(d, "kubesim.pid"), "w") as f:
        f.write("%d\n" % os.getpid())
    cfg = dict(DEFAULT_TIMINGS)
    for k, env in TIMING_ENV.items():
        if os.environ.get(env):
            cfg[k] = float(os.environ[env])
    for kv in args.timing or []:
        k, v = kv.split("=", 1)
        if k not in cfg:
            raise SystemExit("kubesim: unknown timing %r (known: %s)" % (k, ", ".join(sorted(cfg))))
        cfg[k] = float(v)
    net, claim = claim_net(args.net)
    cfg.update(net=net, token=pki.new_token(), admin_token=pki.new_token())
    util.log("starting in %s, net %s.0.0/16, timings %s" % (d, net, {k: cfg[k] for k in DEFAULT_TIMINGS}))
    ca, crt, key = pki.make_pki(os.path.join(d, "pki"))

    from . import store as storemod
    store = storemod.Store()
    api = apiserver.Api(store, cfg)
    server = apiserver.Server(api, crt, key)
    ctl = Controllers(api, cfg)
    pgm = PgManager(pg_root(d))
    op = Operator(api, ctl, pgm, cfg)
    execenv = execws.install(api, op, pgm)
    fx = Fixture(args.fixture, ctl, op, pgm, net)
    register_admin(api, ctl, op, pgm, cfg, d)
    podlog.install(api, pgm)

    stopping = threading.Event()

    def shutdown(*_):
        if stopping.is_set():
            return
        stopping.set()
        util.log("shutting down")
        server.stopping = True
        ctl.stop.set()
        op.stop()
        execws.stop_all(execenv)
        pgm.stop_all()
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)

    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    pki.write_client_files(d, api.port, ca, cfg["token"], cfg["admin_token"], net, os.path.join(d, "kubesim.log"))
    state = {"pid": os.getpid(), "net": net, "port": api.port, "pg_root": pgm.root, "fixture": args.fixture,
             "sock_link": pgm.sock_link}
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump(state, f, indent=2)
    for a in args.admin or []:
        apply_admin(api, a)
    try:
        t0 = time.time()
        fx.create_base()
        from . import opconfig
        overrides = dict(kv.split("=", 1) for kv in getattr(args, "operator", None) or [])
        opconfig.install(ctl, args.fixture, overrides)
        ctl.start()
        fx.create()
        fx.wait_ready(float(os.environ.get("KUBESIM_UP_TIMEOUT", "90")))
        fx.load()
        # replicas have replayed the fixture's data before `up` returns (a backup may read one)
        deadline = time.time() + 60
        while time.time() < deadline and not all(w.patroni_sim.caught_up() for w in list(op.workers.values())):
            time.sleep(0.3)
        util.log("fixture %s ready in %.1fs" % (args.fixture, time.time() - t0))
        with open(os.path.join(d, "ready"), "w") as f:
            f.write("ok\n")
    except Exception as e:
        import traceback
        util.log("startup failed:", traceback.format_exc())
        with open(os.path.join(d, "failed"), "w") as f:
            f.write("%s\n" % e)
        shutdown()
    # A sandbox whose directory was removed from under it (rm -rf) can no longer be brought down by
    # `kubesim down DIR`: it stops itself, PostgreSQL servers included, rather than run on orphaned.
    while not stopping.is_set():
        stopping.wait(1)
        if not stopping.is_set() and not os.path.isdir(d):
            util.log("%s is gone: shutting down" % d)
            shutdown()
    time.sleep(0.2)
    pgm.stop_all()
    claim.close()
    util.log("stopped")


def apply_admin(api, text):
    req = json.loads(text)
    for r in (req if isinstance(req, list) else [req]):
        api.admin_ops[r["op"]](r)


def register_admin(api, ctl, op, pgm, cfg, d):
    ops = api.admin_ops

    def fault(r):
        kind = r.get("kind", "error")
        if kind not in ("error", "cut_watch", "gone", "stall"):
            raise ValueError("fault kind must be error, cut_watch, gone or stall")
        api.faults.add(dict(r, kind=kind))
        return {"ok": True, "faults": api.faults.describe()}
    ops["fault"] = fault
    ops["clear_faults"] = lambda r: (api.faults.clear(), {"ok": True})[1]
    ops["faults"] = lambda r: {"faults": api.faults.describe()}

    def expire(r):
        api.store.compact()
        return {"ok": True, "compacted_rv": api.store.compacted_rv}
    ops["expire"] = expire

    def timings(r):
        for k, v in r.items():
            if k != "op":
                if k not in DEFAULT_TIMINGS:
                    raise ValueError("unknown timing %r" % k)
                cfg[k] = float(v)
        return {k: cfg[k] for k in DEFAULT_TIMINGS}
    ops["timings"] = timings

    def pod_timing(r):
        ctl.pod_rules.append({k: v for k, v in r.items() if k != "op"})
        return {"ok": True, "rules": ctl.pod_rules}
    ops["pod_timing"] = pod_timing
    ops["clear_pod_timing"] = lambda r: (ctl.pod_rules.clear(), {"ok": True})[1]

    def job_fail(r):
        ctl.job_fail.append(r.get("match", ""))
        return {"ok": True, "job_fail": ctl.job_fail}
    ops["job_fail"] = job_fail
    ops["job_ok"] = lambda r: (ctl.job_fail.clear(), {"ok": True})[1]

    def operator_fail(r):
        op.fail_rules.append({"match": r.get("match", ""), "status": r.get("status", "CreateFailed")})
        op._wake_all()
        return {"ok": True, "rules": op.fail_rules}
    ops["operator_fail"] = operator_fail
    ops["operator_ok"] = lambda r: (op.fail_rules.clear(), op._wake_all(), {"ok": True})[2]

    def _token(r):
        t = r.get("token", cfg["token"])
        if t not in api.tokens:
            raise ValueError("unknown token")
        return api.tokens[t]

    def deny(r):
        tok = _token(r)
        tok.setdefault("deny", []).append({k: r[k] for k in ("verb", "group", "resource", "namespace", "name")
                                           if k in r})
        return {"ok": True, "deny": tok["deny"]}
    ops["deny"] = deny

    def allow_all(r):
        _token(r)["deny"] = []
        return {"ok": True}
    ops["allow_all"] = allow_all

    def add_token(r):
        api.tokens[r["token"]] = {"user": r.get("user", "test-user"), "groups": [], "deny": list(r.get("deny", []))}
        return {"ok": True}
    ops["add_token"] = add_token

    def resync(r):
        ns, name = find_cluster(r["cluster"], r.get("namespace"))
        res = op.resync(ns, name)
        return dict(res or {"ok": False, "message": "the sync did not run within 20 s"})
    ops["sync"] = resync

    def find_cluster(name, ns=None):
        for (wns, wname), w in list(op.workers.items()):
            if wname == name and (ns is None or ns == wns):
                return wns, wname
        raise ValueError("no postgresql cluster %r" % name)

    def cluster(r):
        ns, name = find_cluster(r["cluster"], r.get("namespace"))
        w = op.workers[(ns, name)]
        secrets = []
        for user in cluster_users(w.spec):
            s = api.store.get(SECRETS, ns, secret_name(user, name))
            if s:
                secrets.append(s)
        pw = w._password("postgres")
        # members: every pod's server as the leader sees it (replicas: ip, streaming, lag_bytes)
        members = w.patroni_sim.replication()
        return {"namespace": ns, "name": name, "master_pod": w.leader_name, "host": pgm.running_ip(w.key),
                "port": 5432, "socket_dir": pgm.sockdir(w.key), "data_dir": pgm.datadir(w.key),
                "postgres_password": pw, "secrets": secrets, "uid": w.uid,
                "users": list((w.spec.get("users") or {}).keys()), "members": members,
                "replicas": [m for m in members if m["role"] != "master"]}
    ops["cluster"] = cluster

    def state(r):
        out = {"net": cfg["net"], "port": api.port, "dir": d, "clusters": {}, "faults": api.faults.describe(),
               "timings": {k: cfg[k] for k in DEFAULT_TIMINGS}, "rv": api.store.rv}
        for (ns, name), w in list(op.workers.items()):
            out["clusters"]["%s/%s" % (ns, name)] = {"master_pod": w.leader_name, "host": pgm.running_ip(w.key),
                                                    "port": 5432, "socket_dir": pgm.sockdir(w.key)}
        return out
    ops["state"] = state
