# Real PostgreSQL servers for the database pods: one template initdb per run, a data directory per member
# (the pod's PVC), postmasters started/stopped on a pod IP, replicas made by pg_basebackup, psql over a
# member's unix socket.
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
        self.procs = {}          # (cluster key, member index) -> Popen
        self.ips = {}            # (cluster key, member index) -> listen IP
        self.masters = {}        # cluster key -> the master's member index
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
        """The cluster's directory: one member directory per volume (PVC) below it."""
        return os.path.join(self.root, key)

    def master_idx(self, key):
        with self.lock:
            return self.masters.get(key, 0)

    def set_master(self, key, idx):
        """Which member is the cluster's master now: psql(), sockdir(key) and running_ip(key) use it."""
        with self.lock:
            if idx is None:
                self.masters.pop(key, None)
            else:
                self.masters[key] = idx

    def mdir(self, key, idx=None):
        """A member's directory (its "volume": pgdata-<cluster>-<idx>): data/, sock/, tls/, postgres.log."""
        return os.path.join(self.cdir(key), str(self.master_idx(key) if idx is None else idx))

    def datadir(self, key, idx=None):
        return os.path.join(self.mdir(key, idx), "data")

    def sockdir(self, key, idx=None):
        return os.path.join(self.sock_base, key, str(self.master_idx(key) if idx is None else idx), "sock")

    def _mkdirs(self, key, idx):
        for d in (self.cdir(key), self.mdir(key, idx), self.sockdir(key, idx)):
            os.makedirs(d, exist_ok=True)
            self._own(d)

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

    def ensure_data(self, key, idx=None):
        """A new cluster's first member gets a fresh data directory (the template's initdb). Returns True
        when it was just created (a fresh, empty cluster)."""
        data = self.datadir(key, idx)
        if os.path.exists(os.path.join(data, "PG_VERSION")):
            return False
        tpl = self.ensure_template()
        self._mkdirs(key, self.master_idx(key) if idx is None else idx)
        if os.path.exists(data):
            shutil.rmtree(data)
        # cp -a keeps ownership and modes (PostgreSQL insists on 0700/0750 for the data directory).
        subprocess.run(["cp", "-a", tpl, data], check=True)
        return True

    def has_data(self, key, idx=None):
        return os.path.exists(os.path.join(self.datadir(key, idx), "PG_VERSION"))

    def is_standby_data(self, key, idx):
        return os.path.exists(os.path.join(self.datadir(key, idx), "standby.signal"))

    def remove_data(self, key, idx):
        shutil.rmtree(self.datadir(key, idx), ignore_errors=True)

    def basebackup(self, key, idx, host, user, password, app_name):
        """pg_basebackup of the leader at host into this member's (emptied) data directory, logged in as
        user with password over TLS, as Patroni's replica creation does (--no-sync: throwaway test servers,
        fsync is off too). Returns (ok, output)."""
        self._mkdirs(key, idx)
        data = self.datadir(key, idx)
        shutil.rmtree(data, ignore_errors=True)
        kw = self._popen_kw()
        kw["env"] = dict(kw.get("env") or os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10",
                         PGAPPNAME=app_name, PGSSLMODE="prefer")
        r = subprocess.run([os.path.join(self.bindir, "pg_basebackup"), "-D", data, "-h", host, "-p", "5432",
                            "-U", user, "-w", "-X", "stream", "-c", "fast", "--no-sync"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, **kw)
        out = r.stdout.decode(errors="replace").strip()
        if r.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            return False, out
        return True, out

    def set_standby(self, key, idx, conninfo):
        """Makes the member's data directory a standby of conninfo (standby.signal + primary_conninfo in
        postgresql.auto.conf, mode 0600, as pg_basebackup -R writes it)."""
        data = self.datadir(key, idx)
        auto = os.path.join(data, "postgresql.auto.conf")
        try:
            lines = [ln for ln in open(auto).read().splitlines() if not ln.startswith("primary_conninfo")]
        except OSError:
            lines = []
        lines.append("primary_conninfo = '%s'" % conninfo.replace("'", "''"))
        with open(auto, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(auto, 0o600)
        self._own(auto)
        sig = os.path.join(data, "standby.signal")
        open(sig, "a").close()
        self._own(sig)

    def unset_standby(self, key, idx):
        """The member's data starts as a primary (end of recovery, a new timeline)."""
        try:
            os.unlink(os.path.join(self.datadir(key, idx), "standby.signal"))
        except FileNotFoundError:
            pass

    def reload(self, key, idx):
        p = self._proc(key, idx)
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGHUP)

    def promote(self, key, idx):
        r = self.run_as_pg([os.path.join(self.bindir, "pg_ctl"), "promote", "-D", self.datadir(key, idx), "-w",
                            "-t", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise PgError("promote %s/%s failed: %s" % (key, idx, r.stdout.decode(errors="replace")))

    def checkpoint_lsn(self, key, idx):
        """The data directory's latest checkpoint location (pg_controldata) as an integer, or None."""
        r = subprocess.run([os.path.join(self.bindir, "pg_controldata"), self.datadir(key, idx)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, LC_ALL="C"))
        for ln in r.stdout.decode(errors="replace").splitlines():
            if ln.startswith("Latest checkpoint location:"):
                return lsn_int(ln.split(":", 1)[1].strip())
        return None

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

    def _proc(self, key, idx):
        with self.lock:
            return self.procs.get((key, idx))

    def start(self, key, ip, port=5432, settings=None, idx=None):
        """Starts member idx's server (default: the master's) on ip:port with Spilo's TLS (a certificate
        made now, as at pod start); settings: more -c NAME=VALUE (e.g. password_encryption). A standby
        data directory starts as a standby (read-only, streaming from its primary_conninfo)."""
        idx = self.master_idx(key) if idx is None else idx
        self.stop(key, idx=idx)
        self._mkdirs(key, idx)
        data = self.datadir(key, idx)
        log = open(os.path.join(self.mdir(key, idx), "postgres.log"), "ab")
        if self.as_root:
            os.chown(log.name, self.uid, self.gid)
        crt, tlskey = self.make_cert(os.path.join(self.mdir(key, idx), "tls"))
        args = [os.path.join(self.bindir, "postgres"), "-D", data, "-p", str(port), "-k", self.sockdir(key, idx),
                "-c", "listen_addresses=%s" % ip, "-c", "ssl=on", "-c", "ssl_cert_file=%s" % crt,
                "-c", "ssl_key_file=%s" % tlskey]
        for k, v in sorted((settings or {}).items()):
            args += ["-c", "%s=%s" % (k, v)]
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **self._popen_kw())
        log.close()
        with self.lock:
            self.procs[(key, idx)] = p
            self.ips[(key, idx)] = ip
        pidfile = os.path.join(data, "postmaster.pid")
        deadline = time.time() + 30
        while time.time() < deadline:
            if p.poll() is not None:
                raise PgError("postgres for %s/%s exited with %s; see %s" % (
                    key, idx, p.returncode, os.path.join(self.mdir(key, idx), "postgres.log")))
            try:
                lines = open(pidfile).read().split("\n")
                # "ready" (a primary) or "standby" (a hot standby accepting read-only connections)
                if len(lines) > 7 and lines[7].strip() in ("ready", "standby"):
                    util.log("pg: %s/%s listening on %s:%d (pid %d, %s)" % (key, idx, ip, port, p.pid,
                                                                         lines[7].strip()))
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise PgError("postgres for %s/%s did not become ready" % (key, idx))

    def running_ip(self, key, idx=None):
        idx = self.master_idx(key) if idx is None else idx
        with self.lock:
            p = self.procs.get((key, idx))
            if p is None or p.poll() is not None:
                return None
            return self.ips.get((key, idx))

    def members(self, key):
        with self.lock:
            return sorted(i for (k, i) in self.procs if k == key)

    def stop(self, key, immediate=False, idx=None):
        """Stops member idx's server, or every member of the cluster when idx is None."""
        with self.lock:
            keys = [k for k in self.procs if k[0] == key and (idx is None or k[1] == idx)]
            procs = [(k, self.procs.pop(k)) for k in keys]
            for k in keys:
                self.ips.pop(k, None)
        for (_, i), p in procs:
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
            util.log("pg: %s/%s stopped" % (key, i))

    def drop(self, key):
        self.stop(key, immediate=True)
        shutil.rmtree(self.cdir(key), ignore_errors=True)
        util.log("pg: %s data dropped" % key)

    def drop_member(self, key, idx):
        self.stop(key, immediate=True, idx=idx)
        shutil.rmtree(self.mdir(key, idx), ignore_errors=True)
        util.log("pg: %s/%s data dropped" % (key, idx))

    def stop_all(self):
        with self.lock:
            keys = sorted({k for k, _ in self.procs})
        for k in keys:
            self.stop(k, immediate=True)

    # -------------------------------------------------------------- SQL
    def psql(self, key, sql, db="postgres", user="postgres", idx=None):
        """SQL over the unix socket (trusted) of the master, or of member idx."""
        args = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.sockdir(key, idx), "-p", "5432", "-U", user, "-d", db, "-f", "-"]
        r = subprocess.run(args, input=sql.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
        if r.returncode != 0:
            raise PgError("psql on %s/%s failed: %s" % (key, db, r.stderr.decode(errors="replace").strip()))
        return r.stdout.decode()


def lsn_int(s):
    """'0/3000028' -> 50331688"""
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


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
