"""REST semantics of the fake: URL parsing, verbs, and the create/update/patch/delete pipelines.

This module knows nothing about sockets. :class:`RestAPI.handle` turns a parsed request into a
:class:`Response` (or a :class:`WatchPlan` the HTTP layer streams), so every rule about status
codes, Status bodies and admission order lives in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import yaml

from .admission import Admission, Attributes, UserInfo
from .errors import STALE_WHY, APIError, bad_request, conflict, not_found
from .patches import apply_patch, strategic_merge
from .resources import Registry, ResourceType
from .schema import decode
from .selectors import SelectorError, object_matcher
from .store import CASConflict, Store, Watcher
from .strategy import (
    apply_defaults,
    check_identity,
    check_type_meta,
    now_rfc3339,
    prepare_create,
    prepare_update,
    validate,
)

Obj = dict[str, Any]
_MAX_ATTEMPTS = 16  # optimistic-concurrency retries for unconditional updates/patches
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_BINDING_RT = ResourceType("", "v1", "bindings", "Binding")


class RequestRecord(NamedTuple):
    """One served resource request, in RBAC terms."""

    username: str
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str


@dataclass
class RequestInfo:
    group: str
    version: str
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    legacy_watch: bool = False
    verb: str = ""


@dataclass
class Request:
    method: str
    info: RequestInfo
    query: dict[str, str]
    content_type: str
    body: bytes
    user: UserInfo


@dataclass
class Response:
    code: int
    body: Any  # JSON-able, or pre-encoded bytes
    warnings: list[str] = field(default_factory=list)


@dataclass
class WatchPlan:
    rt: ResourceType
    watcher: Watcher
    initial: list[Obj]
    initial_rv: int
    allow_bookmarks: bool
    send_initial: bool
    timeout_seconds: float | None


def full(rt: ResourceType, obj: Obj) -> Obj:
    """The object as served on its own (with kind/apiVersion)."""
    return {"kind": rt.kind, "apiVersion": rt.api_version, **obj}


def bare(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "kind" and k != "apiVersion"}


def parse_bool(name: str, value: str | None) -> bool:
    # Go's strconv.ParseBool, which the apiserver uses for query flags (the client sends "True").
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise bad_request(f'{name}: Invalid value: "{value}": parsing failed')


def parse_path(path: str) -> RequestInfo | None:
    """``/api/v1/namespaces/ns/pods/name/status`` -> RequestInfo; None for non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    legacy_watch = False
    if rest[0] == "watch":
        legacy_watch, rest = True, rest[1:]
        if not rest:
            return None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        ns, rest = rest[1], rest[2:]
    else:
        ns = ""
    if len(rest) > 3:
        return None
    info = RequestInfo(group, version, rest[0], namespace=ns, legacy_watch=legacy_watch)
    if len(rest) >= 2:
        info.name = rest[1]
    if len(rest) == 3:
        info.subresource = rest[2]
    return info


def rbac_verb(method: str, info: RequestInfo, watch: bool) -> str:
    if info.legacy_watch or (method == "GET" and watch):
        return "watch"
    return {
        "GET": "get" if info.name else "list",
        "HEAD": "get" if info.name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if info.name else "deletecollection",
    }.get(method, method.lower())


class RestAPI:
    def __init__(self, registry: Registry, store: Store, admission: Admission, enforce_namespaces: bool) -> None:
        self.registry = registry
        self.store = store
        self.admission = admission
        self.enforce_namespaces = enforce_namespaces

    # ----- entry -----------------------------------------------------------------------------------
    def resolve(self, info: RequestInfo) -> ResourceType:
        if info.group == "" and info.version == "v1" and info.resource == "bindings":
            return _BINDING_RT
        rt = self.registry.by_gvr.get((info.group, info.version, info.resource))
        if rt is None or (info.namespace and not rt.namespaced):
            raise APIError(404, "the server could not find the requested resource", "NotFound")
        if info.subresource and info.subresource not in rt.subresources:
            raise APIError(404, "the server could not find the requested resource", "NotFound")
        return rt

    def handle(self, req: Request) -> Response | WatchPlan:
        info = req.info
        rt = self.resolve(info)
        m = req.method
        if rt is _BINDING_RT:
            if m != "POST" or info.name:
                raise _not_allowed()
            return self._binding(req, info.namespace, None)
        if info.subresource == "binding":
            if m != "POST":
                raise _not_allowed()
            return self._binding(req, info.namespace, info.name)
        if rt.namespaced and not info.namespace and m not in ("GET", "HEAD"):
            # Writes to the all-namespaces collection (e.g. POST /api/v1/pods) are not routes upstream.
            raise _not_allowed()
        if info.legacy_watch or (m == "GET" and parse_bool("watch", req.query.get("watch"))):
            return self._watch(req, rt)
        if m in ("GET", "HEAD"):
            return self._get(rt, info) if info.name else self._list(req, rt)
        if m == "POST" and not info.name:
            return self._create(req, rt)
        if m == "PUT" and info.name:
            return self._update(req, rt)
        if m == "PATCH" and info.name:
            return self._patch(req, rt)
        if m == "DELETE" and info.name:
            return self._delete(req, rt)
        if m == "DELETE" and not info.subresource:
            return self._delete_collection(req, rt)
        raise _not_allowed()

    # ----- helpers -----------------------------------------------------------------------------------
    def _namespace_of(self, rt: ResourceType, info: RequestInfo) -> str:
        if rt.namespaced and not info.namespace:
            raise APIError(404, "the server could not find the requested resource", "NotFound")
        return info.namespace if rt.namespaced else ""

    def _decode(
        self,
        req: Request,
        rt: ResourceType,
        warnings: list[str],
        *,
        kind: str | None = None,
        api_version: str | None = None,
    ) -> Obj:
        raw = _parse_body(req)
        if not isinstance(raw, dict):
            raise bad_request(f"the body of the request was not a {kind or rt.kind} object")
        check_type_meta(rt, raw, kind, api_version)
        obj, unknown, errors = decode(bare(raw), rt.version, kind or rt.kind)
        if errors:
            raise bad_request(
                f'{kind or rt.kind} in version "{rt.version}" cannot be handled as a {kind or rt.kind}: {errors[0]}'
            )
        self._unknown_fields(req, unknown, warnings)
        return obj

    @staticmethod
    def _unknown_fields(req: Request, unknown: list[str], warnings: list[str]) -> None:
        mode = req.query.get("fieldValidation", "") or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"'
            )
        if not unknown or mode == "Ignore":
            return
        msgs = [f'unknown field "{u}"' for u in unknown]
        if mode == "Strict":
            raise bad_request("strict decoding error: " + ", ".join(msgs))
        warnings.extend(msgs)

    @staticmethod
    def _dry_run(req: Request) -> bool:
        value = req.query.get("dryRun")
        if value is None or value == "":
            return False
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return True

    @staticmethod
    def _options(kind: str, req: Request, dry_run: bool) -> Obj:
        opts: Obj = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
        if dry_run:
            opts["dryRun"] = ["All"]
        if req.query.get("fieldManager"):
            opts["fieldManager"] = req.query["fieldManager"]
        if req.query.get("fieldValidation") and kind != "DeleteOptions":
            opts["fieldValidation"] = req.query["fieldValidation"]
        return opts

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not self.enforce_namespaces or not rt.namespaced:
            return
        ns_rt = self.registry.by_key["namespaces"]
        if self.store.get(ns_rt, "", namespace) is None:
            raise not_found("namespaces", "", namespace)

    def _must_get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        cur = self.store.get(rt, namespace, name)
        if cur is None:
            raise not_found(rt.resource, rt.group, name)
        return cur

    # ----- reads -----------------------------------------------------------------------------------
    def _get(self, rt: ResourceType, info: RequestInfo) -> Response:
        ns = self._namespace_of(rt, info)
        return Response(200, full(rt, self._must_get(rt, ns, info.name)))

    def _matcher(self, req: Request, rt: ResourceType) -> Callable[[Obj], bool] | None:
        try:
            return object_matcher(req.query.get("labelSelector"), req.query.get("fieldSelector"), rt.field_labels)
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc

    def _list(self, req: Request, rt: ResourceType) -> Response:
        q = req.query
        matcher = self._matcher(req, rt)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError as exc:
            raise bad_request(f"limit: Invalid value: {q.get('limit')!r}") from exc
        res = self.store.list(
            rt,
            req.info.namespace or None,
            matcher,
            limit=limit,
            continue_token=q.get("continue", ""),
            resource_version=q.get("resourceVersion", ""),
            rv_match=q.get("resourceVersionMatch", ""),
        )
        meta: Obj = {"resourceVersion": str(res.rv)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            if res.remaining is not None:
                meta["remainingItemCount"] = res.remaining
        body = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": res.items})
        return Response(200, body)

    def _watch(self, req: Request, rt: ResourceType) -> WatchPlan:
        q = req.query
        matcher = self._matcher(req, rt)
        if req.info.name:  # legacy /watch/.../name form
            name = req.info.name
            inner = matcher
            matcher = (
                (lambda o: o["metadata"]["name"] == name and inner(o))
                if inner
                else (lambda o: o["metadata"]["name"] == name)
            )
        timeout: float | None = None
        if q.get("timeoutSeconds"):
            try:
                timeout = float(q["timeoutSeconds"])
            except ValueError as exc:
                raise bad_request(f"timeoutSeconds: Invalid value: {q['timeoutSeconds']!r}") from exc
        send_initial = q.get("sendInitialEvents")
        send = parse_bool("sendInitialEvents", send_initial) if send_initial else False
        allow = parse_bool("allowWatchBookmarks", q.get("allowWatchBookmarks"))
        if send and not allow:
            raise bad_request(
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the "
                "WatchList feature gate is enabled and allowWatchBookmarks is true"
            )
        w, initial, rv = self.store.watch(rt, req.info.namespace or None, matcher, q.get("resourceVersion", ""), send)
        return WatchPlan(rt, w, initial, rv, allow, send, timeout)

    # ----- create -----------------------------------------------------------------------------------
    def _create(self, req: Request, rt: ResourceType) -> Response:
        warnings: list[str] = []
        try:
            return self._create_inner(req, rt, warnings)
        except APIError as exc:
            exc.warnings = warnings + exc.warnings
            raise

    def _create_inner(self, req: Request, rt: ResourceType, warnings: list[str], body: Obj | None = None) -> Response:
        ns = self._namespace_of(rt, req.info)
        dry_run = self._dry_run(req)
        obj = body if body is not None else self._decode(req, rt, warnings)
        check_identity(rt, obj, None, ns)
        apply_defaults(rt, obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        attrs = Attributes(
            rt,
            "CREATE",
            ns,
            meta.get("name") or "",
            req.user,
            dry_run=dry_run,
            options=self._options("CreateOptions", req, dry_run),
            warnings=warnings,
        )
        mutated = self.admission.mutate(attrs, full(rt, obj))
        assert mutated is not None
        obj = bare(mutated)
        check_identity(rt, obj, None, ns)
        prepare_create(rt, obj)
        validate(rt, obj, None)
        self._require_namespace(rt, ns)
        attrs.name = obj["metadata"]["name"]
        self.admission.validate(attrs, full(rt, obj))
        if dry_run:
            return Response(201, full(rt, obj), warnings)
        stored = self.store.insert(rt, obj)
        return Response(201, full(rt, stored), warnings)

    # ----- update / patch ----------------------------------------------------------------------------
    def _update(self, req: Request, rt: ResourceType) -> Response:
        warnings: list[str] = []
        ns = self._namespace_of(rt, req.info)
        body = self._decode(req, rt, warnings)
        check_identity(rt, body, req.info.name, ns)
        apply_defaults(rt, body)
        return self._update_loop(req, rt, ns, lambda _cur: copy.deepcopy(body), warnings)

    def _patch(self, req: Request, rt: ResourceType) -> Response:
        warnings: list[str] = []
        ns = self._namespace_of(rt, req.info)
        ctype = req.content_type
        if ctype not in _PATCH_TYPES:
            raise APIError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(_PATCH_TYPES)}",
                "UnsupportedMediaType",
            )
        if ctype == "application/apply-patch+yaml":
            return self._apply(req, rt, ns, warnings)
        patch = _parse_body(req)
        name = req.info.name
        first = [True]  # unknown-field warnings once, not once per conflict retry

        def build(cur: Obj) -> Obj:
            patched = apply_patch(ctype, full(rt, cur), patch)
            check_type_meta(rt, patched)
            obj, unknown, errors = decode(bare(patched), rt.version, rt.kind)
            if errors:
                raise bad_request(errors[0])
            if first[0]:
                self._unknown_fields(req, unknown, warnings)
                first[0] = False
            check_identity(rt, obj, name, ns)
            apply_defaults(rt, obj)
            return obj

        return self._update_loop(req, rt, ns, build, warnings)

    def _apply(self, req: Request, rt: ResourceType, ns: str, warnings: list[str]) -> Response:
        """Server-side apply, approximated: create if absent, else strategic-merge the applied config."""
        if not req.query.get("fieldManager"):
            raise APIError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                "Invalid",
            )
        raw = _parse_body(req)
        if not isinstance(raw, dict):
            raise bad_request("apply patch must be an object")
        check_type_meta(rt, raw)
        obj, unknown, errors = decode(bare(raw), rt.version, rt.kind)
        if errors:
            raise bad_request(errors[0])
        self._unknown_fields(req, unknown, warnings)
        check_identity(rt, obj, req.info.name, ns)
        if self.store.get(rt, ns, req.info.name) is None:
            return self._create_inner(req, rt, warnings, body=obj)
        return self._update_loop(req, rt, ns, lambda cur: _applied(rt, cur, obj), warnings)

    def _update_loop(
        self, req: Request, rt: ResourceType, ns: str, build: Callable[[Obj], Obj], warnings: list[str]
    ) -> Response:
        name, sub = req.info.name, req.info.subresource
        dry_run = self._dry_run(req)
        try:
            for _ in range(_MAX_ATTEMPTS):
                cur = self._must_get(rt, ns, name)
                cur_rv = cur["metadata"]["resourceVersion"]
                new = build(cur)
                precondition = new["metadata"].get("resourceVersion") or ""
                if sub == "status":
                    prepare_update(rt, new, cur, "status")
                attrs = Attributes(
                    rt,
                    "UPDATE",
                    ns,
                    name,
                    req.user,
                    subresource=sub,
                    old=full(rt, cur),
                    dry_run=dry_run,
                    options=self._options("UpdateOptions", req, dry_run),
                    warnings=warnings,
                )
                mutated = self.admission.mutate(attrs, full(rt, new))
                assert mutated is not None
                new = bare(mutated)
                if precondition and precondition != cur_rv:
                    raise conflict(rt.resource, rt.group, name, STALE_WHY)
                check_identity(rt, new, name, ns)
                if sub != "status":
                    prepare_update(rt, new, cur, "")
                validate(rt, new, cur)
                self.admission.validate(attrs, full(rt, new))
                new["metadata"]["resourceVersion"] = cur_rv
                if dry_run:
                    return Response(200, full(rt, new), warnings)
                try:
                    stored = self.store.replace(rt, new, cur_rv)
                except CASConflict:
                    if precondition:
                        raise conflict(rt.resource, rt.group, name, STALE_WHY) from None
                    continue
                return Response(200, full(rt, stored), warnings)
            raise conflict(rt.resource, rt.group, name, STALE_WHY)
        except APIError as exc:
            exc.warnings = warnings + exc.warnings
            raise

    # ----- delete ------------------------------------------------------------------------------------
    def _delete_options(self, req: Request) -> Obj:
        opts: Obj = {}
        if req.body.strip():
            raw = _parse_body(req)
            if isinstance(raw, dict):
                opts = bare(raw)
        for q in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
            if q in req.query:
                opts[q] = req.query[q]
        if self._dry_run(req):
            opts["dryRun"] = ["All"]
        return opts

    def _delete(self, req: Request, rt: ResourceType) -> Response:
        ns = self._namespace_of(rt, req.info)
        opts = self._delete_options(req)
        dry_run = opts.get("dryRun") == ["All"] or self._dry_run(req)
        if opts.get("dryRun") and opts["dryRun"] != ["All"]:
            raise bad_request(f'dryRun: Unsupported value: "{opts["dryRun"]}"')
        warnings: list[str] = []
        try:
            return self._delete_one(req, rt, ns, req.info.name, opts, dry_run, warnings)
        except APIError as exc:
            exc.warnings = warnings + exc.warnings
            raise

    def _delete_one(
        self, req: Request, rt: ResourceType, ns: str, name: str, opts: Obj, dry_run: bool, warnings: list[str]
    ) -> Response:
        pre = opts.get("preconditions") or {}
        for _ in range(_MAX_ATTEMPTS):
            cur = self._must_get(rt, ns, name)
            meta = cur["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise conflict(
                    rt.resource,
                    rt.group,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise conflict(
                    rt.resource,
                    rt.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition:"
                    f" {pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta.get('resourceVersion')}",
                )
            options = {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", **opts}
            attrs = Attributes(
                rt, "DELETE", ns, name, req.user, old=full(rt, cur), dry_run=dry_run, options=options, warnings=warnings
            )
            self.admission.mutate(attrs, None)
            self.admission.validate(attrs, None)
            if meta.get("finalizers"):
                # Finalizers hold the object: it is only marked, and goes away when they are removed.
                if meta.get("deletionTimestamp") or dry_run:
                    return Response(200, full(rt, cur), warnings)
                marked = {
                    **cur,
                    "metadata": {**meta, "deletionTimestamp": now_rfc3339(), "deletionGracePeriodSeconds": 0},
                }
                try:
                    stored = self.store.replace(rt, marked, meta["resourceVersion"])
                except CASConflict:
                    continue
                return Response(200, full(rt, stored), warnings)
            if dry_run:
                return Response(200, self._deleted_body(rt, cur), warnings)
            try:
                if rt.key == "namespaces":
                    self.store.remove_namespace_contents(name)
                gone = self.store.remove(rt, ns, name, meta["resourceVersion"])
            except CASConflict:
                continue
            return Response(200, self._deleted_body(rt, gone), warnings)
        raise conflict(rt.resource, rt.group, name, STALE_WHY)

    @staticmethod
    def _deleted_body(rt: ResourceType, obj: Obj) -> Obj:
        if rt.return_deleted_object:
            if rt.key == "namespaces":
                obj = {**obj, "status": {"phase": "Terminating"}}
            return full(rt, obj)
        details: Obj = {"name": obj["metadata"]["name"], "kind": rt.resource, "uid": obj["metadata"].get("uid", "")}
        if rt.group:
            details["group"] = rt.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _delete_collection(self, req: Request, rt: ResourceType) -> Response:
        matcher = self._matcher(req, rt)
        opts = self._delete_options(req)
        dry_run = opts.get("dryRun") == ["All"]
        ns = req.info.namespace
        items = self.store.list(rt, ns or None, matcher).items
        deleted: list[Obj] = []
        warnings: list[str] = []
        for o in items:
            try:
                self._delete_one(
                    req, rt, o["metadata"].get("namespace", ""), o["metadata"]["name"], opts, dry_run, warnings
                )
            except APIError as exc:
                if exc.code != 404:
                    exc.warnings = warnings + exc.warnings
                    raise
            deleted.append(o)
        body = {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.current_rv())},
            "items": deleted,
        }
        return Response(200, body, warnings)

    # ----- pods/binding ------------------------------------------------------------------------------
    def _binding(self, req: Request, namespace: str, pod_name: str | None) -> Response:
        pods = self.registry.by_key["pods"]
        warnings: list[str] = []
        dry_run = self._dry_run(req)
        raw = _parse_body(req)
        if not isinstance(raw, dict):
            raise bad_request("the body of the request was not a Binding object")
        check_type_meta(_BINDING_RT, raw, "Binding", "v1")
        binding, unknown, errors = decode(bare(raw), "v1", "Binding")
        if errors:
            raise bad_request(f'Binding in version "v1" cannot be handled as a Binding: {errors[0]}')
        self._unknown_fields(req, unknown, warnings)
        meta = binding.setdefault("metadata", {})
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace
        name = meta.get("name") or ""
        if pod_name is not None and name != pod_name:
            raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({pod_name})")
        target = binding.get("target") or {}
        if not target.get("name"):
            raise APIError(422, f'Binding "{name}" is invalid: target.name: Required value', "Invalid")
        if target.get("kind") not in (None, "", "Node"):
            raise APIError(
                422,
                f'Binding "{name}" is invalid: target.kind: Invalid value: "{target.get("kind")}": '
                "must be empty or 'Node'",
                "Invalid",
            )
        via_subresource = pod_name is not None
        attrs = Attributes(
            pods if via_subresource else _BINDING_RT,
            "CREATE",
            namespace,
            name,
            req.user,
            subresource="binding" if via_subresource else "",
            dry_run=dry_run,
            options=self._options("CreateOptions", req, dry_run),
            kind=("", "v1", "Binding"),
            warnings=warnings,
        )
        try:
            obj = {"kind": "Binding", "apiVersion": "v1", **binding}
            mutated = self.admission.mutate(attrs, obj)
            self.admission.validate(attrs, mutated)
            binding = bare(mutated or obj)
            node = (binding.get("target") or {}).get("name", "")
            for _ in range(_MAX_ATTEMPTS):
                cur = self._must_get(pods, namespace, name)
                pmeta = cur["metadata"]
                if binding["metadata"].get("uid") and binding["metadata"]["uid"] != pmeta.get("uid"):
                    raise conflict(
                        "pods/binding",
                        "",
                        name,
                        f"Precondition failed: UID in precondition: "
                        f"{binding['metadata']['uid']}, UID in object meta: {pmeta.get('uid')}",
                    )
                if pmeta.get("deletionTimestamp"):
                    raise conflict(
                        "pods/binding", "", name, f"pod {name} is being deleted, cannot be assigned to a host"
                    )
                if (cur.get("spec") or {}).get("nodeName"):
                    raise conflict(
                        "pods/binding", "", name, f'pod {name} is already assigned to node "{cur["spec"]["nodeName"]}"'
                    )
                if dry_run:
                    break
                bound = _bind(cur, node, binding["metadata"].get("annotations") or {})
                try:
                    self.store.replace(pods, bound, pmeta["resourceVersion"])
                except CASConflict:
                    continue
                break
            else:
                raise conflict("pods/binding", "", name, STALE_WHY)
        except APIError as exc:
            exc.warnings = warnings + exc.warnings
            raise
        return Response(
            201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, warnings
        )


def _bind(pod: Obj, node: str, annotations: dict[str, str]) -> Obj:
    """What the binding REST storage writes: nodeName, binding annotations, PodScheduled=True."""
    meta = dict(pod["metadata"])
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    spec = {**(pod.get("spec") or {}), "nodeName": node}
    status = dict(pod.get("status") or {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append(
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
    )
    status["conditions"] = conditions
    return {**pod, "metadata": meta, "spec": spec, "status": status}


def _applied(rt: ResourceType, cur: Obj, applied: Obj) -> Obj:
    merged = strategic_merge(cur, applied)
    merged["metadata"] = {**merged["metadata"], "resourceVersion": cur["metadata"]["resourceVersion"]}
    apply_defaults(rt, merged)
    return merged


def _parse_body(req: Request) -> Any:
    if not req.body.strip():
        raise bad_request("the request body is empty")
    if "yaml" in req.content_type:
        try:
            return yaml.safe_load(req.body)
        except yaml.YAMLError as exc:
            raise bad_request(f"error converting YAML to JSON: {exc}") from exc
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"json parse error: {exc}") from exc


def _not_allowed() -> APIError:
    return APIError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
