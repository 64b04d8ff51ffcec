# The `kubesim` command line: up / down / backup / admin / fault / state / psql / serve (internal).
# `up` daemonises `serve` and waits for readiness; `down` stops it and removes everything it made.
import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(HERE, "kubesim")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return open("/proc/%d/stat" % pid).read().split()[2] != "Z"
    except OSError:
        return False


def _read_pid(d):
    try:
        return int(open(os.path.join(d, "kubesim.pid")).read().strip())
    except (OSError, ValueError):
        return None


def cmd_up(a):
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    pid = _read_pid(d)
    if pid and _pid_alive(pid):
        sys.exit("kubesim: already running in %s (pid %d)" % (d, pid))
    for f in ("ready", "failed", "kubeconfig", "env", "admin.json", "state.json"):
        try:
            os.unlink(os.path.join(d, f))
        except FileNotFoundError:
            pass
    args = [sys.executable, SCRIPT, "serve", d, "--fixture", a.fixture]
    if a.net:
        args += ["--net", a.net]
    for t in a.timing or []:
        args += ["--timing", t]
    for x in a.admin or []:
        args += ["--admin", x]
    for x in a.operator or []:
        args += ["--operator", x]
    log = open(os.path.join(d, "kubesim.log"), "ab")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        if os.path.exists(os.path.join(d, "ready")):
            print(os.path.join(d, "kubeconfig"))
            return 0
        if os.path.exists(os.path.join(d, "failed")) or p.poll() is not None:
            break
        time.sleep(0.05)
    sys.stderr.write("kubesim: up failed; last lines of %s:\n" % log.name)
    try:
        sys.stderr.write("".join(open(log.name, errors="replace").readlines()[-30:]))
    except OSError:
        pass
    cmd_down(argparse.Namespace(dir=d, keep_log=True))
    return 1


def cmd_down(a):
    d = os.path.abspath(a.dir)
    if not os.path.isdir(d):
        return 0
    pid = _read_pid(d)
    if pid and _pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 15
        while time.time() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Postmasters outlive a crashed daemon: find them by their postmaster.pid under DIR/pg.
    sys.path.insert(0, HERE)
    from ksim.pgmanager import kill_orphans
    pgdir = os.path.join(d, "pg")
    target = os.path.realpath(pgdir)
    if os.path.exists(pgdir):
        kill_orphans(target)
    if os.path.islink(pgdir):
        shutil.rmtree(target, ignore_errors=True)
        os.unlink(pgdir)
    try:
        link = json.load(open(os.path.join(d, "state.json"))).get("sock_link")
        if link and os.path.islink(link):
            os.unlink(link)
    except (OSError, ValueError):
        pass
    keep = getattr(a, "keep_log", False) or os.environ.get("PGR_KUBESIM_KEEP_LOG")
    for name in os.listdir(d):
        if keep and name == "kubesim.log":
            continue
        if name in ("pg", "pki", "kubeconfig", "env", "admin.json", "state.json", "kubesim.pid", "ready",
                    "failed", "kubesim.log") or name.endswith(".tmp"):
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
    try:
        os.rmdir(d)
    except OSError:
        pass
    return 0


def admin_call(d, body):
    info = json.load(open(os.path.join(os.path.abspath(d), "admin.json")))
    ctx = ssl.create_default_context(cafile=info["ca"])
    req = urllib.request.Request(info["url"], data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + info["token"],
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit("kubesim: admin %s failed: %s" % (body.get("op") if isinstance(body, dict) else "batch",
                                                   e.read().decode(errors="replace")))


def cmd_admin(a):
    print(json.dumps(admin_call(a.dir, json.loads(a.json)), indent=2))


def cmd_fault(a):
    body = {"op": "fault", "kind": a.kind, "path": a.path, "count": a.count}
    if a.method:
        body["method"] = a.method
    if a.kind == "error":
        body["code"] = a.code
    if a.retry_after is not None:
        body["retryAfter"] = a.retry_after
    if a.after is not None:
        body["after"] = a.after
    print(json.dumps(admin_call(a.dir, body), indent=2))


def cmd_state(a):
    print(json.dumps(admin_call(a.dir, {"op": "state"}), indent=2))


def _timestamp():
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def _yaml_scalar(v):
    """A string as PyYAML's safe dump writes it: plain when it reads back as the same string."""
    import re
    if v is None:
        return "null"
    v = str(v)
    if (v == "" or re.match(r"^(true|false|yes|no|on|off|null|~|[-+]?[0-9][0-9_.eE+-]*)$", v, re.I)
            or v[0] in "-?:,[]{}#&*!|>'\"%@`" or ": " in v or " #" in v or v != v.strip()):
        return "'" + v.replace("'", "''") + "'"
    return v


def _yaml_mapping(d, indent=0):
    """A mapping of strings and mappings in block style, keys sorted: PyYAML's yaml.dump(res)."""
    out = []
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict) and v:
            out.append("%s%s:" % (" " * indent, k))
            out.append(_yaml_mapping(v, indent + 2))
        else:
            out.append("%s%s: %s" % (" " * indent, k, "{}" if isinstance(v, dict) else _yaml_scalar(v)))
    return "\n".join(out)


def csm_manifest(info):
    """CSM's postgres-db-backup job: for each service user's secret, then postgres's, then standby's,
    {apiVersion, kind, type, metadata: {name, namespace, labels}, data} dumped by PyYAML (keys
    sorted), each written as "\n---\n<yaml>\n"."""
    by_name = {s["metadata"]["name"]: s for s in info["secrets"]}
    order = [u for u in info.get("users") or [] if u not in ("postgres", "standby")] + ["postgres", "standby"]
    docs = []
    for user in order:
        s = by_name.get("%s.%s.credentials" % (user.replace("_", "-"), info["name"]))
        if s is None:
            continue
        md = s["metadata"]
        doc = {"apiVersion": s.get("apiVersion", "v1"), "kind": s.get("kind", "Secret"),
               "type": s.get("type", "Opaque"),
               "metadata": {"name": md["name"], "namespace": md["namespace"], "labels": md.get("labels")},
               "data": dict(s.get("data") or {})}
        docs.append("\n---\n%s\n\n" % _yaml_mapping(doc))
    return "".join(docs)


def list_manifest(d, info):
    """The HSM/SLS pages' hand-made manifest: `kubectl get secret -o yaml A B ...` (a kind: List) with
    the uid, resourceVersion and creationTimestamp lines taken out. Made by the real kubectl."""
    names = [s["metadata"]["name"] for s in info["secrets"]]
    r = subprocess.run(["kubectl", "--kubeconfig", os.path.join(os.path.abspath(d), "kubeconfig"), "get", "secret",
                        "-n", info["namespace"], "-o", "yaml"] + names, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit("kubesim: kubectl get secret failed: %s" % r.stderr.decode(errors="replace"))
    keep = [l for l in r.stdout.decode().splitlines(True)
            if not l.lstrip().startswith(("uid:", "resourceVersion:", "creationTimestamp:"))]
    return "".join(keep)


def dump_host(info):
    """CSM's job dumps the closest streaming replica when it lags less than 1 MiB, else the master."""
    for r in info.get("replicas") or []:
        if r.get("host") and r.get("streaming") and (r.get("lag_bytes") or 0) < 1 << 20:
            return r["host"]
    return info["host"]


def cmd_backup(a):
    import gzip
    info = admin_call(a.dir, {"op": "cluster", "cluster": a.cluster})
    if not info.get("host"):
        sys.exit("kubesim: cluster %s has no running master" % a.cluster)
    from ksim.pgmanager import find_bindir
    pg_dumpall = os.path.join(find_bindir(), "pg_dumpall")
    env = dict(os.environ, PGPASSWORD=info["postgres_password"], PGCONNECT_TIMEOUT="10")
    host = dump_host(info)
    if a.layout == "csm":
        # CSM's cronjob: pg_dumpall -c (no --if-exists) over TCP as postgres
        argv = [pg_dumpall, "-c", "-h", host, "-p", str(info["port"]), "-U", "postgres"]
    elif a.layout == "list":
        # the HSM/SLS pages: `kubectl exec` into the leader, pg_dumpall --clean over the local socket
        argv = [pg_dumpall, "--clean", "-h", info["socket_dir"], "-p", "5432", "-U", "postgres"]
    else:
        # the operator's logical-backup job: pg_dumpall of a replica (else the master), gzip'd
        argv = [pg_dumpall, "-h", host, "-p", str(info["port"]), "-U", "postgres"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if r.returncode != 0:
        sys.exit("kubesim: pg_dumpall failed: %s" % r.stderr.decode(errors="replace"))
    dump = r.stdout
    os.makedirs(a.outdir, exist_ok=True)
    if a.layout == "operator":
        epoch = int(time.time()) if not a.timestamp else \
            int(__import__("calendar").timegm(time.strptime(a.timestamp, "%Y-%m-%dT%H:%M:%S")))
        key = "spilo/%s/%s/logical_backups/%d.sql.gz" % (info["name"], info["uid"], epoch)
        path = os.path.join(a.outdir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(gzip.compress(dump))
        print(path)
        return
    ts = a.timestamp or _timestamp()
    base = os.path.join(a.outdir, "%s-%s" % (a.cluster, ts))
    if a.truncate is not None:
        # a job whose pg_dumpall died: the upload holds what was streamed so far, and no manifest follows
        with open(base + ".psql", "wb") as f:
            f.write(dump[:a.truncate])
        print(base + ".psql")
        return
    with open(base + ".psql", "wb") as f:
        f.write(dump)
    text = csm_manifest(info) if a.layout == "csm" else list_manifest(a.dir, info)
    fd = os.open(base + ".manifest", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(base + ".psql")
    print(base + ".manifest")


def cmd_psql(a):
    info = admin_call(a.dir, {"op": "cluster", "cluster": a.cluster})
    from ksim.pgmanager import find_bindir
    # a pod refuses TCP without TLS (Spilo's hostnossl reject): ask for it rather than rely on prefer
    env = dict(os.environ, PGPASSWORD=info["postgres_password"])
    env.setdefault("PGSSLMODE", "require")
    os.execvpe(os.path.join(find_bindir(), "psql"),
               ["psql", "-h", info["host"], "-p", "5432", "-U", "postgres"] + a.args, env)


def main(argv=None):
    sys.path.insert(0, HERE)
    ap = argparse.ArgumentParser(prog="kubesim", description="Kubernetes + postgres-operator simulator for pgr tests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start in the background; print DIR/kubeconfig when ready")
    p.add_argument("dir")
    p.add_argument("--fixture", default="csm", choices=["csm", "none"])
    p.add_argument("--net", help="127.N: the loopback /16 for pod IPs (default: a free one)")
    p.add_argument("--timing", action="append", help="name=seconds (pod_start, pod_ready, job_duration, grace, ...)")
    p.add_argument("--admin", action="append", help="admin JSON applied before the fixture (faults at start)")
    p.add_argument("--operator", action="append", metavar="KEY=VALUE",
                   help="a key of the operator's ConfigMap postgres-operator (enable_readiness_probe=true, ...)")
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=cmd_up)
    p = sub.add_parser("down", help="stop everything and remove what up created")
    p.add_argument("dir")
    p.add_argument("--keep-log", action="store_true")
    p.set_defaults(fn=cmd_down)
    p = sub.add_parser("backup", help="write CLUSTER-TIMESTAMP.psql and .manifest like CSM's backup cronjob")
    p.add_argument("dir")
    p.add_argument("cluster")
    p.add_argument("outdir")
    p.add_argument("--timestamp")
    p.add_argument("--layout", default="csm", choices=["csm", "list", "operator"],
                   help="csm: the nightly job's (default); list: the HSM/SLS pages' hand-made one; "
                        "operator: the operator's gzip'd logical backup, no manifest")
    p.add_argument("--truncate", type=int, metavar="BYTES",
                   help="a failed job: only the first BYTES of the dump, no manifest")
    p.set_defaults(fn=cmd_backup)
    p = sub.add_parser("admin", help="POST one admin JSON op (or a list) and print the answer")
    p.add_argument("dir")
    p.add_argument("json")
    p.set_defaults(fn=cmd_admin)
    p = sub.add_parser("fault", help="inject a fault (shorthand for admin {op: fault})")
    p.add_argument("dir")
    p.add_argument("--kind", default="error", choices=["error", "cut_watch", "gone"])
    p.add_argument("--path", default="", help="regex searched in the request path+query")
    p.add_argument("--method")
    p.add_argument("--code", type=int, default=500)
    p.add_argument("--count", type=int, default=1, help="how many requests (-1: until cleared)")
    p.add_argument("--retry-after", type=int)
    p.add_argument("--after", type=int, help="cut_watch: events sent before the cut")
    p.set_defaults(fn=cmd_fault)
    p = sub.add_parser("state", help="print net, port, clusters with master IP")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_state)
    p = sub.add_parser("psql", help="psql to CLUSTER's master as postgres over TCP (password from the secret)")
    p.add_argument("dir")
    p.add_argument("cluster")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_psql)
    p = sub.add_parser("serve", help=argparse.SUPPRESS)
    p.add_argument("dir")
    p.add_argument("--fixture", default="csm")
    p.add_argument("--net")
    p.add_argument("--timing", action="append")
    p.add_argument("--admin", action="append")
    p.add_argument("--operator", action="append")
    p.set_defaults(fn=lambda a: __import__("ksim.daemon", fromlist=["serve"]).serve(a.dir, a))
    a = ap.parse_args(argv)
    return a.fn(a) or 0
