# `pods/<name>/exec` over a WebSocket, as the API server serves `kubectl exec` and `kubectl cp` since
# Kubernetes 1.30: RFC 6455 (server side, written here: Python's standard library has no WebSocket) and
# the channel protocols v5.channel.k8s.io / v4.channel.k8s.io. The command runs on this machine as the
# pod's container would run it: as the postgres OS user, in the pod's own home directory (which stands
# for the container's /home/postgres), with the pod's PostgreSQL socket as PGHOST, so `psql -U postgres`
# and `pg_dumpall` reach that pod's real server as in a Spilo pod.
import base64
import hashlib
import json
import os
import pwd
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse

from . import util
from .strategy import ApiError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PATH_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$")
# The container's home: arguments naming it are mapped to the pod's directory on this machine.
POD_HOME = "/home/postgres"
OUT_HIGH = 256 * 1024      # bytes waiting for the client before the command's output is left unread
STDIN_HIGH = 1024 * 1024   # bytes waiting for the command's stdin before the client is left unread
CHUNK = 64 * 1024


def is_exec(path):
    return PATH_RE.match(path) is not None


class ExecEnv:
    """Where and how a pod's commands run: its home directory and its PostgreSQL socket."""

    def __init__(self, op, pgm):
        self.op, self.pgm = op, pgm
        self.procs = set()

    def home(self, ns, pod):
        d = os.path.join(self.pgm.root, "pods", "%s.%s" % (ns, pod), "home", "postgres")
        if not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            for p in (d, os.path.dirname(d), os.path.dirname(os.path.dirname(d)),
                      os.path.dirname(os.path.dirname(os.path.dirname(d)))):
                self.pgm._own(p)
        return d

    def socket_dir(self, pod):
        # A simulator that runs a server per pod says where its socket is; else the cluster's server
        # listens for the master pod only (a replica's socket does not exist, as with a stopped server).
        fn = getattr(self.op, "pod_socket_dir", None)
        if fn:
            return fn(pod)
        w = self.op._worker_for_pod(pod)
        if w is not None and w.leader_name == pod["metadata"]["name"] and self.pgm.running_ip(w.key):
            return self.pgm.sockdir(w.key)
        return os.path.join(self.pgm.root, "no-server-in-this-pod")

    def environment(self, pod, home):
        env = {
            "PATH": "%s:/usr/local/bin:/usr/bin:/bin" % self.pgm.bindir,
            "HOME": home, "LANG": "C.UTF-8", "HOSTNAME": pod["metadata"]["name"],
            # exec runs as root in a Spilo container: libpq's default role is then "root", so a
            # command must name its user (psql -U postgres), as on a real pod
            "PGUSER": "root", "USER": "root",
        }
        if (pod["metadata"].get("labels") or {}).get("application") == "spilo":
            env["PGHOST"] = self.socket_dir(pod)
            env["PGPORT"] = "5432"
        return env


HOME_RE = re.compile(re.escape(POD_HOME) + r"(?=$|[/\s'\";|&)<>])")


def map_arg(arg, home):
    """The container's home, in an argument (a path, or a `sh -c` line), names the pod's directory."""
    return HOME_RE.sub(lambda _: home, arg)


def status_json(code, argv, err=None):
    if err:
        return {"metadata": {}, "status": "Failure", "message": err, "reason": "InternalError",
                "details": {"causes": [{"message": err}]}, "code": 500}
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command %s, exit code %d"
                       % ("[" + " ".join(argv) + "]", code),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class ProtocolError(Exception):
    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


class Decoder:
    """Client frames (masked) to messages; control frames come out whole. Messages are capped."""

    MAX = 16 << 20

    def __init__(self):
        self.buf = bytearray()
        self.msg = None     # (opcode, bytearray) of a fragmented message in progress

    def feed(self, data):
        self.buf += data

    def events(self):
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                return out
            b0, b1 = b[0], b[1]
            if b0 & 0x70:
                raise ProtocolError(1002, "reserved bits set")
            if not b1 & 0x80:
                raise ProtocolError(1002, "client frames must be masked")
            n, p = b1 & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return out
                n, p = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return out
                n, p = struct.unpack("!Q", b[2:10])[0], 10
            if n > self.MAX:
                raise ProtocolError(1009, "frame too large")
            if len(b) < p + 4 + n:
                return out
            mask = bytes(b[p:p + 4])
            payload = bytearray(b[p + 4:p + 4 + n])
            del b[:p + 4 + n]
            if n:
                m = (mask * (n // 4 + 1))[:n]
                payload = bytearray(x ^ y for x, y in zip(payload, m)) if n < 64 else \
                    bytearray((int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big"))
            fin, op = b0 & 0x80, b0 & 0x0F
            if op >= 8:
                if not fin or n > 125:
                    raise ProtocolError(1002, "bad control frame")
                out.append((op, bytes(payload)))
            elif op == 0:
                if self.msg is None:
                    raise ProtocolError(1002, "continuation without a message")
                self.msg[1].extend(payload)
                if len(self.msg[1]) > self.MAX:
                    raise ProtocolError(1009, "message too large")
                if fin:
                    out.append((self.msg[0], bytes(self.msg[1])))
                    self.msg = None
            elif op in (1, 2):
                if self.msg is not None:
                    raise ProtocolError(1002, "new message inside a fragmented one")
                if fin:
                    out.append((op, bytes(payload)))
                else:
                    self.msg = (op, bytearray(payload))
            else:
                raise ProtocolError(1002, "reserved opcode")


def serve(h, method, path):
    """Answers an exec request on handler h (authenticated already): refusals as Status errors, else
    the upgrade and the session."""
    api = h.api
    env_of = getattr(api, "execws", None)
    m = PATH_RE.match(path)
    ns, name = m.group(1), m.group(2)
    if method not in ("GET", "POST"):
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    # Kubernetes 1.31+ authorizes a WebSocket exec as `create` on pods/exec
    if not api.allowed(h.tok, "create", "pods", "", ns, name, "exec"):
        raise ApiError(403, "Forbidden", 'pods "%s" is forbidden: User "%s" cannot create resource "pods/exec" in '
                       'API group "" in the namespace "%s"' % (name, h.tok["user"], ns),
                       {"name": name, "kind": "pods"})
    pod = api.store.get(("", "pods"), ns, name)
    if pod is None:
        raise ApiError(404, "NotFound", 'pods "%s" not found' % name, {"name": name, "kind": "pods"})
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query, keep_blank_values=True)
    argv = q.get("command", [])
    if not argv:
        raise ApiError(400, "BadRequest", "you must specify at least 1 command")
    containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    container = (q.get("container") or [""])[-1] or (containers[0] if containers else "")
    if container not in containers:
        raise ApiError(400, "BadRequest", "container %s is not valid for pod %s" % (container, name))
    if (pod.get("status") or {}).get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        raise ApiError(400, "BadRequest", "unable to upgrade connection: container not found (\"%s\")" % container)
    flag = lambda k: (q.get(k) or ["false"])[-1].lower() in ("1", "true")
    want_stdin = flag("stdin")
    up = (h.headers.get("Upgrade") or "").lower()
    conn_hdr = (h.headers.get("Connection") or "").lower()
    if up != "websocket" or "upgrade" not in [t.strip() for t in conn_hdr.split(",")]:
        # SPDY/3.1 (kubectl before 1.30, or its fallback) is not served: WebSockets only
        raise ApiError(400, "BadRequest", "Upgrade request required (kubesim serves exec over WebSockets: %s)"
                       % ", ".join(PROTOCOLS))
    key = h.headers.get("Sec-WebSocket-Key")
    if not key or h.headers.get("Sec-WebSocket-Version") != "13":
        raise ApiError(400, "BadRequest", "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version 13")
    offered = [p.strip() for p in (h.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
    chosen = next((p for p in PROTOCOLS if p in offered), None)
    if chosen is None:
        raise ApiError(400, "BadRequest", "requested protocol(s) are not supported: %s; supports %s"
                       % (offered, list(PROTOCOLS)))
    if env_of is None:
        raise ApiError(500, "InternalError", "exec is not wired in this simulator")
    home = env_of.home(ns, name)
    env = env_of.environment(pod, home)
    run_argv = [map_arg(a, home) for a in argv]

    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    h.send_response(101, "Switching Protocols")
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", accept)
    h.send_header("Sec-WebSocket-Protocol", chosen)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    Session(h, env_of, argv, run_argv, env, home, want_stdin, chosen == PROTOCOLS[0], "%s/%s" % (ns, name)).run()


class Session:
    def __init__(self, h, env_of, argv, run_argv, env, home, want_stdin, v5, label):
        self.h, self.env_of, self.argv, self.run_argv = h, env_of, argv, run_argv
        self.env, self.home, self.want_stdin, self.v5, self.label = env, home, want_stdin, v5, label
        self.sock = h.connection
        self.out = bytearray()         # frames for the client
        self.retry_len = 0             # an SSL write that wants to be repeated with this many bytes
        self.stdin_q = bytearray()
        self.stdin_close = False
        self.client_closed = False     # a close frame came from the client
        self.client_gone = False       # the connection ended
        self.sent_close = False
        self.dec = Decoder()
        self.pings = self.pongs = self.unanswered = 0
        self.flushed = self.flushed_at_ping = self.ping_len = 0   # bytes the client took

    def send_msg(self, channel, data):
        self.out += frame(2, bytes([channel]) + data)

    def send_close(self, code, reason=""):
        if not self.sent_close:
            self.sent_close = True
            self.out += frame(8, struct.pack("!H", code) + reason.encode()[:123])

    def flush(self):
        while self.out:
            n = self.retry_len or min(len(self.out), CHUNK)
            try:
                k = self.sock.send(bytes(self.out[:n]))
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                self.retry_len = n
                return
            except (OSError, ssl.SSLError):
                self.client_gone = True
                self.out.clear()
                return
            self.retry_len = 0
            self.flushed += k
            del self.out[:k]

    def read_client(self):
        """Reads what the client sent (the handler's buffer first, then the socket) without blocking."""
        while len(self.stdin_q) < STDIN_HIGH and not self.client_gone:
            try:
                data = self.h.rfile.read1(CHUNK)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except (OSError, ssl.SSLError):
                self.client_gone = True
                return
            if data is None:
                return
            if not data:
                self.client_gone = True
                return
            self.dec.feed(data)
            for op, payload in self.dec.events():
                self.on_message(op, payload)

    def on_message(self, op, payload):
        if op == 9:
            self.out += frame(10, payload)
        elif op == 10:
            self.pongs += 1
            self.unanswered = 0
        elif op == 8:
            self.client_closed = True
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
            self.send_close(code if code not in (1005, 1006) else 1000)
        elif op == 1:
            raise ProtocolError(1003, "the channel protocol is binary")
        elif payload:
            ch, data = payload[0], payload[1:]
            if ch == 0 and self.want_stdin and not self.stdin_close:
                self.stdin_q += data
            elif ch == 255 and self.v5 and data[:1] == b"\x00":
                self.stdin_close = True
            # channel 4 (resize) and anything else: nothing to do without a terminal

    def run(self):
        t0 = time.time()
        kw = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        try:
            proc = subprocess.Popen(self.run_argv, stdin=subprocess.PIPE if self.want_stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.home, env=self.env,
                                    start_new_session=True, **kw)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
            # what containerd answers for a missing executable
            msg = ("Internal error occurred: error executing command in container: failed to exec in container: "
                   "failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: "
                   "exec: \"%s\": %s: unknown" % (self.argv[0], "executable file not found in $PATH"
                                                  if isinstance(e, FileNotFoundError) else e.strerror))
            self.send_msg(3, json.dumps(status_json(None, self.argv, msg)).encode())
            self.send_close(1000)
            self.finish(t0, "could not start: %s" % e)
            return
        self.env_of.procs.add(proc)
        try:
            self.loop(proc)
        finally:
            self.env_of.procs.discard(proc)
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f:
                    try:
                        f.close()
                    except OSError:
                        pass

    def loop(self, proc):
        t0 = time.time()
        self.sock.setblocking(False)
        fds = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
        for fd in fds:
            os.set_blocking(fd, False)
        stdin_fd = proc.stdin.fileno() if proc.stdin else None
        if stdin_fd is not None:
            os.set_blocking(stdin_fd, False)
        nbytes = 0
        # a heartbeat, as a WebSocket server keeps one: a client that stops answering is cut
        period = float(self.h.api.cfg.get("exec_ping", 5.0))
        next_ping = time.time() + period
        try:
            while True:
                if self.h.server.stopping:
                    self.send_close(1001, "the server is shutting down")
                    break
                if time.time() >= next_ping:
                    # a client behind on its output (its reader blocked on a slow consumer: kubectl
                    # piping into aws s3 cp) is busy, not gone: it is not judged while bytes wait for
                    # it, nor when it took some since the last ping; only one that has everything,
                    # takes nothing and answers nothing for 3 periods is cut
                    if self.out or self.flushed - self.flushed_at_ping > self.ping_len:
                        self.unanswered = 0
                    if self.unanswered >= 3:
                        self.send_close(1011, "no pong to the last 3 pings")
                        break
                    ping = frame(9, b"kubesim")
                    self.flushed_at_ping, self.ping_len = self.flushed, len(ping)
                    self.out += ping
                    self.pings += 1
                    self.unanswered += 1
                    next_ping = time.time() + period
                try:
                    self.read_client()
                except ProtocolError as e:
                    self.send_close(e.code, str(e))
                    break
                if self.client_closed or self.client_gone:
                    break
                # the command's stdin
                if stdin_fd is not None:
                    while self.stdin_q:
                        try:
                            k = os.write(stdin_fd, self.stdin_q[:CHUNK])
                        except BlockingIOError:
                            break
                        except BrokenPipeError:
                            self.stdin_q.clear()
                            self.stdin_close = True
                            break
                        del self.stdin_q[:k]
                    if self.stdin_close and not self.stdin_q:
                        proc.stdin.close()
                        stdin_fd = None
                # the command's output, while the client keeps up
                for fd, ch in list(fds.items()):
                    if len(self.out) >= OUT_HIGH:
                        break
                    try:
                        data = os.read(fd, CHUNK)
                    except BlockingIOError:
                        continue
                    if data:
                        nbytes += len(data)
                        self.send_msg(ch, data)
                    else:
                        del fds[fd]
                self.flush()
                if not fds and proc.poll() is not None:
                    break
                rl = [self.sock] if len(self.stdin_q) < STDIN_HIGH else []
                if len(self.out) < OUT_HIGH:
                    rl += list(fds)
                wl = [self.sock] if self.out else []
                if stdin_fd is not None and self.stdin_q:
                    wl.append(stdin_fd)
                # an SSL socket may hold decrypted bytes select cannot see
                if self.sock.pending() and len(self.stdin_q) < STDIN_HIGH:
                    continue
                select.select(rl, wl, [], max(0.0, min(0.5 if fds else 0.05, next_ping - time.time())))
        except (OSError, ssl.SSLError) as e:
            util.log("exec %s: connection error %s" % (self.label, e))
            self.client_gone = True
        if self.client_closed or self.client_gone or self.h.server.stopping or self.sent_close:
            # the client left (or the server stops): the command is stopped, as the kubelet does
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            proc.wait()
            self.flush_until(2)
            who = "the client closed" if self.client_closed else "the client is gone" if self.client_gone \
                else "the server closed"
            self.finish(t0, "stopped (%s), %d bytes out" % (who, nbytes))
            return
        rc = proc.wait()
        code = rc if rc >= 0 else 128 - rc
        self.send_msg(3, json.dumps(status_json(code, self.argv)).encode())
        self.send_close(1000)
        self.flush_until(10)
        # wait briefly for the client's close frame, as RFC 6455 asks before dropping TCP
        deadline = time.time() + 2
        while not (self.client_closed or self.client_gone) and time.time() < deadline:
            try:
                self.read_client()
            except ProtocolError:
                break
            if self.client_closed or self.client_gone:
                break
            select.select([self.sock], [], [], 0.1)
        self.finish(t0, "exit %d, %d bytes out" % (code, nbytes))

    def flush_until(self, seconds):
        deadline = time.time() + seconds
        while self.out and not self.client_gone and time.time() < deadline:
            self.flush()
            if self.out:
                select.select([], [self.sock], [], 0.1)

    def finish(self, t0, what):
        self.flush_until(2)
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(2)
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ssl.SSLError):
            pass
        util.log("exec %s %s: %s, %d pings, %d pongs (%.0f ms)" % (
            self.label, json.dumps(self.argv)[:200], what, self.pings, self.pongs, (time.time() - t0) * 1000))


def install(api, op, pgm):
    """Wires exec into the API server (daemon.py): commands run with the operator's pods and servers."""
    api.execws = ExecEnv(op, pgm)
    return api.execws


def stop_all(env):
    for p in list(env.procs):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
