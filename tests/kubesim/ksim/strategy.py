# Per-kind create/update rules of the API server: defaulting, validation, and the server-generated
# parts (Job selectors, Service cluster IPs, Secret stringData) that clients depend on.
import base64
import re

from . import util
from .selector import selector_object_to_reqs, label_matches, SelectorError


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, headers or {}

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            s["details"] = self.details
        return s


def not_found(res, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (res.qualified, name),
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, causes):
    """causes: list of (field, reason-type, message) -> 422 the way field.ErrorList aggregates."""
    msgs = ["%s: %s" % (f, m) for f, _, m in causes]
    body = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (res.kind_qualified, name, body),
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})


_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _go_selector(sel):
    ml = sel.get("matchLabels") or {}
    inner = ", ".join('"%s":"%s"' % kv for kv in sorted(ml.items()))
    return "v1.LabelSelector{MatchLabels:map[string]string{%s}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}" % inner


def _go_map(m):
    return "map[string]string{%s}" % ", ".join('"%s":"%s"' % kv for kv in sorted((m or {}).items()))


def validate_name(res, obj):
    name = obj["metadata"].get("name")
    if not name:
        raise invalid(res, "", [("metadata.name", "FieldValueRequired",
                                 "Required value: name or generateName is required")])
    if len(name) > 253 or not _NAME_RE.fullmatch(name):
        raise invalid(res, name, [("metadata.name", "FieldValueInvalid",
                                   'Invalid value: "%s": a lowercase RFC 1123 subdomain must consist of lower case '
                                   "alphanumeric characters, '-' or '.', and must start and end with an "
                                   "alphanumeric character" % name)])


def _template_selector_check(res, obj, causes):
    sel = obj.get("spec", {}).get("selector")
    if sel is None:
        causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        return
    try:
        reqs = selector_object_to_reqs(sel)
    except SelectorError as e:
        causes.append(("spec.selector", "FieldValueInvalid", str(e)))
        return
    if not reqs:
        causes.append(("spec.selector", "FieldValueInvalid",
                       "Invalid value: %s: empty selector is invalid for deployment" % _go_selector(sel)))
        return
    labels = util.get_path(obj, "spec.template.metadata.labels") or {}
    if not label_matches(reqs, labels):
        causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                       "Invalid value: %s: `selector` does not match template `labels`" % _go_map(labels)))


def _defaults_pod_spec(spec, restart="Always"):
    spec.setdefault("restartPolicy", restart)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})


def _template(obj):
    t = obj.setdefault("spec", {}).setdefault("template", {})
    t.setdefault("metadata", {})
    t.setdefault("spec", {})
    return t


class Strategy:
    """Hooks the API server calls around writes; `api` gives access to the store for allocations."""

    def __init__(self, api):
        self.api = api
        self.next_cluster_ip = 1

    def prepare_create(self, res, obj):
        validate_name(res, obj)
        fn = getattr(self, "create_" + res.plural, None)
        if fn:
            fn(res, obj)
        if res.status and res.builtin and "status" not in obj and res.plural not in ("services",):
            obj["status"] = {}
        return obj

    def prepare_update(self, res, old, new):
        fn = getattr(self, "update_" + res.plural, None)
        if fn:
            fn(res, old, new)
        return new

    # -------------------------------------------------------------- core
    def create_namespaces(self, res, o):
        fins = o.setdefault("spec", {}).setdefault("finalizers", [])
        if "kubernetes" not in fins:
            fins.append("kubernetes")
        o["status"] = {"phase": "Active"}
        o["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = o["metadata"]["name"]

    def create_pods(self, res, o):
        spec = o.setdefault("spec", {})
        if not spec.get("containers"):
            raise invalid(res, o["metadata"]["name"], [("spec.containers", "FieldValueRequired", "Required value")])
        _defaults_pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        o["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def create_secrets(self, res, o):
        o.setdefault("type", "Opaque")
        self._secret_data(res, o)

    def update_secrets(self, res, old, new):
        new.setdefault("type", old.get("type", "Opaque"))
        if new["type"] != old.get("type", "Opaque"):
            raise invalid(res, new["metadata"]["name"], [("type", "FieldValueInvalid",
                                                          'Invalid value: "%s": field is immutable' % new["type"])])
        self._secret_data(res, new)

    def _secret_data(self, res, o):
        # stringData is write-only: merged into data (base64) and never stored.
        sd = o.pop("stringData", None) or {}
        data = o.get("data") or {}
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        for k, v in data.items():
            try:
                base64.b64decode(v, validate=True)
            except Exception:
                raise ApiError(400, "BadRequest", "illegal base64 data at input byte 0")
        if data:
            o["data"] = data

    def create_services(self, res, o):
        spec = o.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec.get("clusterIP") != "None":
            n = self.next_cluster_ip
            self.next_cluster_ip += 1
            spec["clusterIP"] = "10.%d.%d.%d" % (96 + (n >> 16) % 8, (n >> 8) & 255, n & 255)
            spec["clusterIPs"] = [spec["clusterIP"]]
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        o["status"] = {"loadBalancer": {}}

    def update_services(self, res, old, new):
        spec = new.setdefault("spec", {})
        spec.setdefault("clusterIP", old["spec"].get("clusterIP"))
        spec.setdefault("clusterIPs", old["spec"].get("clusterIPs"))

    def create_persistentvolumeclaims(self, res, o):
        o.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
        o["status"] = {"phase": "Pending"}

    # -------------------------------------------------------------- apps
    def create_statefulsets(self, res, o):
        spec = o.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type", "RollingUpdate") == "RollingUpdate":
            us["type"] = "RollingUpdate"
            us.setdefault("rollingUpdate", {"partition": 0})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        _defaults_pod_spec(_template(o)["spec"])
        self._apps_validate(res, o)

    def create_deployments(self, res, o):
        spec = o.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        st = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if st.get("type", "RollingUpdate") == "RollingUpdate":
            st["type"] = "RollingUpdate"
            st.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _defaults_pod_spec(_template(o)["spec"])
        self._apps_validate(res, o)

    def create_replicasets(self, res, o):
        o.setdefault("spec", {}).setdefault("replicas", 1)
        _defaults_pod_spec(_template(o)["spec"])
        self._apps_validate(res, o)

    def create_daemonsets(self, res, o):
        spec = o.setdefault("spec", {})
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type", "RollingUpdate") == "RollingUpdate":
            us["type"] = "RollingUpdate"
            us.setdefault("rollingUpdate", {"maxUnavailable": 1, "maxSurge": 0})
        spec.setdefault("revisionHistoryLimit", 10)
        _defaults_pod_spec(_template(o)["spec"])
        self._apps_validate(res, o)

    def _apps_validate(self, res, o):
        causes = []
        _template_selector_check(res, o, causes)
        r = o["spec"].get("replicas")
        if r is not None and (not isinstance(r, int) or r < 0):
            causes.append(("spec.replicas", "FieldValueInvalid",
                           "Invalid value: %s: must be greater than or equal to 0" % r))
        if causes:
            raise invalid(res, o["metadata"]["name"], causes)

    def _apps_update(self, res, old, new):
        if old.get("spec", {}).get("selector") != new.get("spec", {}).get("selector"):
            raise invalid(res, new["metadata"]["name"], [
                ("spec.selector", "FieldValueInvalid", "Invalid value: %s: field is immutable" %
                 _go_selector(new.get("spec", {}).get("selector") or {}))])
        self._apps_validate(res, new)

    update_statefulsets = update_deployments = update_replicasets = update_daemonsets = _apps_update

    # -------------------------------------------------------------- batch
    def create_jobs(self, res, o):
        spec = o.setdefault("spec", {})
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        t = _template(o)
        name = o["metadata"]["name"]
        uid = o["metadata"].setdefault("uid", util.new_uid())
        if t["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            raise invalid(res, name, [("spec.template.spec.restartPolicy", "FieldValueRequired",
                                       'Required value: valid values: "OnFailure", "Never"')])
        _defaults_pod_spec(t["spec"], t["spec"]["restartPolicy"])
        if spec.get("manualSelector"):
            self._apps_validate(res, o)
            return
        # generateSelector (pkg/registry/batch/job/strategy.go): labels already present are kept,
        # and validation then rejects any that do not belong to this job's uid.
        labels = t["metadata"].setdefault("labels", {})
        for k in ("job-name", "batch.kubernetes.io/job-name"):
            labels.setdefault(k, name)
        for k in ("controller-uid", "batch.kubernetes.io/controller-uid"):
            labels.setdefault(k, uid)
        sel = spec.setdefault("selector", {})
        sel.setdefault("matchLabels", {}).setdefault("batch.kubernetes.io/controller-uid", uid)
        causes = []
        for k in ("batch.kubernetes.io/controller-uid", "controller-uid"):
            if labels.get(k) != uid:
                causes.append(("spec.template.metadata.labels[%s]" % k, "FieldValueInvalid",
                               "Invalid value: \"%s\": must be '%s'" % (labels.get(k), uid)))
        for k in ("batch.kubernetes.io/job-name", "job-name"):
            if labels.get(k) != name:
                causes.append(("spec.template.metadata.labels[%s]" % k, "FieldValueInvalid",
                               "Invalid value: \"%s\": must be '%s'" % (labels.get(k), name)))
        reqs = selector_object_to_reqs(sel)
        if not label_matches(reqs, labels):
            causes.append(("spec.selector", "FieldValueInvalid",
                           "Invalid value: %s: `selector` does not match template `labels`" % _go_selector(sel)))
        if sel.get("matchLabels") != {"batch.kubernetes.io/controller-uid": uid} or sel.get("matchExpressions"):
            causes.append(("spec.selector", "FieldValueInvalid",
                           "Invalid value: %s: `selector` not auto-generated" % _go_selector(sel)))
        if causes:
            raise invalid(res, name, causes)

    def update_jobs(self, res, old, new):
        if old["spec"].get("selector") != new.get("spec", {}).get("selector"):
            raise invalid(res, new["metadata"]["name"], [("spec.selector", "FieldValueInvalid",
                                                           "Invalid value: %s: field is immutable" %
                                                           _go_selector(new["spec"].get("selector") or {}))])
        if old["spec"].get("template") != new.get("spec", {}).get("template"):
            raise invalid(res, new["metadata"]["name"], [("spec.template", "FieldValueInvalid",
                                                           "Invalid value: ...: field is immutable")])

    # -------------------------------------------------------------- coordination.k8s.io leases
    def create_leases(self, res, o):
        self._lease_validate(res, o)

    def update_leases(self, res, old, new):
        self._lease_validate(res, new)

    _MICRO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")

    def _lease_validate(self, res, o):
        # acquireTime/renewTime are MicroTime: a value that does not decode is the decoder's 400;
        # durations and transitions are checked as ValidateLeaseSpec does (422).
        spec = o.get("spec") or {}
        for f in ("acquireTime", "renewTime"):
            v = spec.get(f)
            if v is not None and not (isinstance(v, str) and self._MICRO_RE.fullmatch(v)):
                raise ApiError(400, "BadRequest", 'Lease in version "v1" cannot be handled as a Lease: parsing time '
                               '"%s" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "%s" as "2006"' % (v, v))
        causes = []
        d = spec.get("leaseDurationSeconds")
        if d is not None and (not isinstance(d, int) or isinstance(d, bool) or d <= 0):
            causes.append(("spec.leaseDurationSeconds", "FieldValueInvalid", "Invalid value: %s: must be greater than 0" % (d,)))
        t = spec.get("leaseTransitions")
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
            causes.append(("spec.leaseTransitions", "FieldValueInvalid",
                           "Invalid value: %s: must be greater than or equal to 0" % (t,)))
        if causes:
            raise invalid(res, o["metadata"]["name"], causes)

    # -------------------------------------------------------------- the Zalando CRD's openAPI schema
    def create_postgresqls(self, res, o):
        self._pg_validate(res, o)

    def update_postgresqls(self, res, old, new):
        self._pg_validate(res, new)

    def _pg_validate(self, res, o):
        spec = o.get("spec")
        name = o["metadata"]["name"]
        causes = []
        if not isinstance(spec, dict):
            causes.append(("spec", "FieldValueRequired", "Required value"))
        else:
            for f in ("teamId", "numberOfInstances", "postgresql", "volume"):
                if f not in spec:
                    causes.append(("spec.%s" % f, "FieldValueRequired", "Required value"))
            n = spec.get("numberOfInstances")
            if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
                causes.append(("spec.numberOfInstances", "FieldValueTypeInvalid",
                               'Invalid value: "%s": spec.numberOfInstances in body must be of type integer: "%s"'
                               % (type(n).__name__, type(n).__name__)))
            elif n is not None and n < 0:
                causes.append(("spec.numberOfInstances", "FieldValueInvalid",
                               "Invalid value: %d: spec.numberOfInstances in body should be greater than or "
                               "equal to 0" % n))
        if causes:
            raise invalid(res, name, causes)
