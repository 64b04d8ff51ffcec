# The postgres-operator's configuration, read as the real operator reads it: the OperatorConfiguration
# object `postgresql-operator-configuration` (CRD-based: `configuration.<group>.<key>`, typed values) when
# one exists, else the ConfigMap `postgres-operator` (flat keys, string values). The real operator reads
# it once at start; kubesim reads it at each use, as if the operator were restarted after every change.
import re

CONFIGMAP = "postgres-operator"
OPCONFIG = "postgresql-operator-configuration"
CONFIGMAPS = ("", "configmaps")
OPCONFIGS = ("acid.zalan.do", "operatorconfigurations")
# the operator runs in CSM's `services` namespace; kubesim looks there first, then anywhere
HOME = "services"

# key -> (group in the CRD-based configuration or None for a top-level key, default)
KEYS = {
    "enable_readiness_probe": ("kubernetes", False),
    "enable_persistent_volume_claim_deletion": ("kubernetes", True),
    "enable_secrets_deletion": ("kubernetes", True),
    "resync_period": (None, "30m"),
    "repair_period": (None, "5m"),
}


def duration(s):
    """A Go duration ("30m", "1m30s", "500ms", "2h") -> seconds (float); a bare number is seconds."""
    if isinstance(s, (int, float)):
        return float(s)
    s = str(s).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total, pos = 0.0, 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", s):
        if m.start() != pos:
            raise ValueError("bad duration %r" % s)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError("bad duration %r" % s)
    return total


def _bool(v, default):
    if isinstance(v, bool):
        return v
    if v is None:
        return default
    return str(v).strip().lower() in ("true", "1", "yes", "on")


def _find(store, rkey, name):
    obj = store.peek(rkey, HOME, name)
    if obj is not None:
        return obj
    items, _ = store.list(rkey, copy=False)
    for o in items:
        if o["metadata"]["name"] == name:
            return o
    return None


def read(store):
    """{key: value} for KEYS (booleans and periods in seconds), with the source it came from."""
    raw, source = {}, "defaults"
    oc = _find(store, OPCONFIGS, OPCONFIG)
    if oc is not None:
        conf = oc.get("configuration") or {}
        source = "operatorconfiguration %s/%s" % (oc["metadata"].get("namespace"), OPCONFIG)
        for k, (group, _) in KEYS.items():
            v = (conf.get(group) or {}).get(k) if group else conf.get(k)
            if v is not None:
                raw[k] = v
    else:
        cm = _find(store, CONFIGMAPS, CONFIGMAP)
        if cm is not None:
            source = "configmap %s/%s" % (cm["metadata"].get("namespace"), CONFIGMAP)
            for k in KEYS:
                if k in (cm.get("data") or {}):
                    raw[k] = cm["data"][k]
    out = {"source": source}
    for k, (_, default) in KEYS.items():
        if isinstance(default, bool):
            out[k] = _bool(raw.get(k), default)
        else:
            try:
                out[k] = duration(raw.get(k, default))
            except ValueError:
                out[k] = duration(default)
    return out


def configmap(ns, overrides=None):
    """The operator's ConfigMap as a CSM system has it: the chart's defaults for what kubesim reads and
    CSM's secret_name_template (a model, not a copy of a CSM system's), plus overrides (up --operator)."""
    data = {"resync_period": "30m", "repair_period": "5m", "enable_readiness_probe": "false",
            "enable_persistent_volume_claim_deletion": "true", "enable_secrets_deletion": "true",
            "secret_name_template": "{username}.{cluster}.credentials", "super_username": "postgres",
            "replication_username": "standby", "pod_role_label": "spilo-role", "cluster_name_label": "cluster-name",
            "cluster_labels": "application:spilo", "enable_master_load_balancer": "false",
            "docker_image": "artifactory.algol60.net/csm-docker/stable/spilo:14-3.0.1"}
    data.update(overrides or {})
    return {"metadata": {"name": CONFIGMAP, "namespace": ns,
                         "labels": {"app.kubernetes.io/name": "postgres-operator"}}, "data": data}


def install(ctl, fixture, overrides):
    """Creates the ConfigMap: in `services` with the CSM fixture; with --fixture none only when
    overrides are given (in `default`)."""
    if fixture != "csm" and not overrides:
        return
    ns = HOME if fixture == "csm" else "default"
    ctl.create(CONFIGMAPS, configmap(ns, overrides))
