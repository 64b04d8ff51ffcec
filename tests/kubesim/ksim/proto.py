# Just enough protobuf to read what kubectl's typed clients POST (auth can-i sends a protobuf
# SelfSubjectAccessReview): the k8s envelope, the wire format, and the few fields we need.

MAGIC = b"k8s\x00"


def _varint(b, i):
    shift = val = 0
    while True:
        c = b[i]
        i += 1
        val |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return val, i


def fields(b):
    """Decode one message into {field number: [values]} (bytes for length-delimited fields)."""
    out, i = {}, 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def _s(f, n):
    return f.get(n, [b""])[0].decode() if n in f else ""


def unwrap(body):
    if not body.startswith(MAGIC):
        raise ValueError("not a kubernetes protobuf envelope")
    unk = fields(body[len(MAGIC):])
    tm = fields(unk.get(1, [b""])[0])
    return _s(tm, 1), _s(tm, 2), unk.get(2, [b""])[0]


def access_review(raw):
    """SelfSubjectAccessReview bytes -> the JSON shape of its spec."""
    spec = fields(fields(raw).get(2, [b""])[0])
    out = {}
    if 1 in spec:
        ra = fields(spec[1][0])
        out["resourceAttributes"] = {k: _s(ra, n) for n, k in enumerate(
            ("namespace", "verb", "group", "version", "resource", "subresource", "name"), 1) if n in ra}
    if 2 in spec:
        nra = fields(spec[2][0])
        out["nonResourceAttributes"] = {"path": _s(nra, 1), "verb": _s(nra, 2)}
    return out


def rules_review(raw):
    spec = fields(fields(raw).get(2, [b""])[0])
    return {"namespace": _s(spec, 1)}


# ------------------------------------------------------------------ typed objects kubectl's generators send
# (kubectl create namespace / configmap / secret generic|tls|docker-registry / serviceaccount).

def _map(entries, as_bytes=False):
    out = {}
    for e in entries:
        f = fields(e)
        k = _s(f, 1)
        v = f.get(2, [b""])[0]
        out[k] = v if as_bytes else v.decode()
    return out


def object_meta(b):
    f = fields(b)
    md = {}
    for n, k in ((1, "name"), (2, "generateName"), (3, "namespace"), (5, "uid"), (6, "resourceVersion")):
        if n in f and f[n][0]:
            md[k] = f[n][0].decode()
    if 11 in f:
        md["labels"] = _map(f[11])
    if 12 in f:
        md["annotations"] = _map(f[12])
    if 14 in f:
        md["finalizers"] = [x.decode() for x in f[14]]
    return md


def decode_object(kind, raw):
    import base64
    f = fields(raw)
    obj = {"metadata": object_meta(f.get(1, [b""])[0])}
    if kind == "ConfigMap":
        if 2 in f:
            obj["data"] = _map(f[2])
        if 3 in f:
            obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in _map(f[3], True).items()}
        if 4 in f:
            obj["immutable"] = bool(f[4][0])
    elif kind == "Secret":
        if 2 in f:
            obj["data"] = {k: base64.b64encode(v).decode() for k, v in _map(f[2], True).items()}
        if 3 in f:
            obj["type"] = f[3][0].decode()
        if 4 in f:
            obj["stringData"] = _map(f[4])
        if 5 in f:
            obj["immutable"] = bool(f[5][0])
    elif kind == "Namespace":
        if 2 in f:
            spec = fields(f[2][0])
            obj["spec"] = {"finalizers": [x.decode() for x in spec.get(1, [])]}
    elif kind == "ServiceAccount":
        pass
    else:
        return None
    return obj
