# A minimal OpenAPI v3 surface: just enough for kubectl to learn that the server validates fields
# (PATCH operations declare ?fieldValidation), so it needs no --validate=false and no client-side schema.
import hashlib
import json

from . import resources as R


def _gv_path(group, version):
    return "api/%s" % version if not group else "apis/%s/%s" % (group, version)


def gv_doc(group, version):
    paths = {}
    params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
              {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
              {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]
    # Strategic merge patch is deliberately not listed: kubectl apply then computes its patch from
    # the schemas compiled into it (built-ins) or a JSON merge patch (custom resources), as with no OpenAPI.
    body = {"content": {t: {"schema": {"type": "object"}} for t in
                        ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")}}
    for r in R.RESOURCES:
        if r.group != group or r.version != version:
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        base = "/" + _gv_path(group, version) + ("/namespaces/{namespace}/" if r.namespaced else "/") + r.plural
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
              "responses": {"200": {"description": "OK"}}}
        paths[base] = {"post": dict(op, requestBody={"content": {"application/json": {"schema": {"type": "object"}}}}),
                       "get": op}
        if "patch" in r.verbs:
            paths[base + "/{name}"] = {"patch": dict(op, requestBody=body), "get": op, "put": op, "delete": op}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths,
            "components": {"schemas": {}}}


def _hash(doc):
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128].upper()


def root():
    out = {}
    for g, v in R.GROUPS:
        out[_gv_path(g, v)] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (_gv_path(g, v), _hash(gv_doc(g, v)))}
    return {"paths": out}


def lookup(path):
    """path like 'apis/apps/v1' -> document or None."""
    for g, v in R.GROUPS:
        if _gv_path(g, v) == path:
            return gv_doc(g, v)
    return None


# OpenAPI v2 (/openapi/v2): kubectl fetches it, as a protobuf gnostic openapi_v2.Document, to validate
# a `kind: List` on the client side (single objects are validated by the server: fieldValidation). The
# document kubesim serves declares swagger 2.0 and no definitions; kubectl then finds no schema for the
# List's items and skips their client-side validation, as it does for kinds a server does not describe.
# (the Accept header kubectl sends has an "@", which is not a valid media type in a reply)
V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _pb_string(field, s):
    b = s.encode()
    return bytes([(field << 3) | 2, len(b)]) + b


def v2_protobuf():
    info = _pb_string(1, "Kubernetes") + _pb_string(2, "v1.32.4")
    return _pb_string(1, "2.0") + bytes([(2 << 3) | 2, len(info)]) + info


def v2_json():
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": {},
            "definitions": {}}
