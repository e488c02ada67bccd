"""Label and field selectors, in their query-string syntax and in ``LabelSelector`` object form.

Selectors are compiled once per request into plain closures: a list/watch over 150k pods calls
the matcher per object, so parsing must not happen in the inner loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]
LabelMatcher = Callable[[Mapping[str, str]], bool]

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"^{_NAME}$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_KEY_CHARS = r"[-A-Za-z0-9_./]+"
_SET_RE = re.compile(rf"^\s*({_KEY_CHARS})\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(rf"^\s*({_KEY_CHARS})\s*(==|!=|=|>|<)\s*(.*?)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY_CHARS})\s*$")


class SelectorError(ValueError):
    """Unparseable selector; the server answers 400 BadRequest with this message."""


def validate_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        raise SelectorError(f"invalid label key {key!r}: prefix part must be non-empty")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )


def validate_label_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(
            f"invalid label value: {value!r}: a valid label must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` — set values contain commas themselves."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append("".join(cur))
    return parts


def _requirement(op: str, key: str, values: list[str]) -> LabelMatcher:
    validate_label_key(key)
    if op in ("in", "notin", "=", "==", "!="):
        for v in values:
            validate_label_value(v)
    if op in ("=", "=="):
        want = values[0]
        return lambda labels: labels.get(key) == want
    if op == "!=":
        want = values[0]
        # Upstream semantics: a missing key satisfies "!=".
        return lambda labels: labels.get(key) != want
    if op == "in":
        allowed = frozenset(values)
        return lambda labels: key in labels and labels[key] in allowed
    if op == "notin":
        banned = frozenset(values)
        return lambda labels: labels.get(key) not in banned
    if op == "exists":
        return lambda labels: key in labels
    if op == "!exists":
        return lambda labels: key not in labels
    if op in (">", "<"):
        try:
            bound = int(values[0])
        except ValueError as exc:
            raise SelectorError(
                f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {values[0]!r}"
            ) from exc

        def cmp(labels: Mapping[str, str]) -> bool:
            raw = labels.get(key)
            if raw is None:
                return False
            try:
                num = int(raw)
            except ValueError:
                return False
            return num > bound if op == ">" else num < bound

        return cmp
    raise SelectorError(f"unable to parse requirement: unknown operator {op!r}")


def _all(reqs: list[LabelMatcher]) -> LabelMatcher:
    if not reqs:
        return lambda labels: True
    if len(reqs) == 1:
        return reqs[0]
    return lambda labels: all(r(labels) for r in reqs)


def parse_label_selector(text: str | None) -> LabelMatcher | None:
    """Compile ``a=b,c!=d,e in (x,y),!f,g`` into a matcher over a labels mapping; None = everything."""
    if text is None or not text.strip():
        return None
    reqs: list[LabelMatcher] = []
    for raw in _split_top_level(text):
        if not raw.strip():
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = _SET_RE.match(raw)
        if m:
            vals = [v.strip() for v in m.group(3).split(",")] if m.group(3).strip() else []
            if not vals:
                raise SelectorError(
                    f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty in {raw!r}"
                )
            reqs.append(_requirement(m.group(2), m.group(1), vals))
            continue
        m = _OP_RE.match(raw)
        if m:
            reqs.append(_requirement(m.group(2), m.group(1), [m.group(3)]))
            continue
        m = _EXISTS_RE.match(raw)
        if m:
            reqs.append(_requirement("!exists" if m.group(1) else "exists", m.group(2), []))
            continue
        raise SelectorError(f"unable to parse requirement: {raw.strip()!r}")
    return _all(reqs)


def compile_label_selector_object(sel: Mapping[str, Any] | None) -> LabelMatcher | None:
    """``metav1.LabelSelector`` (matchLabels + matchExpressions). None/{} selects everything."""
    if not sel:
        return None
    reqs: list[LabelMatcher] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append(_requirement("=", k, [v]))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in sel.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(_requirement(op, expr["key"], list(expr.get("values") or [])))
    return _all(reqs)


# ----- field selectors ---------------------------------------------------------------------------
GENERIC_FIELDS = ("metadata.name", "metadata.namespace")


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, Mapping):
        # Event "source" is the only structured field label upstream; it selects on source.component.
        return str(cur.get("component", ""))
    return str(cur)


def _split_unescaped(text: str, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, supported: tuple[str, ...]) -> Matcher | None:
    """Compile ``spec.nodeName=n1,status.phase!=Failed``; unknown field labels are a 400 like upstream."""
    if text is None or not text.strip():
        return None
    terms: list[tuple[str, bool, str]] = []
    for raw in _split_unescaped(text, ","):
        if not raw:
            continue
        for op in ("!=", "==", "="):
            idx = _find_unescaped(raw, op)
            if idx >= 0:
                field, value = raw[:idx].strip(), _unescape(raw[idx + len(op) :])
                terms.append((field, op == "!=", value))
                break
        else:
            raise SelectorError(f"invalid selector: '{raw}'; can't understand '{raw}'")
    allowed = set(GENERIC_FIELDS) | set(supported)
    for field, _neg, _v in terms:
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")

    def match(obj: dict[str, Any]) -> bool:
        for field, negate, want in terms:
            have = _field_value(obj, field)
            if (have == want) == negate:
                return False
        return True

    return match


def _find_unescaped(text: str, token: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(token, i):
            return i
        i += 1
    return -1


def object_matcher(label_sel: str | None, field_sel: str | None, supported: tuple[str, ...]) -> Matcher | None:
    """One matcher over whole objects combining both selector kinds (None = match all, the fast path)."""
    lm = parse_label_selector(label_sel)
    fm = parse_field_selector(field_sel, supported)
    if lm is None and fm is None:
        return None
    if fm is None:
        assert lm is not None
        return lambda obj: lm(obj.get("metadata", {}).get("labels") or {})
    if lm is None:
        return fm
    return lambda obj: lm(obj.get("metadata", {}).get("labels") or {}) and fm(obj)
