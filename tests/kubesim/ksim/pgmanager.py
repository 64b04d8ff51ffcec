# Real PostgreSQL 15 servers for the master pods: one template initdb per run, a data directory per
# cluster (the PVC), postmasters started/stopped on a pod IP, psql over the cluster's unix socket.
import glob
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time

from . import spilo, util

# Spilo's pg_hba (configure_spilo.py): local trust; TCP from the pod's own loopback md5; TCP without TLS
# refused; with TLS md5 (which accepts scram-sha-256 verifiers too); replication only as standby with TLS.
# Spilo's `host all all 127.0.0.1/32 md5` line is left out: inside a pod only the pod's own processes
# come from 127.0.0.1, but here every client reaching a pod IP (127.N.1.x) on lo connects *from*
# 127.0.0.1, so that line would let a client on a "node" in without TLS, which Spilo does not.
HBA = """# kubesim: Spilo's rules (local trust, hostnossl reject, hostssl md5)
local   all             all                                     trust
host    all             all             ::1/128                 md5
local   replication     standby                                 trust
hostssl replication     standby         all                     md5
hostnossl all           all             all                     reject
hostssl all             all             all                     md5
"""

CONF = """
# kubesim: tuned for throwaway test servers (never for production)
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
max_wal_size = 1GB
password_encryption = scram-sha-256
log_line_prefix = '%m [%p] %q%u@%d '
dynamic_shared_memory_type = posix
"""


def server_major():
    """The major version of the PostgreSQL servers kubesim runs ("15")."""
    return os.path.basename(os.path.dirname(find_bindir()))


def find_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")


class PgError(RuntimeError):
    pass


class PgManager:
    def __init__(self, root):
        self.root = root
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        self.procs = {}          # cluster key -> Popen
        self.ips = {}            # cluster key -> listen IP
        self.lock = threading.Lock()
        self.template_lock = threading.Lock()
        self.template_ready = False
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.makedirs(root, exist_ok=True)
        self._own(root)
        # A unix socket path must fit in 107 bytes: a deep DIR gets its sockets through a short symlink.
        self.sock_base = root
        self.sock_link = None
        if len(root) > 60:
            import tempfile
            link = tempfile.mktemp(prefix="ks-", dir="/tmp")
            os.symlink(root, link)
            self.sock_base = self.sock_link = link

    # -------------------------------------------------------------- process helpers
    def _own(self, path):
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def _popen_kw(self):
        kw = {"start_new_session": True, "stdin": subprocess.DEVNULL}
        if self.as_root:
            # initdb/postgres refuse root: run them as the postgres OS user.
            kw.update(user=self.uid, group=self.gid, extra_groups=[])
            kw["env"] = dict(os.environ, HOME="/var/lib/postgresql", USER="postgres", LOGNAME="postgres")
        return kw

    def run_as_pg(self, args, **kw):
        allkw = self._popen_kw()
        allkw.update(kw)
        return subprocess.run(args, **allkw)

    def cdir(self, key):
        return os.path.join(self.root, key)

    def sockdir(self, key):
        return os.path.join(self.sock_base, key, "sock")

    # -------------------------------------------------------------- data directories
    def ensure_template(self):
        with self.template_lock:
            tpl = os.path.join(self.root, "template")
            if self.template_ready:
                return tpl
            if os.path.exists(tpl):
                shutil.rmtree(tpl)
            t0 = time.time()
            r = self.run_as_pg([os.path.join(self.bindir, "initdb"), "-D", tpl, "-U", "postgres", "-E", "UTF8",
                                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise PgError("initdb failed: %s" % r.stdout.decode(errors="replace"))
            with open(os.path.join(tpl, "pg_hba.conf"), "w") as f:
                f.write(HBA)
            with open(os.path.join(tpl, "postgresql.conf"), "a") as f:
                f.write(CONF)
                f.write(spilo.CONF)
            util.log("pg: template initdb in %.2fs" % (time.time() - t0))
            self.template_ready = True
            return tpl

    def ensure_data(self, key):
        """Returns True when the data directory was just created (a fresh, empty cluster)."""
        data = os.path.join(self.cdir(key), "data")
        if os.path.exists(os.path.join(data, "PG_VERSION")):
            return False
        tpl = self.ensure_template()
        os.makedirs(self.cdir(key), exist_ok=True)
        self._own(self.cdir(key))
        os.makedirs(self.sockdir(key), exist_ok=True)
        self._own(self.sockdir(key))
        if os.path.exists(data):
            shutil.rmtree(data)
        # cp -a keeps ownership and modes (PostgreSQL insists on 0700/0750 for the data directory).
        subprocess.run(["cp", "-a", tpl, data], check=True)
        return True

    def has_data(self, key):
        return os.path.exists(os.path.join(self.cdir(key), "data", "PG_VERSION"))

    # -------------------------------------------------------------- servers
    def make_cert(self, d):
        """What Spilo does at container start: a self-signed certificate (CN spilo.example.org) that
        PostgreSQL serves with ssl = on. Spilo lets openssl pick its default key (RSA 2048); kubesim makes
        an EC P-256 key, which costs milliseconds instead of up to a second of CPU per pod start, and
        changes nothing a client sees (a self-signed certificate, its own CA for verify-ca)."""
        os.makedirs(d, exist_ok=True)
        crt, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        for f in (crt, key):
            if os.path.exists(f):
                os.unlink(f)
        subprocess.run(["openssl", "req", "-nodes", "-new", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-days", "3650", "-subj", "/CN=spilo.example.org",
                        "-keyout", key, "-out", crt], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.chmod(key, 0o600)
        for f in (d, crt, key):
            self._own(f)
        return crt, key

    def start(self, key, ip, port=5432, settings=None):
        """Starts the cluster's server on ip:port with Spilo's TLS (a certificate made now, as at pod
        start); settings: more -c NAME=VALUE (e.g. password_encryption)."""
        self.stop(key)
        data = os.path.join(self.cdir(key), "data")
        log = open(os.path.join(self.cdir(key), "postgres.log"), "ab")
        if self.as_root:
            os.chown(log.name, self.uid, self.gid)
        crt, tlskey = self.make_cert(os.path.join(self.cdir(key), "tls"))
        args = [os.path.join(self.bindir, "postgres"), "-D", data, "-p", str(port), "-k", self.sockdir(key),
                "-c", "listen_addresses=%s" % ip, "-c", "ssl=on", "-c", "ssl_cert_file=%s" % crt,
                "-c", "ssl_key_file=%s" % tlskey]
        for k, v in sorted((settings or {}).items()):
            args += ["-c", "%s=%s" % (k, v)]
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **self._popen_kw())
        log.close()
        with self.lock:
            self.procs[key] = p
            self.ips[key] = ip
        pidfile = os.path.join(data, "postmaster.pid")
        deadline = time.time() + 30
        while time.time() < deadline:
            if p.poll() is not None:
                raise PgError("postgres for %s exited with %s; see %s" % (key, p.returncode,
                                                                        os.path.join(self.cdir(key), "postgres.log")))
            try:
                lines = open(pidfile).read().split("\n")
                if len(lines) > 7 and lines[7].strip() == "ready":
                    util.log("pg: %s listening on %s:%d (pid %d)" % (key, ip, port, p.pid))
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise PgError("postgres for %s did not become ready" % key)

    def running_ip(self, key):
        with self.lock:
            p = self.procs.get(key)
            if p is None or p.poll() is not None:
                return None
            return self.ips.get(key)

    def stop(self, key, immediate=False):
        with self.lock:
            p = self.procs.pop(key, None)
            self.ips.pop(key, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                # SIGINT = fast shutdown; SIGQUIT = immediate (crash-like) shutdown.
                os.kill(p.pid, signal.SIGQUIT if immediate else signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        util.log("pg: %s stopped" % key)

    def drop(self, key):
        self.stop(key, immediate=True)
        shutil.rmtree(self.cdir(key), ignore_errors=True)
        util.log("pg: %s data dropped" % key)

    def stop_all(self):
        with self.lock:
            keys = list(self.procs)
        for k in keys:
            self.stop(k, immediate=True)

    # -------------------------------------------------------------- SQL
    def psql(self, key, sql, db="postgres", user="postgres"):
        args = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.sockdir(key), "-p", "5432", "-U", user, "-d", db, "-f", "-"]
        r = subprocess.run(args, input=sql.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if r.returncode != 0:
            raise PgError("psql on %s/%s failed: %s" % (key, db, r.stderr.decode(errors="replace").strip()))
        return r.stdout.decode()


def kill_orphans(root):
    """For `down` after a crash: stop every postmaster whose data directory lies under root."""
    killed = []
    for pidfile in glob.glob(os.path.join(root, "**", "postmaster.pid"), recursive=True):
        try:
            lines = open(pidfile).read().split("\n")
            pid, datadir = int(lines[0]), lines[1]
        except (OSError, ValueError, IndexError):
            continue
        try:
            cmd = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        except OSError:
            continue
        if not cmd or not cmd[0].endswith(b"postgres") or datadir.encode() not in cmd:
            continue
        try:
            os.kill(pid, signal.SIGQUIT)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    for pid in killed:
        while time.time() < deadline and os.path.exists("/proc/%d" % pid):
            try:
                st = open("/proc/%d/stat" % pid).read().split()[2]
                if st == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
        if os.path.exists("/proc/%d" % pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return killed
