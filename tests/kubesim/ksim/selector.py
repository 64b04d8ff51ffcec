# Label and field selectors: the string syntax of ?labelSelector= / ?fieldSelector= and LabelSelector objects.
# Semantics follow k8s.io/apimachinery/pkg/labels: != and notin also match objects lacking the key.
import re


class SelectorError(ValueError):
    pass


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[-A-Za-z0-9_.]*"


def _split_top(s):
    # Split on commas that are not inside parentheses ("a in (x,y),b" has two requirements).
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip() != ""]


def parse_label_selector(s):
    """Returns a list of (key, op, values); op in = != in notin exists !exists gt lt."""
    reqs = []
    if s is None or s.strip() == "":
        return reqs
    for part in _split_top(s):
        m = re.fullmatch(r"!\s*(%s)" % _KEY, part)
        if m:
            reqs.append((m.group(1), "!exists", []))
            continue
        m = re.fullmatch(r"(%s)\s+(in|notin)\s*\((.*)\)" % _KEY, part)
        if m:
            vals = [v.strip() for v in m.group(3).split(",")]
            for v in vals:
                if not re.fullmatch(_VAL, v):
                    raise SelectorError("invalid label value: %r" % v)
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.fullmatch(r"(%s)\s*(==|=|!=|>|<)\s*(%s)" % (_KEY, _VAL), part)
        if m:
            op = {"==": "=", "=": "=", "!=": "!=", ">": "gt", "<": "lt"}[m.group(2)]
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = re.fullmatch(_KEY, part)
        if m:
            reqs.append((part, "exists", []))
            continue
        raise SelectorError("unable to parse requirement: %s" % part)
    return reqs


def label_matches(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and not (has and v == vals[0]):
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and not (has and v in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
        if op in ("gt", "lt"):
            try:
                a, b = int(v), int(vals[0])
            except (TypeError, ValueError):
                return False
            if not has or (op == "gt" and not a > b) or (op == "lt" and not a < b):
                return False
    return True


def selector_object_to_reqs(sel):
    """metav1.LabelSelector (matchLabels/matchExpressions) to requirements; None selects nothing."""
    if sel is None:
        return None
    reqs = []
    for k, v in sorted((sel.get("matchLabels") or {}).items()):
        reqs.append((k, "=", [v]))
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(e.get("operator"))
        if op is None:
            raise SelectorError("%r is not a valid label selector operator" % e.get("operator"))
        reqs.append((e["key"], op, list(e.get("values") or [])))
    return reqs


def reqs_to_string(reqs):
    out = []
    for k, op, vals in reqs:
        if op == "=":
            out.append("%s=%s" % (k, vals[0]))
        elif op == "!=":
            out.append("%s!=%s" % (k, vals[0]))
        elif op in ("in", "notin"):
            out.append("%s %s (%s)" % (k, op, ",".join(sorted(vals))))
        elif op == "exists":
            out.append(k)
        elif op == "!exists":
            out.append("!" + k)
    return ",".join(out)


def parse_field_selector(s):
    reqs = []
    if s is None or s.strip() == "":
        return reqs
    for part in s.split(","):
        part = part.strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise SelectorError("invalid selector: '%s'; can't understand '%s'" % (s, part))
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_matches(reqs, obj):
    for path, op, val in reqs:
        v = field_value(obj, path)
        if op == "=" and v != val:
            return False
        if op == "!=" and v == val:
            return False
    return True
