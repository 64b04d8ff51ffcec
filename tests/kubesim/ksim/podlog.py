# The pods/log subresource (`kubectl logs`) for the simulator's pods: a database pod whose PostgreSQL
# server runs serves that server's log (DIR/pg/<ns>.<cluster>/postgres.log); every other pod has an
# empty log (no container writes anything here), unless another part of the simulator serves pod
# output already (then that). tailLines and limitBytes are honoured as the kubelet does: the last N
# lines, then at most N bytes from the start of what is left.
import os

from .controllers import PODS

# How much of a log file is read at most: its last bytes (enough for any tailLines a test asks).
READ_MAX = 4 * 1024 * 1024


def _tail(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - READ_MAX))
            data = f.read()
    except OSError:
        return ""
    if size > READ_MAX:
        data = data[data.find(b"\n") + 1:]   # a cut first line is dropped
    return data.decode("utf-8", "replace")


def _limit(text, params):
    tail = params.get("tailLines")
    if tail is not None:
        try:
            n = int(tail)
        except ValueError:
            n = None
        if n is not None:
            lines = text.splitlines(True)
            text = "".join(lines[-n:]) if n > 0 else ""
    limit = params.get("limitBytes")
    if limit is not None:
        try:
            text = text.encode()[:max(0, int(limit))].decode("utf-8", "ignore")
        except ValueError:
            pass
    return text


def pod_log(store, pgm, ns, name, params):
    """GET pods/NAME/log -> text, or None when the pod does not exist (404)."""
    p = store.get(PODS, ns, name)
    if p is None:
        return None
    labels = p["metadata"].get("labels") or {}
    cluster = labels.get("cluster-name")
    text = ""
    if labels.get("application") == "spilo" and cluster:
        key = "%s.%s" % (ns, cluster)
        ip = (p.get("status") or {}).get("podIP")
        if ip and pgm.running_ip(key) == ip:
            text = _tail(os.path.join(pgm.cdir(key), "postgres.log"))
    return _limit(text, params)


def install(api, pgm):
    """Serves pods/log. Where another part of the simulator already serves the containers' output
    (Patroni's lines of a spilo pod), that output is kept, with tailLines and limitBytes applied."""
    prev = getattr(api, "pod_log", None)
    if prev is None:
        api.pod_log = lambda ns, name, params: pod_log(api.store, pgm, ns, name, params)
    else:
        def chained(ns, name, params):
            text = prev(ns, name, params)
            return None if text is None else _limit(text, params)
        api.pod_log = chained
