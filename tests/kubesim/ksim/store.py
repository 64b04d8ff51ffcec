# The object store: every object by (resource key, namespace, name), one resourceVersion counter,
# and the event history that watches replay from (compacted -> 410 Gone, as etcd compaction does).
import bisect
import json
import threading

from . import util

HISTORY = 20000


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 100
        self.objects = {}          # rkey -> {(ns, name): obj}
        self.events = []           # (rv, type, rkey, obj, old)
        self.event_rvs = []
        self.compacted_rv = 0      # a watch from an RV below this gets 410 Gone
        self.listeners = []        # callables(type, rkey, obj, old), called with the lock held

    # ------------------------------------------------------------ reads
    def get(self, rkey, ns, name):
        with self.lock:
            o = self.objects.get(rkey, {}).get((ns or "", name))
            return util.dcopy(o) if o is not None else None

    def peek(self, rkey, ns, name):
        # No copy: callers must not mutate (controllers read a lot).
        with self.lock:
            return self.objects.get(rkey, {}).get((ns or "", name))

    def list(self, rkey, ns=None, copy=True):
        with self.lock:
            items = [o for (ons, _), o in self.objects.get(rkey, {}).items() if ns is None or ons == ns]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return ([util.dcopy(o) for o in items] if copy else items), str(self.rv)

    # ------------------------------------------------------------ writes
    def _next_rv(self):
        self.rv += 1
        return str(self.rv)

    def _emit(self, etype, rkey, obj, old):
        rv = int(obj["metadata"]["resourceVersion"])
        self.events.append((rv, etype, rkey, util.dcopy(obj), util.dcopy(old) if old else None))
        self.event_rvs.append(rv)
        if len(self.events) > HISTORY:
            drop = HISTORY // 2
            self.compacted_rv = self.event_rvs[drop]
            del self.events[:drop]
            del self.event_rvs[:drop]
        for fn in self.listeners:
            try:
                fn(etype, rkey, obj, old)
            except Exception as e:  # a listener bug must not break the write path
                util.log("listener error", e)
        self.cond.notify_all()

    def create(self, rkey, obj, generation=False):
        with self.lock:
            md = obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            bucket = self.objects.setdefault(rkey, {})
            if key in bucket:
                return None
            md.setdefault("uid", util.new_uid())
            md.setdefault("creationTimestamp", util.now_iso())
            if generation:
                md["generation"] = 1
            md["resourceVersion"] = self._next_rv()
            bucket[key] = util.dcopy(obj)
            self._emit("ADDED", rkey, obj, None)
            return util.dcopy(obj)

    def replace(self, rkey, obj, generation=False):
        """Store obj over the current one; no-op writes bump nothing. Returns (obj, changed)."""
        with self.lock:
            md = obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            old = self.objects.get(rkey, {}).get(key)
            if old is None:
                return None, False
            md["uid"] = old["metadata"]["uid"]
            md["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            if generation:
                g = old["metadata"].get("generation", 1)
                if _spec_part(old) != _spec_part(obj):
                    g += 1
                md["generation"] = g
            md["resourceVersion"] = old["metadata"]["resourceVersion"]
            if _canon(old) == _canon(obj):
                return util.dcopy(old), False
            md["resourceVersion"] = self._next_rv()
            self.objects[rkey][key] = util.dcopy(obj)
            self._emit("MODIFIED", rkey, obj, old)
            return util.dcopy(obj), True

    def remove(self, rkey, ns, name):
        with self.lock:
            old = self.objects.get(rkey, {}).pop((ns or "", name), None)
            if old is None:
                return None
            obj = util.dcopy(old)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("DELETED", rkey, obj, old)
            return obj

    def mutate(self, rkey, ns, name, fn, generation=False):
        """Controller-side read-modify-write without a conflict check. fn(obj) mutates in place;
        returning False skips the write. Returns the stored object or None if it is gone."""
        with self.lock:
            cur = self.get(rkey, ns, name)
            if cur is None:
                return None
            if fn(cur) is False:
                return cur
            out, _ = self.replace(rkey, cur, generation=generation)
            return out

    # ------------------------------------------------------------ watch history
    def events_after(self, rv):
        """Events with resourceVersion > rv, or None when rv was compacted away."""
        with self.lock:
            if rv < self.compacted_rv:
                return None
            i = bisect.bisect_right(self.event_rvs, rv)
            return self.events[i:]

    def compact(self):
        with self.lock:
            # Every event so far is gone: a watch from any RV older than the current one gets 410.
            self.compacted_rv = self.rv
            self.events = []
            self.event_rvs = []


def _spec_part(obj):
    return json.dumps({k: v for k, v in obj.items() if k not in ("metadata", "status")}, sort_keys=True)


def _canon(obj):
    o = dict(obj)
    md = dict(o.get("metadata", {}))
    md.pop("managedFields", None)
    o["metadata"] = md
    return json.dumps(o, sort_keys=True)
