# Unit tests of the pure parts of ksim: selectors, patches, the store's no-op and generation rules,
# Job selector generation/validation, the deletion state machine, and exec's server-side WebSocket framing.
# Run by unit.t (TAP).
import os
import sys
import unittest

# No __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ksim import execws, patch, resources as R, store as storemod, util  # noqa: E402
from ksim.apiserver import Api  # noqa: E402
from ksim.selector import (SelectorError, field_matches, label_matches, parse_field_selector,  # noqa: E402
                            parse_label_selector, selector_object_to_reqs, reqs_to_string)
from ksim.strategy import ApiError  # noqa: E402


class Selectors(unittest.TestCase):
    L = {"app": "spilo", "cluster-name": "spire-postgres", "spilo-role": "master"}

    def m(self, s, labels=None):
        return label_matches(parse_label_selector(s), self.L if labels is None else labels)

    def test_equality(self):
        self.assertTrue(self.m("app=spilo,cluster-name==spire-postgres"))
        self.assertFalse(self.m("app=other"))
        self.assertTrue(self.m("app!=other"))
        self.assertTrue(self.m("missing!=x"))  # != matches objects without the key

    def test_sets(self):
        self.assertTrue(self.m("spilo-role in (master,replica)"))
        self.assertFalse(self.m("spilo-role notin (master)"))
        self.assertTrue(self.m("missing notin (a,b)"))
        self.assertTrue(self.m("app in (x, spilo),cluster-name"))

    def test_existence(self):
        self.assertTrue(self.m("spilo-role"))
        self.assertFalse(self.m("!spilo-role"))
        self.assertTrue(self.m("!missing"))
        self.assertTrue(self.m(""))

    def test_prefixed_keys(self):
        self.assertTrue(self.m("app.kubernetes.io/name=spire-server", {"app.kubernetes.io/name": "spire-server"}))

    def test_errors(self):
        with self.assertRaises(SelectorError):
            parse_label_selector("a in b")
        with self.assertRaises(SelectorError):
            parse_field_selector("metadata.name")

    def test_objects_and_strings(self):
        reqs = selector_object_to_reqs({"matchLabels": {"a": "1"}, "matchExpressions": [
            {"key": "b", "operator": "In", "values": ["y", "x"]}, {"key": "c", "operator": "DoesNotExist"}]})
        self.assertEqual(reqs_to_string(reqs), "a=1,b in (x,y),!c")
        self.assertIsNone(selector_object_to_reqs(None))

    def test_fields(self):
        obj = {"metadata": {"name": "x", "namespace": "spire"}, "status": {"phase": "Running"}}
        self.assertTrue(field_matches(parse_field_selector("metadata.name=x,status.phase!=Pending"), obj))
        self.assertFalse(field_matches(parse_field_selector("metadata.name==y"), obj))


class Patches(unittest.TestCase):
    def test_json_patch_runbook_line(self):
        doc = {"spec": {"numberOfInstances": 1}}
        out = patch.json_patch(doc, [{"op": "replace", "path": "/spec/numberOfInstances", "value": 3}])
        self.assertEqual(out["spec"]["numberOfInstances"], 3)
        self.assertEqual(doc["spec"]["numberOfInstances"], 1)

    def test_json_patch_ops(self):
        doc = {"a": [1, 2], "b": {"c~d/e": 1}}
        out = patch.json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}, {"op": "remove", "path": "/b/c~0d~1e"},
                                     {"op": "copy", "from": "/a", "path": "/z"}, {"op": "test", "path": "/z/2", "value": 3}])
        self.assertEqual(out, {"a": [1, 2, 3], "b": {}, "z": [1, 2, 3]})
        with self.assertRaises(patch.PatchError):
            patch.json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])

    def test_merge_patch(self):
        self.assertEqual(patch.merge_patch({"spec": {"replicas": 3, "x": 1}}, {"spec": {"replicas": 0, "x": None}}),
                         {"spec": {"replicas": 0}})

    def test_strategic_rollout_restart(self):
        dep = {"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
        p = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}
        out = patch.strategic_merge(dep, p)
        self.assertEqual(out["spec"]["template"]["metadata"], {"labels": {"a": "b"},
                                                               "annotations": {"kubectl.kubernetes.io/restartedAt": "now"}})

    def test_strategic_lists_by_merge_key(self):
        doc = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
        out = patch.strategic_merge(doc, {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}],
                                          "$setElementOrder/containers": [{"name": "b"}]})
        self.assertEqual(out, {"containers": [{"name": "b", "image": "2"}]})
        self.assertEqual(patch.strategic_merge({"args": ["x"]}, {"args": ["y"]}), {"args": ["y"]})


class StoreRules(unittest.TestCase):
    def test_noop_write_bumps_nothing(self):
        s = storemod.Store()
        o = s.create(("", "configmaps"), {"metadata": {"name": "a", "namespace": "n"}, "data": {"k": "v"}})
        rv, nev = o["metadata"]["resourceVersion"], len(s.events)
        same, changed = s.replace(("", "configmaps"), util.dcopy(o))
        self.assertFalse(changed)
        self.assertEqual(same["metadata"]["resourceVersion"], rv)
        self.assertEqual(len(s.events), nev)

    def test_generation_only_on_spec(self):
        s = storemod.Store()
        o = s.create(("apps", "deployments"), {"metadata": {"name": "d", "namespace": "n"}, "spec": {"replicas": 1}},
                     generation=True)
        o["metadata"]["labels"] = {"x": "y"}
        o, _ = s.replace(("apps", "deployments"), o, generation=True)
        self.assertEqual(o["metadata"]["generation"], 1)
        o["spec"]["replicas"] = 2
        o, _ = s.replace(("apps", "deployments"), o, generation=True)
        self.assertEqual(o["metadata"]["generation"], 2)
        self.assertGreater(int(o["metadata"]["resourceVersion"]), 100)

    def test_compaction_gives_none(self):
        s = storemod.Store()
        s.create(("", "configmaps"), {"metadata": {"name": "a", "namespace": "n"}})
        old = s.rv - 1
        s.compact()
        self.assertIsNone(s.events_after(old))
        self.assertEqual(s.events_after(s.rv), [])


def _api():
    s = storemod.Store()
    return Api(s, {"token": "t", "admin_token": "a"})


class Jobs(unittest.TestCase):
    def job(self, labels=None, selector=None):
        j = {"metadata": {"name": "cray-smd-init", "namespace": "services"},
             "spec": {"template": {"metadata": {"labels": labels or {}},
                                   "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}
        if selector:
            j["spec"]["selector"] = selector
        return j

    def test_generated_selector_and_labels(self):
        api = _api()
        j = api.strategy.prepare_create(R.BY_KEY[("batch", "jobs")], self.job({"app": "x"}))
        uid = j["metadata"]["uid"]
        self.assertEqual(j["spec"]["selector"], {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        lab = j["spec"]["template"]["metadata"]["labels"]
        for k in ("controller-uid", "batch.kubernetes.io/controller-uid"):
            self.assertEqual(lab[k], uid)
        for k in ("job-name", "batch.kubernetes.io/job-name"):
            self.assertEqual(lab[k], "cray-smd-init")

    def test_reposted_selector_rejected(self):
        api = _api()
        j = self.job({"batch.kubernetes.io/controller-uid": "old", "controller-uid": "old"},
                     {"matchLabels": {"batch.kubernetes.io/controller-uid": "old"}})
        with self.assertRaises(ApiError) as cm:
            api.strategy.prepare_create(R.BY_KEY[("batch", "jobs")], j)
        self.assertEqual(cm.exception.code, 422)
        self.assertIn("`selector` not auto-generated", cm.exception.message)

    def test_stale_new_label_rejected(self):
        api = _api()
        j = self.job({"batch.kubernetes.io/controller-uid": "old"})
        with self.assertRaises(ApiError) as cm:
            api.strategy.prepare_create(R.BY_KEY[("batch", "jobs")], j)
        self.assertIn("must be", cm.exception.message)


class Deletion(unittest.TestCase):
    def test_orphan_and_foreground_finalizers(self):
        api = _api()
        res = R.BY_KEY[("batch", "jobs")]
        j = api.store.create(res.key, {"metadata": {"name": "j", "namespace": "n"}, "spec": {}})
        out, code = api.delete_object(res, j, "Orphan", None)
        self.assertEqual(code, 202)
        self.assertEqual(out["metadata"]["finalizers"], ["orphan"])
        self.assertIn("deletionTimestamp", out["metadata"])

    def test_background_is_immediate(self):
        api = _api()
        res = R.BY_KEY[("apps", "statefulsets")]
        o = api.store.create(res.key, {"metadata": {"name": "s", "namespace": "n"}, "spec": {}})
        out, code = api.delete_object(res, o, "Background", None)
        self.assertIsNone(out)
        self.assertIsNone(api.store.get(res.key, "n", "s"))

    def test_pod_graceful(self):
        api = _api()
        res = R.BY_KEY[("", "pods")]
        p = api.store.create(res.key, {"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "w"},
                                       "status": {"phase": "Running"}})
        out, code = api.delete_object(res, p, None, None)
        self.assertEqual(out["metadata"]["deletionGracePeriodSeconds"], 30)
        out, code = api.delete_object(res, out, None, 0)
        self.assertIsNone(api.store.get(res.key, "n", "p"))


class Printing(unittest.TestCase):
    def test_human_duration(self):
        self.assertEqual([util.human_duration(s) for s in (5, 119, 125, 3600 * 3 + 60, 86400 * 3)],
                         ["5s", "119s", "2m5s", "3h1m", "3d"])

    def test_pod_table(self):
        pod = {"metadata": {"name": "p", "creationTimestamp": util.now_iso()}, "spec": {"containers": [{}, {}]},
               "status": {"phase": "Running", "containerStatuses": [{"ready": True, "state": {"running": {}}},
                                                                    {"ready": True, "state": {"running": {}}}]}}
        t = R.to_table(R.BY_KEY[("", "pods")], [pod], "1")
        self.assertEqual(t["rows"][0]["cells"][:3], ["p", "2/2", "Running"])


class ExecFraming(unittest.TestCase):
    """The server side of exec's WebSocket: client frames are masked, control frames come whole."""

    @staticmethod
    def masked(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d"):
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def test_rfc_example(self):
        d = execws.Decoder()
        d.feed(bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]))
        self.assertEqual(d.events(), [(1, b"Hello")])

    def test_fragments_pings_and_split_reads(self):
        stream = (self.masked(2, b"\x00abc", fin=False) + self.masked(9, b"hb") +
                  self.masked(0, b"x" * 70000, fin=False) + self.masked(0, b"!") + self.masked(8, b"\x03\xe8"))
        d, got = execws.Decoder(), []
        for i in range(0, len(stream), 999):
            d.feed(stream[i:i + 999])
            got += d.events()
        self.assertEqual([op for op, _ in got], [9, 2, 8])
        self.assertEqual(got[1][1], b"\x00abc" + b"x" * 70000 + b"!")

    def test_violations(self):
        for raw in (bytes([0x82, 0x01, 0x41]),                       # unmasked
                    self.masked(0, b"x"),                              # continuation without a message
                    self.masked(9, b"x" * 126),                        # control frame over 125 bytes
                    self.masked(9, b"", fin=False),                    # fragmented control frame
                    bytes([0xC2]) + self.masked(2, b"")[1:]):          # RSV1
            d = execws.Decoder()
            d.feed(raw)
            with self.assertRaises(execws.ProtocolError):
                d.events()

    def test_server_frames_and_status(self):
        self.assertEqual(execws.frame(2, b"\x01hi"), b"\x82\x03\x01hi")
        self.assertEqual(execws.frame(2, b"x" * 300)[:4], b"\x82\x7e\x01\x2c")
        st = execws.status_json(3, ["sh", "-c", "exit 3"])
        self.assertEqual((st["reason"], st["details"]["causes"][0]), ("NonZeroExitCode", {"reason": "ExitCode", "message": "3"}))
        self.assertEqual(execws.status_json(0, ["true"]), {"metadata": {}, "status": "Success"})

    def test_home_mapping(self):
        m = lambda a: execws.map_arg(a, "/sim/pods/ns.p/home/postgres")
        self.assertEqual(m("/home/postgres/dump.psql"), "/sim/pods/ns.p/home/postgres/dump.psql")
        self.assertEqual(m("/home/postgres"), "/sim/pods/ns.p/home/postgres")
        self.assertEqual(m("psql < /home/postgres/x; ls /home/postgres"),
                         "psql < /sim/pods/ns.p/home/postgres/x; ls /sim/pods/ns.p/home/postgres")
        self.assertEqual(m("/home/postgresql/x"), "/home/postgresql/x")
        self.assertEqual(m("-U"), "-U")


class Tap(unittest.TextTestResult):
    n = 0

    def _line(self, test, ok, why=""):
        Tap.n += 1
        sys.stdout.write("%s %d - %s%s\n" % ("ok" if ok else "not ok", Tap.n, test.id().split(".", 1)[1], why))

    def addSuccess(self, test):
        self._line(test, True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(test, False)

    def addError(self, test, err):
        super().addError(test, err)
        self._line(test, False)


if __name__ == "__main__":
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    # The runner's own report goes nowhere: stdout carries TAP only.
    r = unittest.TextTestRunner(stream=open(os.devnull, "w"), resultclass=Tap, verbosity=0).run(suite)
    print("1..%d" % Tap.n)
    for t, tb in r.failures + r.errors:
        sys.stdout.write("".join("# " + ln + "\n" for ln in tb.splitlines()))
    sys.exit(0 if r.wasSuccessful() else 1)
