# The HTTPS API server: auth, discovery, CRUD/patch/watch on the store, scale and status subresources,
# SelfSubjectAccessReview, deletion with graceful periods/finalizers, and the fault-injection hooks.
import base64
import io
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import execws
from . import openapi
from . import patch as patchlib
from . import resources as R
from . import util
from .selector import (SelectorError, field_matches, label_matches, parse_field_selector,
                        parse_label_selector, reqs_to_string, selector_object_to_reqs)
from .strategy import ApiError, Strategy, invalid, not_found

PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]


class Faults:
    """Rules injected over the admin API: fail N requests, cut watches, force 410 Gone."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def add(self, rule):
        rule = dict(rule)
        rule.setdefault("count", 1)
        rule["_re"] = re.compile(rule.get("path", ""))
        with self.lock:
            self.rules.append(rule)

    def clear(self):
        with self.lock:
            self.rules = []

    def take(self, kind, method, target):
        with self.lock:
            for r in self.rules:
                if r["kind"] != kind or r["count"] == 0:
                    continue
                if r.get("method") and r["method"].upper() != method:
                    continue
                if not r["_re"].search(target):
                    continue
                if r["count"] > 0:
                    r["count"] -= 1
                return r
        return None

    def describe(self):
        with self.lock:
            return [{k: v for k, v in r.items() if k != "_re"} for r in self.rules]


class Api:
    def __init__(self, store, cfg):
        self.store, self.cfg = store, cfg
        self.strategy = Strategy(self)
        self.faults = Faults()
        self.admin_token = cfg["admin_token"]
        # token -> {"user": ..., "deny": [rule, ...]}; the admin token is the kubeconfig's.
        self.tokens = {cfg["token"]: {"user": "kubernetes-admin", "groups": ["system:masters"], "deny": []}}
        self.admin_ops = {}   # op name -> fn(body) -> result, registered by daemon
        self.pod_log = None   # fn(ns, name, query) -> text | None (pods/log), set by the operator
        self.port = None

    # -------------------------------------------------------------- authorisation
    def allowed(self, tok, verb, res_plural, group, ns, name, sub):
        for d in tok.get("deny", []):
            def m(k, v):
                want = d.get(k, "*")
                return want in ("*", None) or want == v
            resource = res_plural + ("/" + sub if sub else "")
            if (m("verb", verb) and m("group", group) and (m("resource", resource) or m("resource", res_plural))
                    and m("namespace", ns or "") and m("name", name or "")):
                return False
        return True


def _status_ok(details):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY the delayed ACK stalls
    # every response by ~40 ms on loopback
    disable_nagle_algorithm = True
    server_version = "kubesim"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    @property
    def api(self):
        return self.server.api

    # -------------------------------------------------------------- plumbing
    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                ln = int(self.rfile.readline().strip().split(b";")[0], 16)
                if ln == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(ln)
                self.rfile.readline()
            return data
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, code, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_obj(self, e):
        self.send_json(e.code, e.status(), e.headers)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        u = urllib.parse.urlsplit(self.path)
        self.q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        path = u.path.rstrip("/") or "/"
        t0 = time.time()
        code = [0]
        orig_send = self.send_response

        def rec(c, *a):
            code[0] = c
            orig_send(c, *a)
        self.send_response = rec
        try:
            body = self._body()
            auth = self.headers.get("Authorization", "")
            tokstr = auth[7:].strip() if auth.startswith("Bearer ") else None
            if path.startswith("/kubesim/"):
                return self.admin(method, path, body, tokstr)
            tok = self.api.tokens.get(tokstr) if tokstr else None
            if tok is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self.tok = tok
            target = u.path + ("?" + u.query if u.query else "")
            f = self.api.faults.take("stall", method, target)
            if f:
                # a server that holds the request without a word (then answers as usual)
                time.sleep(float(f.get("seconds", 30)))
            f = self.api.faults.take("error", method, target)
            if f and f.get("applied"):
                # the request takes effect, then its answer is lost: an error is sent in its place
                real = self.wfile
                self.wfile = io.BytesIO()
                try:
                    self.route(method, path, body)
                except ApiError:
                    pass
                finally:
                    self.wfile = real
            if f:
                c = int(f.get("code", 500))
                reason = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests",
                          504: "Timeout", 409: "Conflict", 403: "Forbidden"}.get(c, "InternalError")
                msg = f.get("message") or {429: "Too many requests, please try again later.",
                                           503: "the server is currently unable to handle the request"}.get(
                    c, "Internal error occurred: kubesim injected fault")
                hdr = {"Retry-After": str(f["retryAfter"])} if f.get("retryAfter") is not None else {}
                raise ApiError(c, reason, msg, {"retryAfterSeconds": int(f["retryAfter"])}
                               if f.get("retryAfter") is not None else None, hdr)
            self.route(method, path, body)
        except ApiError as e:
            try:
                self.send_error_obj(e)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:
            import traceback
            util.log("internal error", method, self.path, traceback.format_exc())
            try:
                self.send_error_obj(ApiError(500, "InternalError", "Internal error occurred: %s" % e))
            except OSError:
                pass
        finally:
            util.log("%s %s -> %s (%.0f ms)" % (method, self.path, code[0], (time.time() - t0) * 1000))

    # -------------------------------------------------------------- admin endpoint
    def admin(self, method, path, body, tokstr):
        if tokstr != self.api.admin_token:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if path == "/kubesim/v1/admin" and method == "POST":
            try:
                req = json.loads(body or b"{}")
            except ValueError as e:
                raise ApiError(400, "BadRequest", "bad json: %s" % e)
            reqs = req if isinstance(req, list) else [req]
            out = []
            for r in reqs:
                fn = self.api.admin_ops.get(r.get("op"))
                if fn is None:
                    raise ApiError(400, "BadRequest", "unknown admin op %r (known: %s)" %
                                   (r.get("op"), ", ".join(sorted(self.api.admin_ops))))
                out.append(fn(r))
            return self.send_json(200, out if isinstance(req, list) else out[0])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # -------------------------------------------------------------- routing
    def route(self, method, path, body):
        if execws.is_exec(path):
            return execws.serve(self, method, path)
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/version":
            return self.send_json(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.4-kubesim",
                                        "gitCommit": "0000000000000000000000000000000000000000",
                                        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                                        "goVersion": "go1.23.6", "compiler": "gc", "platform": "linux/amd64"})
        if path == "/openapi/v2":
            if "protobuf" in (self.headers.get("Accept") or ""):
                data = openapi.v2_protobuf()
                self.send_response(200)
                self.send_header("Content-Type", openapi.V2_PROTOBUF)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            return self.send_json(200, openapi.v2_json())
        if path == "/openapi/v3":
            return self.send_json(200, openapi.root())
        if path.startswith("/openapi/v3/"):
            doc = openapi.lookup(path[len("/openapi/v3/"):])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self.send_json(200, doc)
        if path == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:%d" % self.api.port}]})
        if path == "/apis":
            return self.send_json(200, R.group_list())
        segs = path.strip("/").split("/")
        if segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 2:
            if len(segs) == 2:
                g = R.api_group(segs[1])
                if g is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return self.send_json(200, g)
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (group, version) not in R.GROUPS:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self.send_json(200, R.resource_list(group, version))
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        res = R.lookup(group, version, rest[0])
        if res is None or (ns is not None and not res.namespaced) or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and not ((sub == "status" and res.status) or (sub == "scale" and res.scale) or sub in res.extra_sub):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if res.namespaced and ns is None and name is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = self.q.get("watch") in ("1", "true")
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}[method]
        if verb not in res.verbs and not (sub and verb in ("get", "update", "patch")):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "POST" and name:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if not self.api.allowed(self.tok, verb, res.plural, res.group, ns, name, sub):
            what = '%s "%s"' % (res.qualified, name) if name else res.qualified
            where = ' in the namespace "%s"' % ns if ns else " at the cluster scope"
            raise ApiError(403, "Forbidden", '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s'
                           % (what, self.tok["user"], verb, res.plural + ("/" + sub if sub else ""), res.group,
                              where), {"name": name, "group": res.group, "kind": res.plural} if name else
                           {"group": res.group, "kind": res.plural})
        self.res, self.ns, self.name, self.sub = res, ns, name, sub
        if res.plural == "selfsubjectaccessreviews":
            return self.ssar(body)
        if res.plural == "selfsubjectrulesreviews":
            return self.ssrr(body)
        if method == "GET":
            if res.plural == "pods" and sub == "log":
                return self.pod_log(ns, name)
            if watch:
                return self.watch(res, ns, name)
            if name:
                return self.get_one(res, ns, name, sub)
            return self.list_(res, ns)
        if method == "POST":
            return self.create(res, ns, body)
        if method == "PUT":
            return self.update(res, ns, name, sub, self._json(body))
        if method == "PATCH":
            return self.patch(res, ns, name, sub, body)
        if method == "DELETE":
            if name:
                return self.delete(res, ns, name, body)
            return self.delete_collection(res, ns, body)

    def pod_log(self, ns, name):
        """GET pods/NAME/log (kubectl logs): text/plain, from the hook the operator installs."""
        text = self.api.pod_log(ns, name, self.q) if self.api.pod_log else None
        if text is None:
            raise ApiError(404, "NotFound", 'pods "%s" not found' % name, {"name": name, "kind": "pods"})
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, body):
        ct = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ct == "application/vnd.kubernetes.protobuf":
            # kubectl's typed clients (auth can-i, create namespace/configmap/secret) send protobuf;
            # those few kinds are decoded, anything else gets 415.
            from . import proto
            try:
                _, kind, raw = proto.unwrap(body)
                if kind == "SelfSubjectAccessReview":
                    return {"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {},
                            "spec": proto.access_review(raw)}
                if kind == "SelfSubjectRulesReview":
                    return {"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {},
                            "spec": proto.rules_review(raw)}
                obj = proto.decode_object(kind, raw)
                if obj is not None:
                    obj["kind"], obj["apiVersion"] = kind, "v1"
                    return obj
            except (ValueError, IndexError) as e:
                raise ApiError(400, "BadRequest", "the object provided is unrecognized or malformed: %s" % e)
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json, application/yaml")
        try:
            if ct in ("application/yaml", "application/apply-patch+yaml"):
                import yaml
                return yaml.safe_load(body.decode())
            return json.loads(body.decode() or "null")
        except Exception as e:
            raise ApiError(400, "BadRequest", "the object provided is unrecognized or malformed: %s" % e)

    def _wants_table(self):
        return "as=Table" in (self.headers.get("Accept") or "")

    # -------------------------------------------------------------- reads
    def get_one(self, res, ns, name, sub):
        obj = self.api.store.get(res.key, ns, name)
        if obj is None:
            raise not_found(res, name)
        if sub == "scale":
            return self.send_json(200, self.scale_obj(res, obj))
        if self._wants_table():
            return self.send_json(200, R.to_table(res, [obj], obj["metadata"]["resourceVersion"]))
        self.send_json(200, obj)

    def _selectors(self, res):
        try:
            lreqs = parse_label_selector(self.q.get("labelSelector"))
            freqs = parse_field_selector(self.q.get("fieldSelector"))
        except SelectorError as e:
            raise ApiError(400, "BadRequest", "unable to parse requirement: %s" % e)
        for path, _, _ in freqs:
            if not R.field_label_ok(res, path):
                raise ApiError(400, "BadRequest", 'field label not supported: %s' % path)
        return lreqs, freqs

    def _match(self, obj, lreqs, freqs, name=None):
        if name and obj["metadata"]["name"] != name:
            return False
        return label_matches(lreqs, obj["metadata"].get("labels")) and field_matches(freqs, obj)

    def list_(self, res, ns):
        lreqs, freqs = self._selectors(res)
        items, rv = self.api.store.list(res.key, ns)
        items = [o for o in items if self._match(o, lreqs, freqs)]
        md = {"resourceVersion": rv}
        limit = int(self.q.get("limit") or 0)
        start = 0
        if self.q.get("continue"):
            try:
                c = json.loads(base64.b64decode(self.q["continue"]))
                start, rv = c["start"], c["rv"]
                md["resourceVersion"] = rv
            except Exception:
                raise ApiError(400, "BadRequest", "continue key is not valid")
        if limit > 0:
            page = items[start:start + limit]
            if start + limit < len(items):
                md["continue"] = base64.b64encode(json.dumps({"start": start + limit, "rv": rv}).encode()).decode()
                md["remainingItemCount"] = len(items) - start - limit
            items = page
        if self._wants_table():
            t = R.to_table(res, items, md["resourceVersion"])
            t["metadata"] = md
            return self.send_json(200, t)
        if res.builtin:
            for o in items:
                o.pop("kind", None)
                o.pop("apiVersion", None)
        self.send_json(200, {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": md,
                             "items": items})

    # -------------------------------------------------------------- watch
    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, res, ns, name):
        lreqs, freqs = self._selectors(res)
        store = self.api.store
        target = self.path
        gone = self.api.faults.take("gone", "GET", target)
        cut = self.api.faults.take("cut_watch", "GET", target)
        timeout = float(self.q.get("timeoutSeconds") or 1800)
        bookmarks = self.q.get("allowWatchBookmarks") in ("1", "true")
        initial = self.q.get("sendInitialEvents") in ("1", "true")
        rvq = self.q.get("resourceVersion", "")
        table = self._wants_table()
        if rvq not in ("", "0") and not rvq.isdigit():
            raise ApiError(400, "BadRequest", "invalid resource version: %s" % rvq)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        sent = [0]
        first_table = [True]

        def emit(etype, obj):
            if etype not in ("BOOKMARK", "ERROR") and table:
                obj = R.to_table(res, [obj], obj["metadata"]["resourceVersion"], first_table[0])
                first_table[0] = False
            self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            if etype not in ("BOOKMARK",):
                sent[0] += 1
            if cut and sent[0] >= int(cut.get("after", 0)):
                util.log("fault: cutting watch", target, "after", sent[0])
                # An abrupt cut (no terminating chunk), as a dropped connection looks to client-go.
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise BrokenPipeError("cut")

        def expired(rv):
            emit("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "too old resource version: %s (%s)" % (rv, store.rv),
                           "reason": "Expired", "code": 410})
            self._chunk(b"")

        if gone and int(gone.get("code", 410)) != 410:
            # an ERROR event of another status: the apiserver's trouble, not the client's version
            c = int(gone["code"])
            emit("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": gone.get("message") or "Internal error occurred: kubesim injected watch error",
                           "reason": "InternalError" if c == 500 else "Timeout" if c == 504 else "Failure", "code": c})
            self._chunk(b"")
            return
        if gone:
            return expired(rvq or "0")
        initial_objs, bm = [], None
        with store.lock:
            if rvq in ("", "0") or initial:
                items, cur = store.list(res.key, ns)
                last = int(cur)
                initial_objs = [o for o in items if self._match(o, lreqs, freqs, name)]
                if initial and bookmarks:
                    bm = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                        "resourceVersion": cur, "annotations": {"k8s.io/initial-events-end": "true"}}}
            else:
                try:
                    last = int(rvq)
                except ValueError:
                    raise ApiError(400, "BadRequest", "invalid resource version: %s" % rvq)
                if store.events_after(last) is None:
                    return expired(rvq)
        for o in initial_objs:
            emit("ADDED", o)
        if bm:
            emit("BOOKMARK", bm)
        deadline = time.time() + timeout
        next_bm = time.time() + self.api.cfg.get("bookmark_interval", 5.0)
        while time.time() < deadline and not self.server.stopping:
            with store.lock:
                evs = store.events_after(last)
                if evs is None:
                    return expired(last)
                if not evs:
                    store.cond.wait(timeout=min(0.5, max(0.01, deadline - time.time())))
                    evs = store.events_after(last) or []
            for rv, etype, rkey, obj, old in evs:
                last = rv
                if rkey != res.key or (ns is not None and obj["metadata"].get("namespace") != ns):
                    continue
                now_m = self._match(obj, lreqs, freqs, name)
                old_m = old is not None and self._match(old, lreqs, freqs, name)
                if etype == "MODIFIED":
                    if now_m and not old_m:
                        etype = "ADDED"
                    elif old_m and not now_m:
                        etype = "DELETED"
                    elif not now_m:
                        continue
                elif not now_m:
                    continue
                emit(etype, obj)
            if bookmarks and time.time() >= next_bm:
                emit("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                  "metadata": {"resourceVersion": str(last)}})
                next_bm = time.time() + self.api.cfg.get("bookmark_interval", 5.0)
        self._chunk(b"")

    # -------------------------------------------------------------- writes
    def _dry(self):
        return self.q.get("dryRun") == "All"

    def create(self, res, ns, body):
        obj = self._json(body)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the object provided is unrecognized or malformed")
        if obj.get("kind") and obj.get("kind") != res.kind:
            raise ApiError(400, "BadRequest", "the server rejected our request due to an error in our request: "
                           "kind %s does not match the resource %s" % (obj.get("kind"), res.plural))
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        md = obj.setdefault("metadata", {})
        if res.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                               "namespace sent on the request")
            md["namespace"] = ns
            if self.api.store.peek(("", "namespaces"), "", ns) is None:
                raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                               {"name": ns, "group": "", "kind": "namespaces"})
            nso = self.api.store.peek(("", "namespaces"), "", ns)
            if nso["metadata"].get("deletionTimestamp"):
                raise ApiError(403, "Forbidden", "%s \"%s\" is forbidden: unable to create new content in "
                               "namespace %s because it is being terminated" % (res.qualified, md.get("name"), ns))
        else:
            md.pop("namespace", None)
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + util.rand_suffix()
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation",
                  "selfLink", "managedFields"):
            if k == "resourceVersion" and md.get(k):
                raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
            md.pop(k, None)
        if res.builtin and res.status:
            obj.pop("status", None)
        obj = self.api.strategy.prepare_create(res, obj)
        if self._dry():
            return self.send_json(201, obj)
        out = self.api.store.create(res.key, obj, generation=res.generation)
        if out is None:
            raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified, md["name"]),
                           {"name": md["name"], "group": res.group, "kind": res.plural})
        self.send_json(201, out)

    def scale_obj(self, res, obj):
        md = obj["metadata"]
        sel = obj["spec"].get("selector")
        try:
            selstr = reqs_to_string(selector_object_to_reqs(sel) or [])
        except SelectorError:
            selstr = ""
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": md["name"], "namespace": md.get("namespace"), "uid": md["uid"],
                             "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selstr}}

    def _commit(self, res, cur, new, sub, code=200):
        """Apply update semantics of the main/status/scale endpoints; returns the stored object."""
        name = cur["metadata"]["name"]
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the object provided is unrecognized or malformed")
        nmd = new.get("metadata") or {}
        if nmd.get("name") and nmd["name"] != name:
            raise ApiError(400, "BadRequest", 'the name of the object (%s) does not match the name on the URL (%s)'
                           % (nmd["name"], name))
        rv = nmd.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                           'please apply your changes to the latest version and try again' % (res.qualified, name),
                           {"name": name, "group": res.group, "kind": res.plural})
        if not rv and not res.builtin and sub is None and self.command == "PUT":
            raise invalid(res, name, [("metadata.resourceVersion", "FieldValueInvalid",
                                       "Invalid value: 0x0: must be specified for an update")])
        if sub == "scale":
            out = util.dcopy(cur)
            r = (new.get("spec") or {}).get("replicas")
            if not isinstance(r, int) or r < 0:
                raise invalid(res, name, [("spec.replicas", "FieldValueInvalid",
                                           "Invalid value: %r: must be greater than or equal to 0" % (r,))])
            out["spec"]["replicas"] = r
        elif sub == "status":
            out = util.dcopy(cur)
            out["status"] = new.get("status", {})
        else:
            out = util.dcopy(new)
            out["kind"], out["apiVersion"] = res.kind, res.api_version
            md = out.setdefault("metadata", {})
            cmd = cur["metadata"]
            md["name"] = name
            if res.namespaced:
                md["namespace"] = cmd.get("namespace")
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in cmd:
                    md[k] = cmd[k]
                else:
                    md.pop(k, None)
            md.pop("managedFields", None)
            if res.status:
                if "status" in cur:
                    out["status"] = cur["status"]
                else:
                    out.pop("status", None)
            out = self.api.strategy.prepare_update(res, cur, out)
        if self._dry():
            return out
        stored, _ = self.api.store.replace(res.key, out, generation=res.generation)
        if stored is None:
            raise not_found(res, name)
        # An object waiting on finalizers goes away once the last one is removed.
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers") \
                and res.plural != "pods":
            self.api.store.remove(res.key, stored["metadata"].get("namespace"), name)
        return stored

    def update(self, res, ns, name, sub, new):
        with self.api.store.lock:
            cur = self.api.store.get(res.key, ns, name)
            if cur is None:
                raise not_found(res, name)
            out = self._commit(res, cur, new, sub)
        self.send_json(200, self.scale_obj(res, out) if sub == "scale" else out)

    def patch(self, res, ns, name, sub, body):
        ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ct not in PATCH_TYPES or (ct == "application/strategic-merge-patch+json" and not res.builtin):
            accepted = PATCH_TYPES if res.builtin else [t for t in PATCH_TYPES if "strategic" not in t]
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: " + ", ".join(accepted))
        if ct == "application/apply-patch+yaml" and not self.q.get("fieldManager"):
            raise invalid(res, name, [("fieldManager", "FieldValueRequired",
                                       "Required value: is required for apply patch")])
        p = self._json(body)
        with self.api.store.lock:
            cur = self.api.store.get(res.key, ns, name)
            if cur is None:
                if ct == "application/apply-patch+yaml":
                    # Server-side apply creates what does not exist.
                    p.setdefault("metadata", {})["name"] = name
                    return self.create(res, ns, json.dumps(p).encode())
                raise not_found(res, name)
            base = self.scale_obj(res, cur) if sub == "scale" else cur
            try:
                if ct == "application/json-patch+json":
                    new = patchlib.json_patch(base, p)
                elif ct == "application/merge-patch+json":
                    new = patchlib.merge_patch(base, p)
                elif ct == "application/apply-patch+yaml":
                    new = patchlib.merge_patch(base, p)
                else:
                    new = patchlib.strategic_merge(base, p)
            except patchlib.PatchError as e:
                raise ApiError(422, "Invalid", str(e))
            out = self._commit(res, cur, new, sub)
        self.send_json(200, self.scale_obj(res, out) if sub == "scale" else out)

    def _delete_opts(self, body):
        opts = {}
        if body:
            try:
                opts = json.loads(body.decode()) or {}
            except ValueError:
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        for k in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
            if k in self.q:
                v = self.q[k]
                opts[k] = int(v) if k == "gracePeriodSeconds" else (v == "true" if k == "orphanDependents" else v)
        return opts

    def delete(self, res, ns, name, body):
        opts = self._delete_opts(body)
        hdr = {}
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is not None:
            policy = "Orphan" if opts["orphanDependents"] else "Background"
        if policy is None and res.plural == "jobs":
            policy = "Orphan"
            hdr["Warning"] = ('299 - "child pods are preserved by default when jobs are deleted; set '
                              'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to '
                              'suppress this warning"')
        if policy not in (None, "Orphan", "Foreground", "Background"):
            raise invalid(res, name, [("propagationPolicy", "FieldValueNotSupported",
                                       'Unsupported value: "%s"' % policy)])
        with self.api.store.lock:
            cur = self.api.store.get(res.key, ns, name)
            if cur is None:
                raise not_found(res, name)
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": Precondition failed: '
                               'UID in precondition: %s, UID in object meta: %s' % (
                                   res.qualified, name, pre["uid"], cur["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been '
                               'modified; please apply your changes to the latest version and try again'
                               % (res.qualified, name))
            if self._dry():
                return self.send_json(200, cur, hdr)
            out, code = self.api.delete_object(res, cur, policy, opts.get("gracePeriodSeconds"))
        if out is None:
            return self.send_json(200, _status_ok({"name": name, "group": res.group, "kind": res.plural,
                                                   "uid": cur["metadata"]["uid"]}), hdr)
        self.send_json(code, out, hdr)

    def delete_collection(self, res, ns, body):
        lreqs, freqs = self._selectors(res)
        opts = self._delete_opts(body)
        items, rv = self.api.store.list(res.key, ns)
        done = []
        for o in items:
            if self._match(o, lreqs, freqs):
                self.api.delete_object(res, o, opts.get("propagationPolicy"), opts.get("gracePeriodSeconds"))
                done.append(o)
        if res.builtin:
            for o in done:
                o.pop("kind", None)
                o.pop("apiVersion", None)
        self.send_json(200, {"kind": res.kind + "List", "apiVersion": res.api_version,
                             "metadata": {"resourceVersion": rv}, "items": done})

    # -------------------------------------------------------------- authorization API
    def ssar(self, body):
        obj = self._json(body) or {}
        ra = (obj.get("spec") or {}).get("resourceAttributes")
        allowed = True
        if ra:
            allowed = self.api.allowed(self.tok, ra.get("verb", ""), ra.get("resource", ""), ra.get("group", ""),
                                       ra.get("namespace"), ra.get("name"), ra.get("subresource"))
        obj.setdefault("metadata", {})["creationTimestamp"] = None
        obj["kind"], obj["apiVersion"] = "SelfSubjectAccessReview", "authorization.k8s.io/v1"
        obj["status"] = {"allowed": allowed}
        if allowed:
            obj["status"]["reason"] = 'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole ' \
                                      '"cluster-admin" to Group "system:masters"'
        else:
            obj["status"]["denied"] = False
        self.send_json(201, obj)

    def ssrr(self, body):
        obj = self._json(body) or {}
        obj["kind"], obj["apiVersion"] = "SelfSubjectRulesReview", "authorization.k8s.io/v1"
        obj["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        self.send_json(201, obj)


def delete_object(api, res, cur, policy, grace):
    """The deletion state machine shared by the API and the controllers.
    Returns (object, http code) when the object lingers, (None, 200) when it is gone."""
    store = api.store
    md = cur["metadata"]
    ns, name = md.get("namespace"), md["name"]
    with store.lock:
        cur = store.get(res.key, ns, name)
        if cur is None:
            return None, 200
        md = cur["metadata"]
        if res.plural == "pods":
            phase = cur.get("status", {}).get("phase")
            if grace is None:
                grace = cur.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            if not cur.get("spec", {}).get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
            if grace == 0 and not md.get("finalizers"):
                out = store.remove(res.key, ns, name)
                return out, 200
            if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds", 0) <= grace:
                return cur, 200
            md["deletionTimestamp"] = util.now_iso(time.time() + grace)
            md["deletionGracePeriodSeconds"] = grace
            out, _ = store.replace(res.key, cur)
            return out, 200
        if res.plural == "namespaces":
            # Namespaces always linger (spec.finalizers): the namespace controller empties them first.
            if not md.get("deletionTimestamp"):
                md["deletionTimestamp"] = util.now_iso()
                cur.setdefault("status", {})["phase"] = "Terminating"
                cur, _ = store.replace(res.key, cur)
            return cur, 200
        fins = list(md.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in fins:
            fins.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
        if not fins:
            store.remove(res.key, ns, name)
            return None, 200
        if md.get("deletionTimestamp") and md.get("finalizers") == fins:
            return cur, 202
        md["finalizers"] = fins
        md.setdefault("deletionTimestamp", util.now_iso())
        md.setdefault("deletionGracePeriodSeconds", 0)
        if res.plural == "namespaces":
            cur.setdefault("status", {})["phase"] = "Terminating"
        out, _ = store.replace(res.key, cur, generation=res.generation)
        return out, 202


Api.delete_object = delete_object


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, api, certfile, keyfile, host="127.0.0.1", port=0):
        super().__init__((host, port), Handler)
        self.api = api
        self.stopping = False
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        # client-go switches to HTTP/2 only if ALPN offers it; we speak HTTP/1.1 (chunked watches).
        ctx.set_alpn_protocols(["http/1.1"])
        self.ctx = ctx
        api.port = self.server_address[1]

    def get_request(self):
        sock, addr = self.socket.accept()
        return sock, addr

    def finish_request(self, request, client_address):
        # TLS handshake in the worker thread, so a slow client cannot block accept().
        try:
            request.settimeout(30)
            tls = self.ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError):
            return
        self.RequestHandlerClass(tls, client_address, self)
