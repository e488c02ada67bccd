"""Dynamic admission: calling webhooks the way kube-apiserver does (admission.k8s.io/v1).

Order per architecture §7.2: mutating webhooks serially (patch applied after each, optional single
reinvocation round), then — after the caller ran rest.BeforeCreate — validating webhooks in
parallel. Error mapping follows upstream: a call failure (unreachable, timeout, bad response,
uid/apiVersion mismatch) obeys failurePolicy; a denial is reported with the webhook's code
(default 403); a patch that does not decode or apply is a 500 regardless of failurePolicy.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonpatch
import jsonpointer
import orjson

from .errors import APIError, bad_request, internal
from .resources import ResourceType
from .schema import decode
from .selectors import LabelMatcher


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass
class Attributes:
    """What admission knows about one request (upstream admission.Attributes)."""

    rt: ResourceType
    operation: str  # CREATE / UPDATE / DELETE
    namespace: str
    name: str
    user: UserInfo
    subresource: str = ""
    old: dict[str, Any] | None = None  # with kind/apiVersion
    dry_run: bool = False
    options: dict[str, Any] | None = None
    # The kind of the object under admission; differs from rt for e.g. pods/binding (Binding).
    kind: tuple[str, str, str] | None = None
    resource: str | None = None  # override for /bindings
    warnings: list[str] = field(default_factory=list)

    @property
    def gvk(self) -> dict[str, str]:
        g, v, k = self.kind or (self.rt.group, self.rt.version, self.rt.kind)
        return {"group": g, "version": v, "kind": k}

    @property
    def gvr(self) -> dict[str, str]:
        return {"group": self.rt.group, "version": self.rt.version, "resource": self.resource or self.rt.resource}


class _CallError(Exception):
    # mirrors upstream ErrCallingWebhook: subject to failurePolicy
    pass


@dataclass(eq=False)
class Webhook:
    name: str
    kind: str  # "mutating" | "validating"
    url: str
    ca_pem: bytes
    server_hostname: str | None
    rules: list[dict[str, Any]]
    failure_policy: str
    timeout_seconds: int
    namespace_exclude: frozenset[str]
    object_selector: LabelMatcher | None
    side_effects: str
    reinvocation_policy: str
    client: httpx.Client

    def matches(self, a: Attributes, obj: dict[str, Any] | None) -> bool:
        if a.rt.key == "namespaces":
            if a.name in self.namespace_exclude:
                return False
        elif a.rt.namespaced and a.namespace in self.namespace_exclude:
            return False
        if not any(_rule_matches(r, a) for r in self.rules):
            return False
        if self.object_selector is not None:
            labels = [((o or {}).get("metadata") or {}).get("labels") or {} for o in (obj, a.old) if o]
            if not any(self.object_selector(lbl) for lbl in labels):
                return False
        return True


def _rule_matches(rule: dict[str, Any], a: Attributes) -> bool:
    ops = rule.get("operations") or ["*"]
    if "*" not in ops and a.operation not in ops:
        return False
    groups = rule.get("apiGroups") or ["*"]
    if "*" not in groups and a.rt.group not in groups:
        return False
    versions = rule.get("apiVersions") or ["*"]
    if "*" not in versions and a.rt.version not in versions:
        return False
    scope = rule.get("scope", "*")
    if scope == "Namespaced" and not a.rt.namespaced:
        return False
    if scope == "Cluster" and a.rt.namespaced:
        return False
    res = a.resource or a.rt.resource
    sub = a.subresource
    full = f"{res}/{sub}" if sub else res
    for r in rule.get("resources") or ["*"]:
        if r == "*/*" or r == full:
            return True
        if r == "*" and not sub:
            return True
        if sub and r == f"{res}/*":
            return True
        if sub and r == f"*/{sub}":
            return True
    return False


def _sanitize_warning(text: str) -> str:
    # The apiserver drops control characters and bounds each warning before writing headers.
    clean = "".join(ch for ch in str(text) if ch == "\t" or (ch >= " " and ch != "\x7f"))
    return clean[:256]


def _denial(webhook: str, status: dict[str, Any] | None) -> APIError:
    """Upstream ToStatusErr semantics: code < 400 -> 403, message prefixed with the webhook name."""
    status = dict(status or {})
    code = status.get("code") or 0
    if not isinstance(code, int) or code < 400:
        code = 403
    prefix = f'admission webhook "{webhook}" denied the request'
    if status.get("message"):
        message = f"{prefix}: {status['message']}"
    elif status.get("reason"):
        message = f"{prefix}: {status['reason']}"
    else:
        message = f"{prefix} without explanation"
    return APIError(code, message, status.get("reason", ""), status.get("details"))


class Admission:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Webhook] = []

    # ----- registration ---------------------------------------------------------------------------
    def add(self, hook: Webhook) -> None:
        with self._lock:
            self._hooks = [h for h in self._hooks if h.name != hook.name] + [hook]

    def remove(self, name: str) -> None:
        with self._lock:
            gone = [h for h in self._hooks if h.name == name]
            self._hooks = [h for h in self._hooks if h.name != name]
        for h in gone:
            h.client.close()

    def close(self) -> None:
        with self._lock:
            hooks, self._hooks = self._hooks, []
        for h in hooks:
            h.client.close()

    def _matching(self, kind: str, a: Attributes, obj: dict[str, Any] | None) -> list[Webhook]:
        with self._lock:
            hooks = [h for h in self._hooks if h.kind == kind]
        out = [h for h in hooks if h.matches(a, obj)]
        if a.dry_run:
            for h in out:
                if h.side_effects not in ("None", "NoneOnDryRun"):
                    raise bad_request(f'admission webhook "{h.name}" does not support dry run')
        return out

    # ----- one call --------------------------------------------------------------------------------
    def _review(self, a: Attributes, obj: dict[str, Any] | None) -> tuple[str, bytes]:
        uid = str(uuid.uuid4())
        req: dict[str, Any] = {
            "uid": uid,
            "kind": a.gvk,
            "resource": a.gvr,
            "requestKind": a.gvk,
            "requestResource": a.gvr,
        }
        # Go's omitempty: empty subResource/name/namespace are absent from the wire.
        if a.subresource:
            req["subResource"] = a.subresource
            req["requestSubResource"] = a.subresource
        if a.name:
            req["name"] = a.name
        if a.namespace:
            req["namespace"] = a.namespace
        req["operation"] = a.operation
        req["userInfo"] = a.user.to_json()
        req["object"] = obj
        req["oldObject"] = a.old
        req["dryRun"] = a.dry_run
        req["options"] = a.options
        review = {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req}
        return uid, orjson.dumps(review)

    def _call(self, h: Webhook, a: Attributes, obj: dict[str, Any] | None) -> dict[str, Any]:
        uid, body = self._review(a, obj)
        sep = "&" if "?" in h.url else "?"
        url = f"{h.url}{sep}timeout={h.timeout_seconds}s"
        headers = {"Content-Type": "application/json", "Accept": "application/json, */*"}
        extensions: dict[str, Any] = {}
        if h.server_hostname:
            extensions["sni_hostname"] = h.server_hostname
            port = urllib.parse.urlsplit(h.url).port
            headers["Host"] = f"{h.server_hostname}:{port}" if port else h.server_hostname
        try:
            resp = h.client.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            raise _CallError(f'failed to call webhook: Post "{url}": {type(exc).__name__}: {exc}') from exc
        if resp.status_code != 200:
            raise _CallError(f"received invalid webhook response: status code {resp.status_code}: {resp.text[:200]}")
        try:
            review = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise _CallError(f"received invalid webhook response: {exc}") from exc
        if not isinstance(review, dict):
            raise _CallError("received invalid webhook response: not a JSON object")
        if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
            raise _CallError(
                "received invalid webhook response: expected webhook response of admission.k8s.io/v1, "
                f"Kind=AdmissionReview, got {review.get('apiVersion')}, Kind={review.get('kind')}"
            )
        response = review.get("response")
        if not isinstance(response, dict):
            raise _CallError("received invalid webhook response: response is missing")
        if response.get("uid") != uid:
            raise _CallError(
                f'received invalid webhook response: expected response.uid="{uid}", got "{response.get("uid")}"'
            )
        patch_b64 = response.get("patch")
        if patch_b64:
            if h.kind == "validating":
                raise _CallError("received invalid webhook response: validating webhook may not return a patch")
            if response.get("patchType") != "JSONPatch":
                raise _CallError(
                    f"received invalid webhook response: expected patchType JSONPatch, got {response.get('patchType')}"
                )
            try:
                response["_patch_bytes"] = base64.b64decode(patch_b64, validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                # []byte in Go: bad base64 fails decoding the whole AdmissionReview.
                raise _CallError(f"received invalid webhook response: illegal base64 data: {exc}") from exc
        return response

    def _outcome(self, h: Webhook, a: Attributes, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        """The webhook's response, or None when its call failed under failurePolicy Ignore."""
        try:
            response = self._call(h, a, obj)
        except _CallError as exc:
            if h.failure_policy == "Ignore":
                return None
            raise internal(f'failed calling webhook "{h.name}": {exc}') from exc
        for w in response.get("warnings") or []:
            a.warnings.append(_sanitize_warning(w))
        if not response.get("allowed"):
            raise _denial(h.name, response.get("status"))
        return response

    # ----- phases ------------------------------------------------------------------------------------
    def mutate(self, a: Attributes, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        hooks = self._matching("mutating", a, obj)
        if not hooks:
            return obj
        changed_by: Webhook | None = None
        called_before_change: list[Webhook] = []
        for h in hooks:
            obj, changed = self._mutate_one(h, a, obj)
            if changed:
                # Earlier IfNeeded webhooks have not seen this change: they get one more call.
                called_before_change = [x for x in hooks[: hooks.index(h)] if x.reinvocation_policy == "IfNeeded"]
                changed_by = h
        if changed_by is not None:
            for h in called_before_change:
                obj, _ = self._mutate_one(h, a, obj)
        return obj

    def _mutate_one(self, h: Webhook, a: Attributes, obj: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
        response = self._outcome(h, a, obj)
        if response is None or "_patch_bytes" not in response or obj is None:
            return obj, False
        try:
            ops = orjson.loads(response["_patch_bytes"])
            patch = jsonpatch.JsonPatch(ops)
            patched = patch.apply(obj)
        except (
            orjson.JSONDecodeError,
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            TypeError,
            KeyError,
            IndexError,
            ValueError,
        ) as exc:
            # Not subject to failurePolicy: the webhook answered, but with a broken mutation.
            raise internal(str(exc)) from exc
        if not isinstance(patched, dict):
            raise internal("patched object is not a JSON object")
        typed = {k: v for k, v in patched.items() if k not in ("kind", "apiVersion")}
        group_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        version = group_version.rsplit("/", 1)[-1]
        pruned, _unknown, errors = decode(typed, version, kind) if kind else (typed, [], [])
        if errors:
            raise internal("; ".join(errors))
        out = {"kind": kind, "apiVersion": group_version, **pruned} if kind else pruned
        return out, out != obj

    def validate(self, a: Attributes, obj: dict[str, Any] | None) -> None:
        hooks = self._matching("validating", a, obj)
        if not hooks:
            return
        if len(hooks) == 1:
            self._outcome(hooks[0], a, obj)
            return
        results: list[BaseException | None] = [None] * len(hooks)

        def run(i: int, h: Webhook) -> None:
            try:
                self._outcome(h, a, obj)
            except BaseException as exc:  # re-raised in the request thread below
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i, h), daemon=True) for i, h in enumerate(hooks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for exc in results:
            if exc is not None:
                raise exc


def make_client(ca_pem: bytes, timeout_seconds: float) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem)
    # trust_env=False: a proxy from the environment must never intercept loopback webhook calls.
    return httpx.Client(verify=ctx, timeout=httpx.Timeout(timeout_seconds), trust_env=False)
