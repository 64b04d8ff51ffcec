# The operator's Sync of one cluster, as the real operator runs it every resync_period (and every
# repair_period for a cluster whose last create/sync failed), and its createRoles after a create:
#   secrets: a missing credentials Secret is created again with the password the operator holds in
#            memory; an existing one's password becomes the one it holds (the superuser's too);
#   roles:   logged in as postgres over TLS to the master's pod IP with the password it holds, each
#            spec user whose password differs from its Secret is ALTERed (a missing one is created).
#            postgres and standby are system users: the sync never ALTERs them.
# A failed login is logged; the status becomes SyncFailed (CreateFailed after a create) and the sync
# is tried again after repair_period.
import base64
import hashlib
import hmac
import os
import secrets as pysecrets
import string
import subprocess
import time

from . import util
from .pgmanager import find_bindir

SECRETS = ("", "secrets")

FLAGS = {"superuser": "SUPERUSER", "inherit": "INHERIT", "login": "LOGIN", "nologin": "NOLOGIN",
         "createrole": "CREATEROLE", "createdb": "CREATEDB", "replication": "REPLICATION", "bypassrls": "BYPASSRLS"}


def password_matches(verifier, password, user):
    """Whether a pg_authid.rolpassword verifier (SCRAM-SHA-256 or md5) is that of password."""
    if not verifier:
        return False
    if verifier.startswith("md5"):
        return verifier == "md5" + hashlib.md5((password + user).encode()).hexdigest()
    if verifier.startswith("SCRAM-SHA-256$"):
        try:
            head, keys = verifier[len("SCRAM-SHA-256$"):].split("$", 1)
            iters, salt = head.split(":", 1)
            stored, _server = keys.split(":", 1)
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iters))
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored))
        except (ValueError, TypeError):
            return False
    return verifier == password


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def _secret_pw(c, user):
    from .pgoperator import secret_name, unb64
    s = c.op.store.peek(SECRETS, c.ns, secret_name(user, c.name))
    if s is None:
        return None, None
    data = s.get("data") or {}
    if "password" not in data:
        return s, None
    return s, unb64(data["password"])


def sync_secrets(c):
    """Returns the names of the secrets it created again."""
    from .pgoperator import cluster_users, secret_name
    made = []
    for user in cluster_users(c.spec):
        s, pw = _secret_pw(c, user)
        if s is None:
            pw = c.mem_pw.get(user) or "".join(pysecrets.choice(string.ascii_letters + string.digits)
                                               for _ in range(64))
            c.mem_pw[user] = pw
            c.create(SECRETS, {"metadata": {"name": secret_name(user, c.name), "labels": c.labels()},
                               "type": "Opaque", "data": {"username": _b64(user), "password": _b64(pw)}})
            made.append(secret_name(user, c.name))
            util.log("operator: %s created missing secret %s" % (c.key, secret_name(user, c.name)))
        elif pw is not None:
            c.mem_pw[user] = pw
    return made


def _psql_tls(c, sql):
    """As postgres over TCP+TLS to the master's pod IP with the password the operator holds."""
    host = c.op.pgm.running_ip(c.key)
    if not host:
        return None, "no master is running"
    env = dict(os.environ, PGPASSWORD=c.mem_pw.get("postgres") or "", PGSSLMODE="require", PGCONNECT_TIMEOUT="10")
    r = subprocess.run([os.path.join(find_bindir(), "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                        "-h", host, "-p", "5432", "-U", "postgres", "-d", "postgres", "-f", "-"],
                       input=sql.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if r.returncode != 0:
        return None, r.stderr.decode(errors="replace").strip()
    return r.stdout.decode(), None


def sync_roles(c):
    """Returns (ok, message, altered users)."""
    from .pgoperator import qident, qlit
    users = [u for u in (c.spec.get("users") or {}) if u not in ("postgres", "standby")]
    if not users:
        out, err = _psql_tls(c, "SELECT 1")
        return err is None, err or "ok", []
    out, err = _psql_tls(c, "SELECT rolname, COALESCE(rolpassword, '') FROM pg_authid WHERE rolname IN (%s)"
                         % ", ".join(qlit(u) for u in users))
    if err is not None:
        return False, "could not init db connection: %s" % err, []
    have = {}
    for ln in out.splitlines():
        if "|" in ln:
            name, verifier = ln.split("|", 1)
            have[name] = verifier
    sql, altered = [], []
    for u in users:
        _, pw = _secret_pw(c, u)
        pw = pw if pw is not None else c.mem_pw.get(u)
        if pw is None:
            continue
        opts = ["LOGIN"] + [FLAGS[f.lower()] for f in (c.spec.get("users") or {}).get(u) or [] if f.lower() in FLAGS]
        if u not in have:
            sql.append("CREATE ROLE %s WITH %s PASSWORD %s;" % (qident(u), " ".join(opts), qlit(pw)))
            altered.append(u)
        elif not password_matches(have[u], pw, u):
            sql.append("ALTER ROLE %s WITH PASSWORD %s;" % (qident(u), qlit(pw)))
            altered.append(u)
    if sql:
        _, err = _psql_tls(c, "\n".join(sql))
        if err is not None:
            return False, "error executing sync statements: %s" % err, []
        util.log("operator: %s sync set the password of %s from the secrets" % (c.key, ", ".join(altered)))
    return True, "ok", altered


def periodic(c):
    """One Sync; sets the status and when the next one runs. Returns a summary (the admin op's answer)."""
    made = sync_secrets(c)
    ok, msg, altered = sync_roles(c)
    cfg = c.op.config()
    c.last_sync = {"ok": ok, "message": msg, "created_secrets": made, "altered_roles": altered, "at": util.now_iso()}
    if ok:
        c.create_login_failed = False
        c.next_sync = time.time() + cfg["resync_period"]
        if c.phase() != "Running":
            c.set_status("Running")
    else:
        util.log("operator: %s error while syncing cluster state: %s" % (c.key, msg))
        c.next_sync = time.time() + min(cfg["repair_period"], cfg["resync_period"])
        c.set_status("SyncFailed")
    return c.last_sync
