# Small helpers shared by every ksim module: time formats, uids, random names, logging, deep copies.
# Kept dependency-free so the unit tests can import any module without starting a server.
import copy
import json
import os
import random
import sys
import threading
import time
import uuid

_log_lock = threading.Lock()
_log_file = None
VERBOSE = bool(os.environ.get("PGR_KUBESIM_VERBOSE"))


def set_log_file(path):
    global _log_file
    _log_file = open(path, "a", buffering=1)


def log(*parts):
    line = "%s %s" % (time.strftime("%H:%M:%S"), " ".join(str(p) for p in parts))
    with _log_lock:
        if _log_file:
            _log_file.write(line + "\n")
        if VERBOSE:
            sys.stderr.write("kubesim: " + line + "\n")


def now_iso(t=None):
    # Kubernetes metav1.Time is RFC3339 with second precision, always UTC.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def parse_iso(s):
    import calendar
    try:
        return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None


def new_uid():
    return str(uuid.uuid4())


# The alphabet Kubernetes uses for generateName and pod-template-hash suffixes (no vowels, no 0/1/3).
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def rand_suffix(n=5):
    return "".join(random.choice(_SAFE) for _ in range(n))


def safe_encode_hash(h):
    # rand.SafeEncodeString(fmt.Sprint(hash)): each decimal digit mapped onto the safe alphabet.
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(int(h)))


def fnv32a(data):
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


_hash_cache = {}


def template_hash(template):
    # Controllers hash every template on every pass: memoise on the serialised form.
    key = json.dumps(template, sort_keys=True)
    h = _hash_cache.get(key)
    if h is None:
        if len(_hash_cache) > 4096:
            _hash_cache.clear()
        h = _hash_cache[key] = safe_encode_hash(fnv32a(key.encode()))
    return h


def dcopy(o):
    return copy.deepcopy(o)


def human_duration(seconds):
    # k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl's AGE column shows it.
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        return "%dd%dh" % (h // 24, h % 24) if h % 24 else "%dd" % (h // 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    y = h // (24 * 365)
    if y < 8:
        return "%dy%dd" % (y, (h // 24) % 365)
    return "%dy" % y


def age(obj):
    t = parse_iso(obj.get("metadata", {}).get("creationTimestamp"))
    return human_duration(time.time() - t) if t else "<unknown>"


def get_path(obj, path, default=None):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def set_path(obj, path, value):
    cur = obj
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
