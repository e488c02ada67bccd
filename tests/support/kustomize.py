"""A tiny renderer for exactly the kustomize subset `manifests/` uses, so tests can see what
`kubectl apply -k` would send without a kustomize binary.

Supported, with kustomize's semantics:

- `resources:` — YAML files (multi-document; empty documents skipped) and directories holding a
  kustomization (rendered recursively). Like kustomize's default load restrictor, a *file* must lie
  inside the kustomization's own directory; a directory (a base) may be anywhere.
- `namespace:` — sets `metadata.namespace` on namespaced objects. kustomize also rewrites RoleBinding
  subjects, webhook service references and CRD conversion services; that part is not emulated, so a
  kustomization that sets `namespace:` over such objects is refused rather than rendered differently.
- `patches:` entries with only `path:` — a strategic-merge patch document whose apiVersion, kind,
  metadata.name (and metadata.namespace, if given) pick exactly one target. Maps merge recursively
  and `null` deletes a key. Lists of maps merge by their Kubernetes patch merge key (table
  `MERGE_KEYS`, built-in API groups only; a CRD's lists are replaced, as kustomize does without the
  CRD's schema): an element with a new key is appended, one with a known key is merged into it.
  Every other list is replaced.

Anything else (generators, `images:` and other transformers, inline or JSON6902 patches, `target:`,
`$patch`/`$setElementOrder` directives, remote resources) raises `KustomizeError`: a test must never
pass on a rendering kustomize would not produce.
Output order is resource order (kustomize sorts by kind on output; nothing here depends on order).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "MERGE_KEYS",
    "KustomizeError",
    "load_yaml_documents",
    "object_id",
    "render",
    "strategic_merge",
]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "patches"}

CLUSTER_SCOPED_KINDS = frozenset({
    "APIService", "CertificateSigningRequest", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
    "CSIDriver", "CSINode", "CustomResourceDefinition", "FlowSchema", "IngressClass",
    "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume", "PriorityClass",
    "PriorityLevelConfiguration", "RuntimeClass", "StorageClass", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "VolumeAttachment",
})
# Objects whose *other* namespace fields kustomize's namespace transformer also rewrites.
_NAMESPACE_REFERENCING_KINDS = frozenset({
    "RoleBinding", "ClusterRoleBinding", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "CustomResourceDefinition", "APIService",
})

# API groups kustomize knows the schema of (built into its OpenAPI document).
_BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io", "coordination.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
    "apiextensions.k8s.io", "discovery.k8s.io", "node.k8s.io",
})

# Field name -> patch merge key, from the Kubernetes API's `patchMergeKey` tags (a test checks each
# against the OpenAPI schema kubernetes-validate ships). `ports` depends on where it is: see _merge_key.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "webhooks": "name",
    "matchConditions": "name",
}
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class KustomizeError(Exception):
    """The kustomization uses something outside the supported subset, or kustomize itself would fail."""


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    docs = []
    with path.open(encoding="utf-8") as handle:
        for number, doc in enumerate(yaml.safe_load_all(handle), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise KustomizeError(f"{path}: document {number} is not a Kubernetes object")
            docs.append(doc)
    return docs


def object_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): kustomize's resource identity (the version is not part of it)."""
    api_version = obj["apiVersion"]
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    meta = obj.get("metadata") or {}
    return group, obj["kind"], meta.get("namespace", ""), meta.get("name", "")


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization file ({', '.join(KUSTOMIZATION_FILES)})")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _local_file(root: Path, entry: object, field: str) -> Path:
    if not isinstance(entry, str) or "://" in entry or entry.startswith("git@"):
        raise KustomizeError(f"{root}: {field} entry {entry!r} is not a local path")
    path = root / entry
    if not path.exists():
        raise KustomizeError(f"{root}: {field} entry {entry!r}: no such file or directory")
    if path.is_file() and not _inside(path, root):
        raise KustomizeError(f"{root}: {field} file {entry!r} is outside the kustomization root")
    return path


def render(directory: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in `directory` to its list of objects."""
    root = Path(directory)
    kfile = _kustomization_file(root)
    kustomization = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported keys {sorted(unknown)}")

    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources") or []:
        path = _local_file(root, entry, "resources")
        objects += render(path) if path.is_dir() else load_yaml_documents(path)
    _check_unique(objects, kfile)

    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"], kfile)
    for patch_entry in kustomization.get("patches") or []:
        objects = _apply_patch_entry(root, kfile, patch_entry, objects)
    return objects


def _check_unique(objects: Iterable[dict[str, Any]], kfile: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        oid = object_id(obj)
        if oid in seen:
            raise KustomizeError(f"{kfile}: may not add resource with an already registered id {oid}")
        seen.add(oid)


def _set_namespace(objects: list[dict[str, Any]], namespace: object, kfile: Path) -> None:
    if not isinstance(namespace, str) or not namespace:
        raise KustomizeError(f"{kfile}: namespace must be a non-empty string")
    for obj in objects:
        if obj["kind"] in _NAMESPACE_REFERENCING_KINDS:
            raise KustomizeError(f"{kfile}: namespace: over a {obj['kind']} is outside this renderer's subset")
        if obj["kind"] not in CLUSTER_SCOPED_KINDS:
            obj.setdefault("metadata", {})["namespace"] = namespace


def _apply_patch_entry(
    root: Path, kfile: Path, entry: object, objects: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not isinstance(entry, dict) or set(entry) != {"path"}:
        raise KustomizeError(f"{kfile}: only `patches: - path: FILE` is supported, got {entry!r}")
    path = _local_file(root, entry["path"], "patches")
    with path.open(encoding="utf-8") as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise KustomizeError(f"{path}: a strategic-merge patch file must hold exactly one object")
    patch = docs[0]
    pmeta = patch.get("metadata") or {}
    if not {"apiVersion", "kind"} <= set(patch) or not pmeta.get("name"):
        raise KustomizeError(f"{path}: a patch needs apiVersion, kind and metadata.name to find its target")

    matches = [
        i for i, obj in enumerate(objects)
        if obj["apiVersion"] == patch["apiVersion"]
        and obj["kind"] == patch["kind"]
        and (obj.get("metadata") or {}).get("name") == pmeta["name"]
        and ("namespace" not in pmeta or (obj.get("metadata") or {}).get("namespace") == pmeta["namespace"])
    ]
    if len(matches) != 1:
        raise KustomizeError(f"{path}: patch must match exactly one resource, matched {len(matches)}")
    index = matches[0]
    try:
        merged = strategic_merge(objects[index], patch)
    except KustomizeError as exc:
        raise KustomizeError(f"{path}: {exc}") from None
    return [*objects[:index], merged, *objects[index + 1:]]


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Return `target` with the strategic-merge `patch` applied (neither argument is modified)."""
    api_version = target.get("apiVersion", "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    context = _Context(kind=target.get("kind", ""), builtin=group in _BUILTIN_GROUPS)
    return _merge_map(copy.deepcopy(target), patch, (), context)


@dataclass(frozen=True)
class _Context:
    kind: str
    builtin: bool


def _merge_key(path: tuple[str, ...], context: _Context) -> str | None:
    if not context.builtin or not path:
        return None
    field = path[-1]
    if field == "ports":
        if len(path) >= 2 and path[-2] in _CONTAINER_LISTS:
            return "containerPort"
        if context.kind == "Service" and path == ("spec", "ports"):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) or "<root>"


def _merge_map(target: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...],
               context: _Context) -> dict[str, Any]:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{_where(path)}: patch directive {key} is outside this renderer's subset")
        child_path = (*path, key)
        current = target.get(key)
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            target[key] = _merge_map(current, value, child_path, context)
        elif isinstance(value, list) and isinstance(current, list):
            target[key] = _merge_list(current, value, child_path, context)
        else:
            _refuse_directives(value, child_path)
            target[key] = copy.deepcopy(value)
    return target


def _merge_list(target: list[Any], patch: list[Any], path: tuple[str, ...], context: _Context) -> list[Any]:
    key = _merge_key(path, context)
    if key is None or not all(isinstance(item, dict) for item in [*target, *patch]):
        _refuse_directives(patch, path)
        return copy.deepcopy(patch)
    result = list(target)
    for item in patch:
        if key not in item:
            raise KustomizeError(f"{_where(path)}: patch element has no merge key {key!r}: {item!r}")
        position = next((i for i, existing in enumerate(result) if existing.get(key) == item[key]), None)
        if position is None:
            _refuse_directives(item, path)
            result.append(copy.deepcopy(item))
        else:
            result[position] = _merge_map(result[position], item, path, context)
    return result


def _refuse_directives(value: Any, path: tuple[str, ...]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if key.startswith("$"):
                raise KustomizeError(f"{_where(path)}: patch directive {key} is outside this renderer's subset")
            _refuse_directives(child, (*path, key))
    elif isinstance(value, list):
        for child in value:
            _refuse_directives(child, path)
