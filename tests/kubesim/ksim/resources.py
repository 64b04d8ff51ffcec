# The resource registry: every served kind with its group/version, verbs, short names, subresources,
# and the server-side Table columns kubectl prints (kubectl asks for as=Table on get).
from . import util

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Res:
    def __init__(self, group, version, plural, kind, namespaced=True, short=(), verbs=ALL_VERBS,
                 status=True, scale=False, generation=False, categories=(), singular=None, extra_sub=()):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short, self.verbs = namespaced, list(short), list(verbs)
        self.status, self.scale, self.generation = status, scale, generation
        self.categories, self.extra_sub = list(categories), list(extra_sub)
        self.singular = singular or kind.lower()
        self.builtin = group != "acid.zalan.do"

    @property
    def key(self):
        return (self.group, self.plural)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def qualified(self):
        # "statefulsets.apps", "pods": how error messages name a resource.
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    @property
    def kind_qualified(self):
        return "%s.%s" % (self.kind, self.group) if self.group else self.kind


RESOURCES = [
    Res("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"], extra_sub=["finalize"]),
    Res("", "v1", "nodes", "Node", namespaced=False, short=["no"]),
    Res("", "v1", "pods", "Pod", short=["po"], categories=["all"], extra_sub=["log"]),
    Res("", "v1", "secrets", "Secret", status=False),
    Res("", "v1", "services", "Service", short=["svc"], categories=["all"]),
    Res("", "v1", "configmaps", "ConfigMap", short=["cm"], status=False),
    Res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"]),
    Res("", "v1", "endpoints", "Endpoints", short=["ep"], status=False, singular="endpoints"),
    Res("", "v1", "events", "Event", short=["ev"], status=False),
    Res("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"], status=False),
    Res("apps", "v1", "statefulsets", "StatefulSet", short=["sts"], scale=True, generation=True, categories=["all"]),
    Res("apps", "v1", "deployments", "Deployment", short=["deploy"], scale=True, generation=True, categories=["all"]),
    Res("apps", "v1", "replicasets", "ReplicaSet", short=["rs"], scale=True, generation=True, categories=["all"]),
    Res("apps", "v1", "daemonsets", "DaemonSet", short=["ds"], generation=True, categories=["all"]),
    Res("apps", "v1", "controllerrevisions", "ControllerRevision", status=False),
    Res("batch", "v1", "jobs", "Job", generation=True, categories=["all"]),
    Res("batch", "v1", "cronjobs", "CronJob", short=["cj"], generation=True, categories=["all"]),
    Res("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=["pdb"], generation=True),
    Res("acid.zalan.do", "v1", "postgresqls", "postgresql", short=["pg"], generation=True, categories=["all"]),
    Res("coordination.k8s.io", "v1", "leases", "Lease", status=False),
    # the operator's CRD-based configuration (the operator reads it, or its ConfigMap postgres-operator)
    Res("acid.zalan.do", "v1", "operatorconfigurations", "OperatorConfiguration", short=["opconfig"],
        status=False, generation=True),
    Res("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
        namespaced=False, verbs=["create"], status=False),
    Res("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview",
        namespaced=False, verbs=["create"], status=False),
]

BY_KEY = {r.key: r for r in RESOURCES}
GROUPS = []  # (group, version) in discovery order
for _r in RESOURCES:
    if (_r.group, _r.version) not in GROUPS:
        GROUPS.append((_r.group, _r.version))


def lookup(group, version, plural):
    r = BY_KEY.get((group, plural))
    if r is None or r.version != version:
        return None
    return r


def by_kind(api_version, kind):
    for r in RESOURCES:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None


# Field selectors the real API server accepts per resource (others: 400 "field label not supported").
FIELD_LABELS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    "secrets": {"type"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "jobs": {"status.successful"},
    "namespaces": {"status.phase"},
    "nodes": {"spec.unschedulable"},
    "replicasets": {"status.replicas"},
}


def field_label_ok(res, label):
    return label in ("metadata.name", "metadata.namespace") or label in FIELD_LABELS.get(res.plural, ())


# ------------------------------------------------------------------ discovery documents

def resource_list(group, version):
    out = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": r.verbs}
        if r.short:
            e["shortNames"] = r.short
        if r.categories:
            e["categories"] = r.categories
        out.append(e)
        if r.status:
            out.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"]})
        if r.scale:
            out.append({"name": r.plural + "/scale", "singularName": "", "namespaced": r.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        for s in r.extra_sub:
            out.append({"name": r.plural + "/" + s, "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get"] if s == "log" else ["update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "%s/%s" % (group, version) if group else version, "resources": out}


def group_list():
    groups = []
    for g, v in GROUPS:
        if g == "":
            continue
        gv = {"groupVersion": "%s/%s" % (g, v), "version": v}
        groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group):
    for g in group_list()["groups"]:
        if g["name"] == group:
            return dict(g, kind="APIGroup", apiVersion="v1")
    return None


# ------------------------------------------------------------------ server-side printing (Table)

def _pod_status(p):
    md, st, spec = p["metadata"], p.get("status", {}), p.get("spec", {})
    reason = st.get("reason") or st.get("phase") or "Pending"
    for cs in st.get("containerStatuses") or []:
        s = cs.get("state", {})
        if "waiting" in s and s["waiting"].get("reason"):
            reason = s["waiting"]["reason"]
        elif "terminated" in s:
            reason = s["terminated"].get("reason") or ("Signal:%s" % s["terminated"].get("signal")
                                                        if s["terminated"].get("signal") else
                                                        "ExitCode:%s" % s["terminated"].get("exitCode"))
    if md.get("deletionTimestamp") and st.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return reason


def _pod_ready(p):
    cs = p.get("status", {}).get("containerStatuses") or []
    n = len(p.get("spec", {}).get("containers") or [])
    return "%d/%d" % (sum(1 for c in cs if c.get("ready")), n)


def _restarts(p):
    return sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses") or [])


def _sel_string(sel):
    from .selector import selector_object_to_reqs, reqs_to_string
    try:
        return reqs_to_string(selector_object_to_reqs(sel) or [])
    except Exception:
        return ""


def _containers(o):
    return ",".join(c.get("name", "") for c in util.get_path(o, "spec.template.spec.containers", []) or [])


def _images(o):
    return ",".join(c.get("image", "") for c in util.get_path(o, "spec.template.spec.containers", []) or [])


def _job_status(j):
    conds = {c.get("type"): c.get("status") for c in j.get("status", {}).get("conditions") or []}
    if conds.get("Failed") == "True":
        return "Failed"
    if conds.get("Complete") == "True":
        return "Complete"
    if j.get("spec", {}).get("suspend"):
        return "Suspended"
    if j.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_duration(j):
    st = j.get("status", {})
    start = util.parse_iso(st.get("startTime"))
    if not start:
        return ""
    end = util.parse_iso(st.get("completionTime"))
    import time
    return util.human_duration((end or time.time()) - start)


def _svc_ports(s):
    out = []
    for p in s.get("spec", {}).get("ports") or []:
        out.append("%s/%s" % (p.get("port"), p.get("protocol", "TCP")))
    return ",".join(out) or "<none>"


S, I = "string", "integer"
NAME = ("Name", S, "name", 0, lambda o: o["metadata"]["name"])
AGE = ("Age", S, "", 0, util.age)

TABLES = {
    "pods": [NAME, ("Ready", S, "", 0, _pod_ready), ("Status", S, "", 0, _pod_status),
             ("Restarts", S, "", 0, lambda o: str(_restarts(o))), AGE,
             ("IP", S, "", 1, lambda o: o.get("status", {}).get("podIP") or "<none>"),
             ("Node", S, "", 1, lambda o: o.get("spec", {}).get("nodeName") or "<none>"),
             ("Nominated Node", S, "", 1, lambda o: "<none>"),
             ("Readiness Gates", S, "", 1, lambda o: "<none>")],
    "statefulsets": [NAME, ("Ready", S, "", 0, lambda o: "%d/%d" % (o.get("status", {}).get("readyReplicas", 0),
                                                                      o["spec"].get("replicas", 1))), AGE,
                     ("Containers", S, "", 1, _containers), ("Images", S, "", 1, _images)],
    "deployments": [NAME, ("Ready", S, "", 0, lambda o: "%d/%d" % (o.get("status", {}).get("readyReplicas", 0),
                                                                     o["spec"].get("replicas", 1))),
                    ("Up-to-date", I, "", 0, lambda o: o.get("status", {}).get("updatedReplicas", 0)),
                    ("Available", I, "", 0, lambda o: o.get("status", {}).get("availableReplicas", 0)), AGE,
                    ("Containers", S, "", 1, _containers), ("Images", S, "", 1, _images),
                    ("Selector", S, "", 1, lambda o: _sel_string(o["spec"].get("selector")))],
    "replicasets": [NAME, ("Desired", I, "", 0, lambda o: o["spec"].get("replicas", 1)),
                    ("Current", I, "", 0, lambda o: o.get("status", {}).get("replicas", 0)),
                    ("Ready", I, "", 0, lambda o: o.get("status", {}).get("readyReplicas", 0)), AGE],
    "daemonsets": [NAME] + [(n, I, "", 0, (lambda f: lambda o: o.get("status", {}).get(f, 0))(f)) for n, f in
                            (("Desired", "desiredNumberScheduled"), ("Current", "currentNumberScheduled"),
                             ("Ready", "numberReady"), ("Up-to-date", "updatedNumberScheduled"),
                             ("Available", "numberAvailable"))] +
                  [("Node Selector", S, "", 0, lambda o: ",".join("%s=%s" % kv for kv in sorted(
                      (util.get_path(o, "spec.template.spec.nodeSelector") or {}).items())) or "<none>"), AGE],
    "jobs": [NAME, ("Status", S, "", 0, _job_status),
             ("Completions", S, "", 0, lambda o: "%d/%d" % (o.get("status", {}).get("succeeded", 0),
                                                            o["spec"].get("completions", 1))),
             ("Duration", S, "", 0, _job_duration), AGE],
    "cronjobs": [NAME, ("Schedule", S, "", 0, lambda o: o["spec"].get("schedule", "")),
                 ("Timezone", S, "", 0, lambda o: o["spec"].get("timeZone") or "<none>"),
                 ("Suspend", S, "", 0, lambda o: str(bool(o["spec"].get("suspend"))) if False else
                  ("True" if o["spec"].get("suspend") else "False")),
                 ("Active", I, "", 0, lambda o: len(o.get("status", {}).get("active") or [])),
                 ("Last Schedule", S, "", 0, lambda o: "<none>"), AGE],
    "secrets": [NAME, ("Type", S, "", 0, lambda o: o.get("type", "Opaque")),
                ("Data", I, "", 0, lambda o: len(o.get("data") or {})), AGE],
    "configmaps": [NAME, ("Data", I, "", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                   AGE],
    "services": [NAME, ("Type", S, "", 0, lambda o: o["spec"].get("type", "ClusterIP")),
                 ("Cluster-IP", S, "", 0, lambda o: o["spec"].get("clusterIP") or "<none>"),
                 ("External-IP", S, "", 0, lambda o: "<none>"), ("Port(s)", S, "", 0, _svc_ports), AGE],
    "persistentvolumeclaims": [NAME, ("Status", S, "", 0, lambda o: o.get("status", {}).get("phase", "Pending")),
                               ("Volume", S, "", 0, lambda o: o["spec"].get("volumeName", "")),
                               ("Capacity", S, "", 0, lambda o: util.get_path(o, "status.capacity.storage", "")),
                               ("Access Modes", S, "", 0, lambda o: "RWO"),
                               ("StorageClass", S, "", 0, lambda o: o["spec"].get("storageClassName", "")),
                               ("VolumeAttributesClass", S, "", 0, lambda o: "<unset>"), AGE],
    "namespaces": [NAME, ("Status", S, "", 0, lambda o: o.get("status", {}).get("phase", "Active")), AGE],
    "nodes": [NAME, ("Status", S, "", 0, lambda o: "Ready"),
              ("Roles", S, "", 0, lambda o: ",".join(sorted(k.split("/", 1)[1] for k in o["metadata"].get("labels", {})
                                                           if k.startswith("node-role.kubernetes.io/"))) or "<none>"),
              AGE, ("Version", S, "", 0, lambda o: "v1.32.4")],
    "postgresqls": [NAME, ("Team", S, "", 0, lambda o: util.get_path(o, "spec.teamId", "")),
                    ("Version", S, "", 0, lambda o: util.get_path(o, "spec.postgresql.version", "")),
                    ("Pods", I, "", 0, lambda o: util.get_path(o, "spec.numberOfInstances", 0)),
                    ("Volume", S, "", 0, lambda o: util.get_path(o, "spec.volume.size", "")),
                    ("CPU-Request", S, "", 0, lambda o: util.get_path(o, "spec.resources.requests.cpu", "")),
                    ("Memory-Request", S, "", 0, lambda o: util.get_path(o, "spec.resources.requests.memory", "")),
                    AGE, ("Status", S, "", 0, lambda o: util.get_path(o, "status.PostgresClusterStatus", ""))],
    "poddisruptionbudgets": [NAME, ("Min Available", S, "", 0, lambda o: str(o["spec"].get("minAvailable", "N/A"))),
                             ("Max Unavailable", S, "", 0, lambda o: str(o["spec"].get("maxUnavailable", "N/A"))),
                             ("Allowed Disruptions", I, "", 0, lambda o: o.get("status", {}).get("disruptionsAllowed", 0)),
                             AGE],
    "leases": [NAME, ("Holder", S, "", 0, lambda o: util.get_path(o, "spec.holderIdentity", "") or ""), AGE],
    "endpoints": [NAME, ("Endpoints", S, "", 0, lambda o: ",".join(
        "%s:%s" % (a.get("ip"), p.get("port")) for s in o.get("subsets") or [] for a in s.get("addresses") or []
        for p in s.get("ports") or [{}]) or "<none>"), AGE],
}


def to_table(res, objs, rv, include_defs=True):
    cols = TABLES.get(res.plural, [NAME, AGE])
    defs = [{"name": c[0], "type": c[1], "format": c[2], "description": c[0], "priority": c[3]} for c in cols]
    rows = []
    for o in objs:
        cells = []
        for c in cols:
            try:
                cells.append(c[4](o))
            except Exception:
                cells.append("")
        md = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                                                "apiVersion": "meta.k8s.io/v1", "metadata": md}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": defs if include_defs else [], "rows": rows}
