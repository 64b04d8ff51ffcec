# The kubelet/scheduler and the kube-controller-manager of the simulator: pod lifecycle, StatefulSet,
# Deployment -> ReplicaSet, DaemonSet, Job, PVC binding, garbage collection and namespace deletion.
import re
import threading
import time

from . import resources as R
from . import util
from .selector import label_matches, selector_object_to_reqs

PODS = ("", "pods")
PVCS = ("", "persistentvolumeclaims")
NODES = ("", "nodes")
STS = ("apps", "statefulsets")
DEPLOY = ("apps", "deployments")
RS = ("apps", "replicasets")
DS = ("apps", "daemonsets")
JOBS = ("batch", "jobs")
NAMESPACES = ("", "namespaces")


def owner_ref(obj, res):
    return {"apiVersion": res.api_version, "kind": res.kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_uid(obj):
    for r in obj["metadata"].get("ownerReferences") or []:
        if r.get("controller"):
            return r.get("uid")
    return None


def _drop_owner(obj, uid):
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)


def pod_ready(p):
    for c in p.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_active(p):
    return not p["metadata"].get("deletionTimestamp") and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def _cond(conds, ctype, status, reason=None, message=None, now=None):
    """Set a condition, keeping lastTransitionTime when the status does not change."""
    now = now or util.now_iso()
    for c in conds:
        if c["type"] == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c["status"] = status
            if reason is not None:
                c["reason"] = reason
            if message is not None:
                c["message"] = message
            return conds
    c = {"type": ctype, "status": status, "lastTransitionTime": now}
    if reason is not None:
        c["reason"] = reason
    if message is not None:
        c["message"] = message
    conds.append(c)
    return conds


class Controllers:
    def __init__(self, api, cfg):
        self.api, self.store, self.cfg = api, api.store, cfg
        self.dirty = threading.Event()
        self.store.listeners.append(lambda *a: self.dirty.set())
        self.stop = threading.Event()
        self.kubelet = {}           # pod uid -> lifecycle timestamps
        self.ip_next = 0
        self.net = cfg["net"]       # "127.N"
        self.pod_rules = []         # admin: per-pod timing overrides / failures
        self.job_fail = []          # admin: regexes of jobs whose pods fail
        self.sts_templates = {}     # revision -> template (ControllerRevision contents)
        self.job_counts = {}        # job uid -> {"succeeded": set(), "failed": set()}
        # Hooks the postgres-operator installs for spilo pods (readiness and termination depend on PG).
        self.ready_gate = lambda pod: True
        self.on_terminate = lambda pod: True
        self.extra = []             # more reconcilers (the operator's)
        self.thread = threading.Thread(target=self.run, name="controllers", daemon=True)

    def start(self):
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.dirty.wait(self.cfg.get("tick", 0.05))
            self.dirty.clear()
            try:
                self.tick()
            except Exception:
                import traceback
                util.log("controller error", traceback.format_exc())
                time.sleep(0.2)

    def tick(self):
        self.index()
        self.namespaces()
        self.gc()
        self.index()
        self.bind_pvcs()
        self.statefulsets()
        self.deployments()
        self.replicasets()
        self.daemonsets()
        self.jobs()
        for fn in self.extra:
            fn()
        self.index()
        self.kubelet_tick()

    # -------------------------------------------------------------- helpers
    def index(self):
        with self.store.lock:
            self.pods_by_owner = {}
            self.uids = {}
            for rkey, bucket in self.store.objects.items():
                for (ns, name), o in bucket.items():
                    self.uids[o["metadata"]["uid"]] = (rkey, ns, name)
            for o in self.store.objects.get(PODS, {}).values():
                cu = controller_uid(o)
                if cu:
                    self.pods_by_owner.setdefault(cu, []).append(o)

    def create(self, rkey, obj):
        res = R.BY_KEY[rkey]
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        obj = self.api.strategy.prepare_create(res, obj)
        return self.store.create(rkey, obj, generation=res.generation)

    def delete(self, rkey, obj, policy=None, grace=None):
        return self.api.delete_object(R.BY_KEY[rkey], obj, policy, grace)

    def set_status(self, rkey, obj, status):
        if obj.get("status") == status:
            return
        ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]

        def fn(o):
            if o.get("status") == status:
                return False
            o["status"] = status
        self.store.mutate(rkey, ns, name, fn)

    def timing(self, pod, key):
        ident = "%s/%s" % (pod["metadata"].get("namespace"), pod["metadata"]["name"])
        for r in self.pod_rules:
            if key in r and re.search(r.get("match", ""), ident):
                return float(r[key])
        return float(self.cfg.get(key, 0.3))

    def new_ip(self):
        # Pod IPs: 127.N.1.1 upwards (127.N.0.x are the nodes), never reused within a run.
        self.ip_next += 1
        n = self.ip_next - 1
        return "%s.%d.%d" % (self.net, 1 + n // 250, 1 + n % 250)

    def _pod_from_template(self, template, name, ns, owner, res, extra_labels=None):
        tm = util.dcopy(template.get("metadata") or {})
        labels = dict(tm.get("labels") or {})
        labels.update(extra_labels or {})
        md = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner_ref(owner, res)]}
        if tm.get("annotations"):
            md["annotations"] = tm["annotations"]
        return {"metadata": md, "spec": util.dcopy(template.get("spec") or {})}

    # -------------------------------------------------------------- namespaces and garbage collection
    def namespaces(self):
        nss, _ = self.store.list(NAMESPACES, copy=False)
        for ns in nss:
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            left = 0
            for r in R.RESOURCES:
                if not r.namespaced:
                    continue
                items, _ = self.store.list(r.key, name)
                for o in items:
                    left += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        self.delete(r.key, o, "Background")
            if left == 0:
                self.store.remove(NAMESPACES, "", name)

    def gc(self):
        with self.store.lock:
            all_objs = [(rkey, o) for rkey, b in self.store.objects.items() for o in b.values()]
        for rkey, o in all_objs:
            md = o["metadata"]
            refs = md.get("ownerReferences") or []
            if refs and not md.get("deletionTimestamp"):
                alive = [r for r in refs if r.get("uid") in self.uids]
                if not alive:
                    self.delete(rkey, o, "Background")
                elif len(alive) != len(refs):
                    gone = {r.get("uid") for r in refs} - {r.get("uid") for r in alive}
                    self.store.mutate(rkey, md.get("namespace"), md["name"],
                                      lambda x: [_drop_owner(x, u) for u in gone])
            fins = md.get("finalizers") or []
            if md.get("deletionTimestamp") and fins:
                uid = md["uid"]
                deps = [(k, d) for k, d in all_objs if any(r.get("uid") == uid for r in
                                                          d["metadata"].get("ownerReferences") or [])]
                if "orphan" in fins:
                    for k, d in deps:
                        self.store.mutate(k, d["metadata"].get("namespace"), d["metadata"]["name"],
                                          lambda x: _drop_owner(x, uid))
                    self._drop_finalizer(rkey, o, "orphan")
                elif "foregroundDeletion" in fins:
                    for k, d in deps:
                        if not d["metadata"].get("deletionTimestamp"):
                            self.delete(k, d, "Foreground")
                    if not deps:
                        self._drop_finalizer(rkey, o, "foregroundDeletion")

    def _drop_finalizer(self, rkey, o, fin):
        md = o["metadata"]

        def fn(x):
            x["metadata"]["finalizers"] = [f for f in x["metadata"].get("finalizers") or [] if f != fin]
            if not x["metadata"]["finalizers"]:
                del x["metadata"]["finalizers"]
        out = self.store.mutate(rkey, md.get("namespace"), md["name"], fn)
        if out and not out["metadata"].get("finalizers") and rkey != PODS:
            self.store.remove(rkey, md.get("namespace"), md["name"])

    def bind_pvcs(self):
        pvcs, _ = self.store.list(PVCS, copy=False)
        for p in pvcs:
            if p.get("status", {}).get("phase") == "Pending" and not p["metadata"].get("deletionTimestamp"):
                size = util.get_path(p, "spec.resources.requests.storage", "1Gi")

                def fn(x):
                    x["spec"].setdefault("volumeName", "pvc-" + x["metadata"]["uid"])
                    x["spec"].setdefault("storageClassName", "k8s-block-replicated")
                    x["status"] = {"phase": "Bound", "accessModes": x["spec"].get("accessModes", ["ReadWriteOnce"]),
                                   "capacity": {"storage": size}}
                self.store.mutate(PVCS, p["metadata"]["namespace"], p["metadata"]["name"], fn)

    # -------------------------------------------------------------- kubelet and scheduler
    def nodes_for(self, spec):
        nodes, _ = self.store.list(NODES, copy=False)
        out = []
        tols = spec.get("tolerations") or []
        sel = spec.get("nodeSelector") or {}
        for n in nodes:
            labels = n["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in sel.items()):
                continue
            ok = True
            for t in n.get("spec", {}).get("taints") or []:
                if t.get("effect") not in ("NoSchedule", "NoExecute"):
                    continue
                if not any(tol.get("operator") == "Exists" and (not tol.get("key") or tol.get("key") == t["key"])
                           or (tol.get("key") == t["key"] and tol.get("value") == t.get("value"))
                           for tol in tols):
                    ok = False
            if ok:
                out.append(n)
        return out

    def kubelet_tick(self):
        pods, _ = self.store.list(PODS, copy=False)
        now = time.time()
        live = set()
        for p in pods:
            md = p["metadata"]
            uid = md["uid"]
            live.add(uid)
            st = self.kubelet.setdefault(uid, {"seen": now})
            ns, name = md["namespace"], md["name"]
            if md.get("deletionTimestamp"):
                if "term" not in st:
                    st["term"] = now
                    util.log("kubelet: terminating pod", ns + "/" + name)
                grace = min(float(md.get("deletionGracePeriodSeconds", 0)), self.timing(p, "grace"))
                if now - st["term"] >= grace and self.on_terminate(p) and not md.get("finalizers"):
                    self.store.remove(PODS, ns, name)
                    util.log("kubelet: pod gone", ns + "/" + name)
                continue
            spec, status = p.get("spec", {}), p.get("status", {})
            phase = status.get("phase", "Pending")
            if not spec.get("nodeName"):
                nodes = self.nodes_for(spec)
                if not nodes:
                    continue
                node = nodes[hash(name) % len(nodes)]["metadata"]["name"]

                def sched(x, node=node):
                    x["spec"]["nodeName"] = node
                    s = x.setdefault("status", {})
                    s["phase"] = "Pending"
                    s["conditions"] = _cond(s.get("conditions") or [], "PodScheduled", "True")
                    s["containerStatuses"] = [
                        {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                         "restartCount": 0, "started": False, "state": {"waiting": {"reason": "ContainerCreating"}},
                         "lastState": {}} for c in x["spec"].get("containers") or []]
                self.store.mutate(PODS, ns, name, sched)
                st["sched"] = now
                continue
            st.setdefault("sched", now)
            if phase == "Pending":
                if now - st["sched"] < self.timing(p, "pod_start"):
                    continue
                env, missing = self.resolve_env(p)
                if missing:
                    # as the kubelet: the container cannot be created until the secret exists (retried)
                    if not st.get("config_error"):
                        st["config_error"] = missing
                        util.log("kubelet: pod %s/%s: %s" % (ns, name, missing))
                        self.store.mutate(PODS, ns, name, lambda x, m=missing: self._config_error(x, m))
                    continue
                st["env"] = env
                ip = self.new_ip()
                node = self.store.peek(NODES, "", spec["nodeName"])
                hostip = (node or {}).get("status", {}).get("addresses", [{}])[0].get("address", "")

                def start(x, ip=ip, hostip=hostip):
                    s = x.setdefault("status", {})
                    t = util.now_iso()
                    s.update({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": hostip,
                              "hostIPs": [{"ip": hostip}], "startTime": s.get("startTime", t)})
                    conds = s.get("conditions") or []
                    for ct in ("PodReadyToStartContainers", "Initialized"):
                        _cond(conds, ct, "True")
                    _cond(conds, "Ready", "False", "ContainersNotReady", "containers with unready status")
                    _cond(conds, "ContainersReady", "False", "ContainersNotReady", "containers with unready status")
                    s["conditions"] = conds
                    s["containerStatuses"] = [
                        {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                         "restartCount": 0, "started": True, "state": {"running": {"startedAt": t}},
                         "lastState": {}, "containerID": "containerd://" + util.new_uid().replace("-", "")}
                        for c in x["spec"].get("containers") or []]
                self.store.mutate(PODS, ns, name, start)
                st["running"] = now
                util.log("kubelet: pod running", ns + "/" + name, ip)
                continue
            if phase != "Running":
                continue
            st.setdefault("running", now)
            job = next((r for r in md.get("ownerReferences") or [] if r.get("kind") == "Job"), None)
            if (job or spec.get("restartPolicy") in ("Never", "OnFailure")) and \
                    now - st["running"] >= self.timing(p, "job_duration"):
                jobname = md.get("labels", {}).get("job-name", job["name"] if job else "")
                fail = any(re.search(rx, "%s/%s" % (ns, jobname)) for rx in self.job_fail)
                self.store.mutate(PODS, ns, name, lambda x: self._terminated(x, 1 if fail else 0))
                continue
            if not pod_ready(p) and now - st["running"] >= self.timing(p, "pod_ready") and self.ready_gate(p):
                def ready(x):
                    s = x["status"]
                    _cond(s["conditions"], "Ready", "True")
                    _cond(s["conditions"], "ContainersReady", "True")
                    for c in s["conditions"]:
                        if c["type"] in ("Ready", "ContainersReady"):
                            c.pop("reason", None)
                            c.pop("message", None)
                    for cs in s.get("containerStatuses") or []:
                        cs["ready"] = True
                self.store.mutate(PODS, ns, name, ready)
                util.log("kubelet: pod ready", ns + "/" + name)
            elif pod_ready(p) and not self.ready_gate(p):
                def unready(x):
                    s = x["status"]
                    _cond(s["conditions"], "Ready", "False", "ContainersNotReady", "containers with unready status")
                    _cond(s["conditions"], "ContainersReady", "False", "ContainersNotReady",
                          "containers with unready status")
                    for cs in s.get("containerStatuses") or []:
                        cs["ready"] = False
                self.store.mutate(PODS, ns, name, unready)
        for uid in list(self.kubelet):
            if uid not in live:
                del self.kubelet[uid]

    def resolve_env(self, pod):
        """The containers' environment as the kubelet resolves it at container start: values, and
        valueFrom.secretKeyRef read from the Secret now (later changes to the Secret do not reach a
        running container). Returns ({container: {NAME: value}}, None) | (None, "secret ... not found")."""
        out = {}
        ns = pod["metadata"]["namespace"]
        for c in pod.get("spec", {}).get("containers") or []:
            env = out.setdefault(c["name"], {})
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    if "value" in e:
                        env[e["name"]] = e["value"]
                    continue
                sec = self.store.peek(("", "secrets"), ns, ref.get("name", ""))
                data = (sec or {}).get("data") or {}
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    if sec is None:
                        return None, 'secret "%s" not found' % ref.get("name")
                    return None, "couldn't find key %s in Secret %s/%s" % (ref.get("key"), ns, ref.get("name"))
                import base64
                env[e["name"]] = base64.b64decode(data[ref["key"]]).decode(errors="replace")
        return out, None

    def container_env(self, pod):
        """The environment pod's containers were started with ({} before they start)."""
        return (self.kubelet.get(pod["metadata"]["uid"]) or {}).get("env") or {}

    @staticmethod
    def _config_error(x, message):
        for cs in x.get("status", {}).get("containerStatuses") or []:
            cs["state"] = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}

    def _terminated(self, x, code):
        s = x["status"]
        t = util.now_iso()
        s["phase"] = "Succeeded" if code == 0 else "Failed"
        for cs in s.get("containerStatuses") or []:
            started = (cs.get("state", {}).get("running") or {}).get("startedAt", t)
            cs["state"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": started, "finishedAt": t}}
            cs["ready"] = False
            cs["started"] = False
        _cond(s["conditions"], "Ready", "False", "PodCompleted")
        _cond(s["conditions"], "ContainersReady", "False", "PodCompleted")

    # -------------------------------------------------------------- StatefulSet
    def statefulsets(self):
        res = R.BY_KEY[STS]
        for sts in self.store.list(STS, copy=False)[0]:
            md, spec = sts["metadata"], sts["spec"]
            if md.get("deletionTimestamp"):
                continue
            ns, name = md["namespace"], md["name"]
            reqs = selector_object_to_reqs(spec.get("selector")) or []
            rev = "%s-%s" % (name, util.template_hash(spec["template"]))
            self.sts_templates[rev] = spec["template"]
            # Adopt orphans that match (as the real controller does), e.g. pods the operator orphaned.
            pods = list(self.pods_by_owner.get(md["uid"], []))
            for p in self.store.list(PODS, ns, copy=False)[0]:
                if not controller_uid(p) and label_matches(reqs, p["metadata"].get("labels")) and \
                        re.fullmatch(re.escape(name) + r"-\d+", p["metadata"]["name"]) and \
                        not p["metadata"].get("deletionTimestamp"):
                    self.store.mutate(PODS, ns, p["metadata"]["name"], lambda x: x["metadata"].__setitem__(
                        "ownerReferences", (x["metadata"].get("ownerReferences") or []) + [owner_ref(sts, res)]))
                    pods.append(p)
            byord = {}
            for p in pods:
                m = re.fullmatch(re.escape(name) + r"-(\d+)", p["metadata"]["name"])
                if m:
                    byord[int(m.group(1))] = p
            replicas = spec.get("replicas", 1)
            status = dict(sts.get("status") or {})
            current_rev = status.get("currentRevision") or rev
            parallel = spec.get("podManagementPolicy") == "Parallel"
            ustrat = spec.get("updateStrategy") or {}
            partition = (ustrat.get("rollingUpdate") or {}).get("partition", 0) or 0

            def healthy(p):
                return p is not None and pod_ready(p) and not p["metadata"].get("deletionTimestamp")

            # Failed/succeeded pods are deleted and re-created.
            for i, p in byord.items():
                if p.get("status", {}).get("phase") in ("Failed", "Succeeded") and not p["metadata"].get(
                        "deletionTimestamp"):
                    self.delete(PODS, p)
            for i in range(replicas):
                if i in byord:
                    if not parallel and not healthy(byord[i]):
                        break
                    continue
                prev_ok = all(healthy(byord.get(j)) for j in range(i))
                if not parallel and not prev_ok:
                    break
                tpl_rev = rev
                if ustrat.get("type", "RollingUpdate") == "RollingUpdate" and i < partition and \
                        current_rev in self.sts_templates:
                    tpl_rev = current_rev
                self._create_sts_pod(sts, res, i, tpl_rev)
                if not parallel:
                    break
            condemned = sorted((i for i in byord if i >= replicas), reverse=True)
            if condemned:
                if parallel:
                    for i in condemned:
                        if not byord[i]["metadata"].get("deletionTimestamp"):
                            self.delete(PODS, byord[i])
                elif not any(p["metadata"].get("deletionTimestamp") for p in byord.values()):
                    self.delete(PODS, byord[condemned[0]])
            elif ustrat.get("type", "RollingUpdate") == "RollingUpdate":
                live = [byord.get(i) for i in range(replicas)]
                if all(healthy(p) for p in live):
                    for i in range(replicas - 1, partition - 1, -1):
                        if byord[i]["metadata"].get("labels", {}).get("controller-revision-hash") != rev:
                            util.log("statefulset: rolling", ns + "/" + name, "pod", i)
                            self.delete(PODS, byord[i])
                            break
            pods_now = [p for i, p in byord.items()]
            st = {"observedGeneration": md.get("generation", 1), "replicas": len(pods_now),
                  "readyReplicas": sum(1 for p in pods_now if healthy(p)),
                  "currentReplicas": sum(1 for p in pods_now if p["metadata"].get("labels", {}).get(
                      "controller-revision-hash") == current_rev),
                  "updatedReplicas": sum(1 for p in pods_now if p["metadata"].get("labels", {}).get(
                      "controller-revision-hash") == rev),
                  "currentRevision": current_rev, "updateRevision": rev, "collisionCount": 0}
            st["availableReplicas"] = st["readyReplicas"]
            if ustrat.get("type", "RollingUpdate") == "RollingUpdate" and st["updatedReplicas"] == st["replicas"] \
                    and st["readyReplicas"] == st["replicas"] and st["replicas"] == replicas:
                st["currentRevision"] = rev
                st["currentReplicas"] = st["updatedReplicas"]
            for k in ("readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"):
                if st[k] == 0 and k != "availableReplicas":
                    del st[k]
            self.set_status(STS, sts, st)

    def _create_sts_pod(self, sts, res, i, rev):
        md, spec = sts["metadata"], sts["spec"]
        ns, name = md["namespace"], md["name"]
        pname = "%s-%d" % (name, i)
        tpl = self.sts_templates.get(rev, spec["template"])
        pod = self._pod_from_template(tpl, pname, ns, sts, res, {
            "controller-revision-hash": rev, "statefulset.kubernetes.io/pod-name": pname,
            "apps.kubernetes.io/pod-index": str(i)})
        pod["spec"]["hostname"] = pname
        if spec.get("serviceName"):
            pod["spec"]["subdomain"] = spec["serviceName"]
        vols = pod["spec"].setdefault("volumes", [])
        for vct in spec.get("volumeClaimTemplates") or []:
            claim = "%s-%s" % (vct["metadata"]["name"], pname)
            vols.insert(0, {"name": vct["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}})
            if self.store.peek(PVCS, ns, claim) is None:
                labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
                labels.update(vct["metadata"].get("labels") or {})
                self.create(PVCS, {"metadata": {"name": claim, "namespace": ns, "labels": labels},
                                   "spec": util.dcopy(vct.get("spec") or {})})
        if self.create(PODS, pod):
            util.log("statefulset: created pod", ns + "/" + pname)

    # -------------------------------------------------------------- Deployment and ReplicaSet
    def deployments(self):
        dres, rres = R.BY_KEY[DEPLOY], R.BY_KEY[RS]
        all_rs = self.store.list(RS, copy=False)[0]
        for d in self.store.list(DEPLOY, copy=False)[0]:
            md, spec = d["metadata"], d["spec"]
            if md.get("deletionTimestamp"):
                continue
            ns, name = md["namespace"], md["name"]
            tpl = util.dcopy(spec["template"])
            tpl.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
            h = util.template_hash(tpl)[:10]
            owned = [r for r in all_rs if controller_uid(r) == md["uid"] and not r["metadata"].get("deletionTimestamp")]
            revs = [int(r["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "0"))
                    for r in owned]
            new = next((r for r in owned if r["metadata"].get("labels", {}).get("pod-template-hash") == h), None)
            desired = spec.get("replicas", 1)
            maxrev = max(revs or [0])
            if new is None:
                rs_tpl = util.dcopy(tpl)
                rs_tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                sel = util.dcopy(spec["selector"])
                sel.setdefault("matchLabels", {})["pod-template-hash"] = h
                labels = dict(rs_tpl["metadata"]["labels"])
                rsobj = {"metadata": {"name": "%s-%s" % (name, h), "namespace": ns, "labels": labels,
                                      "annotations": {"deployment.kubernetes.io/revision": str(maxrev + 1),
                                                      "deployment.kubernetes.io/desired-replicas": str(desired),
                                                      "deployment.kubernetes.io/max-replicas": str(desired + 1)},
                                      "ownerReferences": [owner_ref(d, dres)]},
                         "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                                  "selector": sel, "template": rs_tpl}}
                new = self.create(RS, rsobj)
                if new is None:
                    continue
                util.log("deployment: new replicaset", ns + "/" + new["metadata"]["name"])
                owned.append(new)
            elif int(new["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "0")) < maxrev:
                self.store.mutate(RS, ns, new["metadata"]["name"], lambda x: x["metadata"]["annotations"].__setitem__(
                    "deployment.kubernetes.io/revision", str(maxrev + 1)))
            olds = [r for r in owned if r["metadata"]["uid"] != new["metadata"]["uid"]]
            new_avail = new.get("status", {}).get("availableReplicas", 0)
            recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
            if not spec.get("paused"):
                if recreate:
                    old_pods = sum(len([p for p in self.pods_by_owner.get(r["metadata"]["uid"], [])]) for r in olds)
                    for r in olds:
                        self._scale_rs(r, 0)
                    self._scale_rs(new, desired if old_pods == 0 else 0)
                else:
                    self._scale_rs(new, desired)
                    budget = max(0, desired - new_avail)
                    for r in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"], reverse=True):
                        keep = min(r["spec"].get("replicas", 0), budget)
                        budget -= keep
                        self._scale_rs(r, keep)
            all_owned = [self.store.peek(RS, ns, r["metadata"]["name"]) or r for r in owned]
            pods = [p for r in all_owned for p in self.pods_by_owner.get(r["metadata"]["uid"], [])
                    if not p["metadata"].get("deletionTimestamp")]
            new_pods = [p for p in self.pods_by_owner.get(new["metadata"]["uid"], [])
                        if not p["metadata"].get("deletionTimestamp")]
            ready = sum(1 for p in pods if pod_ready(p))
            st = dict(d.get("status") or {})
            new_st = {"observedGeneration": md.get("generation", 1), "replicas": len(pods),
                      "updatedReplicas": len(new_pods), "readyReplicas": ready, "availableReplicas": ready,
                      "unavailableReplicas": max(0, desired - ready)}
            if new_st["unavailableReplicas"] == 0:
                del new_st["unavailableReplicas"]
            for k in ("readyReplicas", "availableReplicas", "replicas", "updatedReplicas"):
                if new_st[k] == 0:
                    del new_st[k]
            mu = (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable", "25%")
            max_unavail = int(desired * int(mu[:-1]) / 100) if isinstance(mu, str) and mu.endswith("%") else int(mu or 0)
            conds = util.dcopy(st.get("conditions") or [])
            now = util.now_iso()
            if ready >= desired - max_unavail:
                _cond(conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
            else:
                _cond(conds, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", now)
            complete = len(new_pods) == desired and len(pods) == desired and \
                sum(1 for p in new_pods if pod_ready(p)) == desired
            rsname = new["metadata"]["name"]
            if complete:
                _cond(conds, "Progressing", "True", "NewReplicaSetAvailable",
                      'ReplicaSet "%s" has successfully progressed.' % rsname, now)
            else:
                _cond(conds, "Progressing", "True", "ReplicaSetUpdated", 'ReplicaSet "%s" is progressing.' % rsname, now)
            for c in conds:
                old = next((o for o in st.get("conditions") or [] if o["type"] == c["type"]), None)
                if old is None or old.get("reason") != c.get("reason") or old.get("status") != c.get("status"):
                    c["lastUpdateTime"] = now
                else:
                    c["lastUpdateTime"] = old.get("lastUpdateTime", now)
            conds.sort(key=lambda c: 0 if c["type"] == "Available" else 1)
            new_st["conditions"] = conds
            self.set_status(DEPLOY, d, new_st)

    def _scale_rs(self, r, n):
        if r["spec"].get("replicas") == n:
            return

        def fn(x):
            if x["spec"].get("replicas") == n:
                return False
            x["spec"]["replicas"] = n
            x["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = \
                x["metadata"].get("annotations", {}).get("deployment.kubernetes.io/desired-replicas", str(n))
        self.store.mutate(RS, r["metadata"]["namespace"], r["metadata"]["name"], fn, generation=True)

    def replicasets(self):
        res = R.BY_KEY[RS]
        for r in self.store.list(RS, copy=False)[0]:
            md, spec = r["metadata"], r["spec"]
            if md.get("deletionTimestamp"):
                continue
            ns = md["namespace"]
            pods = self.pods_by_owner.get(md["uid"], [])
            active = [p for p in pods if pod_active(p)]
            want = spec.get("replicas", 1)
            if len(active) < want:
                prefix = md["name"] + "-"
                for _ in range(want - len(active)):
                    pod = self._pod_from_template(spec["template"], prefix + util.rand_suffix(), ns, r, res)
                    self.create(PODS, pod)
            elif len(active) > want:
                # Prefer deleting unscheduled, then not ready, then the newest pods.
                victims = sorted(active, key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p),
                                                        p["metadata"]["creationTimestamp"]), reverse=False)
                victims = sorted(victims[:], key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p)))
                for p in victims[:len(active) - want]:
                    self.delete(PODS, p)
            for p in pods:
                if p.get("status", {}).get("phase") in ("Failed", "Succeeded") and not p["metadata"].get(
                        "deletionTimestamp"):
                    self.delete(PODS, p)
            ready = sum(1 for p in active if pod_ready(p))
            st = {"replicas": len(active), "fullyLabeledReplicas": len(active), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": md.get("generation", 1)}
            for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
                if st[k] == 0:
                    del st[k]
            self.set_status(RS, r, st)

    # -------------------------------------------------------------- DaemonSet
    def daemonsets(self):
        res = R.BY_KEY[DS]
        for d in self.store.list(DS, copy=False)[0]:
            md, spec = d["metadata"], d["spec"]
            if md.get("deletionTimestamp"):
                continue
            ns = md["namespace"]
            h = util.template_hash(spec["template"])[:10]
            nodes = [n["metadata"]["name"] for n in self.nodes_for(spec["template"].get("spec") or {})]
            pods = [p for p in self.pods_by_owner.get(md["uid"], []) if not p["metadata"].get("deletionTimestamp")]
            terminating = [p for p in self.pods_by_owner.get(md["uid"], []) if p["metadata"].get("deletionTimestamp")]
            bynode = {}
            for p in pods:
                bynode.setdefault(p["spec"].get("nodeName"), []).append(p)
            for node in nodes:
                if node not in bynode and not any(p["spec"].get("nodeName") == node for p in terminating):
                    pod = self._pod_from_template(spec["template"], md["name"] + "-" + util.rand_suffix(), ns, d, res,
                                                  {"controller-revision-hash": h,
                                                   "pod-template-generation": str(md.get("generation", 1))})
                    pod["spec"]["nodeName"] = node
                    pod["spec"].setdefault("affinity", {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                            "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}})
                    self.create(PODS, pod)
            for node, ps in bynode.items():
                for p in (ps if node not in nodes else ps[1:]):
                    self.delete(PODS, p)
            us = spec.get("updateStrategy") or {}
            if us.get("type", "RollingUpdate") == "RollingUpdate":
                mu = int((us.get("rollingUpdate") or {}).get("maxUnavailable", 1) or 1)
                unavailable = len(terminating) + sum(1 for n in nodes if not any(
                    pod_ready(p) for p in bynode.get(n, [])))
                old = [p for p in pods if p["metadata"].get("labels", {}).get("controller-revision-hash") != h]
                for p in sorted(old, key=lambda p: p["spec"].get("nodeName", ""))[:max(0, mu - unavailable)]:
                    util.log("daemonset: rolling", ns + "/" + md["name"], p["spec"].get("nodeName"))
                    self.delete(PODS, p)
            ready = sum(1 for n in nodes if any(pod_ready(p) for p in bynode.get(n, [])))
            updated = sum(1 for n in nodes if any(p["metadata"].get("labels", {}).get("controller-revision-hash") == h
                                                   for p in bynode.get(n, [])))
            st = {"currentNumberScheduled": sum(1 for n in nodes if n in bynode), "desiredNumberScheduled": len(nodes),
                  "numberMisscheduled": 0, "numberReady": ready, "updatedNumberScheduled": updated,
                  "numberAvailable": ready, "observedGeneration": md.get("generation", 1)}
            if len(nodes) - ready > 0:
                st["numberUnavailable"] = len(nodes) - ready
            for k in ("numberAvailable", "updatedNumberScheduled"):
                if st[k] == 0:
                    del st[k]
            self.set_status(DS, d, st)

    # -------------------------------------------------------------- Job
    def jobs(self):
        res = R.BY_KEY[JOBS]
        for j in self.store.list(JOBS, copy=False)[0]:
            md, spec = j["metadata"], j["spec"]
            if md.get("deletionTimestamp"):
                continue
            ns = md["namespace"]
            st = util.dcopy(j.get("status") or {})
            conds = st.get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds):
                continue
            if spec.get("suspend"):
                continue
            counts = self.job_counts.setdefault(md["uid"], {"succeeded": set(), "failed": set()})
            pods = self.pods_by_owner.get(md["uid"], [])
            for p in pods:
                ph = p.get("status", {}).get("phase")
                if ph == "Succeeded":
                    counts["succeeded"].add(p["metadata"]["uid"])
                elif ph == "Failed":
                    counts["failed"].add(p["metadata"]["uid"])
            active = [p for p in pods if pod_active(p)]
            completions = spec.get("completions", 1)
            succeeded, failed = len(counts["succeeded"]), len(counts["failed"])
            now = util.now_iso()
            st.setdefault("startTime", now)
            if succeeded >= completions:
                _cond(conds, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now)
                _cond(conds, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now)
                st["completionTime"] = now
                active_n = 0
                util.log("job: complete", ns + "/" + md["name"])
            elif failed > spec.get("backoffLimit", 6):
                _cond(conds, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)
                _cond(conds, "Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)
                for p in active:
                    self.delete(PODS, p)
                active_n = 0
            else:
                want = min(spec.get("parallelism", 1), completions - succeeded)
                for _ in range(max(0, want - len(active))):
                    pod = self._pod_from_template(spec["template"], md["name"] + "-" + util.rand_suffix(), ns, j, res)
                    self.create(PODS, pod)
                active_n = max(want, len(active))
            if conds:
                st["conditions"] = conds
            st["active"] = active_n
            if not active_n:
                del st["active"]
            st["ready"] = sum(1 for p in active if pod_ready(p))
            st["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
            if succeeded:
                st["succeeded"] = succeeded
            if failed:
                st["failed"] = failed
            st["uncountedTerminatedPods"] = {}
            self.set_status(JOBS, j, st)
