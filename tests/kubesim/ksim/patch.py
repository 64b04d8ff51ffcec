# PATCH bodies: RFC 6902 JSON patch, RFC 7386 merge patch, and Kubernetes strategic merge patch.
# Strategic merge knows the patchMergeKeys of the built-in fields kubectl touches (containers, env, ...).
import copy


class PatchError(ValueError):
    pass


# ---------------------------------------------------------------- JSON patch (RFC 6902)

def _unescape(tok):
    return tok.replace("~1", "/").replace("~0", "~")


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("JSON pointer must start with '/': %r" % path)
    return [_unescape(t) for t in path[1:].split("/")]


def _walk(doc, toks, path):
    cur = doc
    for t in toks:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError("doc is missing path: %s" % path)
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                i = int(t)
            except ValueError:
                raise PatchError("invalid array index in path: %s" % path)
            if i < 0 or i >= len(cur):
                raise PatchError("array index out of bounds in path: %s" % path)
            cur = cur[i]
        else:
            raise PatchError("doc is missing path: %s" % path)
    return cur


def _add(doc, path, value, op="add"):
    toks = _pointer(path)
    if not toks:
        return value
    parent = _walk(doc, toks[:-1], path)
    last = toks[-1]
    if isinstance(parent, dict):
        if op == "replace" and last not in parent:
            raise PatchError("replace operation does not apply: doc is missing key: %s" % path)
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            if op == "replace":
                raise PatchError("replace operation does not apply: doc is missing key: %s" % path)
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError("invalid array index: %s" % path)
            if op == "replace":
                if i < 0 or i >= len(parent):
                    raise PatchError("replace operation does not apply: doc is missing key: %s" % path)
                parent[i] = value
            else:
                if i < 0 or i > len(parent):
                    raise PatchError("add operation does not apply: index out of range: %s" % path)
                parent.insert(i, value)
    else:
        raise PatchError("%s operation does not apply: doc is missing path: %s" % (op, path))
    return doc


def _remove(doc, path):
    toks = _pointer(path)
    if not toks:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, toks[:-1], path)
    last = toks[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("remove operation does not apply: doc is missing path: \"%s\"" % path)
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            i = int(last)
            return doc, parent.pop(i)
        except (ValueError, IndexError):
            raise PatchError("remove operation does not apply: doc is missing path: \"%s\"" % path)
    raise PatchError("remove operation does not apply: doc is missing path: \"%s\"" % path)


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid JSON patch operation: %r" % (op,))
        kind, path = op["op"], op.get("path")
        if path is None:
            raise PatchError("operation missing path")
        if kind in ("add", "replace"):
            if "value" not in op:
                raise PatchError("%s operation missing value" % kind)
            doc = _add(doc, path, copy.deepcopy(op["value"]), kind)
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "move":
            doc, v = _remove(doc, op["from"])
            doc = _add(doc, path, v)
        elif kind == "copy":
            v = copy.deepcopy(_walk(doc, _pointer(op["from"]), op["from"]))
            doc = _add(doc, path, v)
        elif kind == "test":
            if _walk(doc, _pointer(path), path) != op.get("value"):
                raise PatchError("testing value %s failed" % path)
        else:
            raise PatchError("Unexpected kind: %s" % kind)
    return doc


# ---------------------------------------------------------------- merge patch (RFC 7386)

def merge_patch(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---------------------------------------------------------------- strategic merge patch

# patchMergeKey of list fields by field name (the subset of k8s.io/api that matters here);
# a list field not named here is replaced wholesale, as for fields without patchStrategy=merge.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "conditions": "type", "hostAliases": "ip",
    "ownerReferences": "uid", "ports": None,  # ports: containerPort (containers) or port (services)
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy=merge on a primitive list).
MERGE_PRIMITIVE = {"finalizers"}


def _ports_key(items):
    for it in items:
        if isinstance(it, dict):
            if "containerPort" in it:
                return "containerPort"
            if "port" in it:
                return "port"
    return "containerPort"


def strategic_merge(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        p = {k: v for k, v in patch.items() if k != "$patch"}
        return copy.deepcopy(p)
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [x for x in out[field] if x not in (v or [])]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            r = strategic_merge(out.get(k), v)
            if r is None:
                out.pop(k, None)
            else:
                out[k] = r
        elif isinstance(v, list) and k in MERGE_KEYS and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, MERGE_KEYS[k] or _ports_key(v + out[k]))
        elif isinstance(v, list) and k in MERGE_PRIMITIVE and isinstance(out.get(k), list):
            out[k] = out[k] + [x for x in v if x not in out[k]]
        else:
            out[k] = _strip_directives(copy.deepcopy(v))
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    return v


def _merge_list(cur, patch, key):
    out = copy.deepcopy(cur)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    for p in patch:
        if not isinstance(p, dict) or key not in p:
            out.append(copy.deepcopy(p))
            continue
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == p[key]), None)
        if p.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip_directives(copy.deepcopy(p)))
        else:
            out[idx] = strategic_merge(out[idx], p)
    return out
