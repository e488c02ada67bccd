"""The resource types the fake serves, and the discovery documents derived from them.

One :class:`ResourceType` per REST collection. The flags encode the per-type storage strategy
differences the real apiserver has (which types own a ``status`` subresource, which ones return
the deleted object on DELETE, ...), so the generic code path in :mod:`.store` and :mod:`.server`
stays free of ``if resource == "pods"`` branches except where the real server special-cases too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    resource: str  # plural, as in the URL
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # Subresources served besides the main resource ("status", "binding", ...).
    subresources: tuple[str, ...] = ()
    # Upstream ``Store.ReturnDeletedObject``: DELETE answers with the object instead of a Status.
    return_deleted_object: bool = False
    # Main-resource writes cannot change .status (it is owned by the status subresource).
    status_reset_on_update: bool = False
    # What create does to a client-supplied .status: "keep" (nodes), "clear" (workloads).
    status_on_create: str = "keep"
    # metadata.generation is maintained (1 on create, +1 whenever anything but metadata/status changes).
    tracks_generation: bool = False
    # Field selectors beyond metadata.name/metadata.namespace.
    field_labels: tuple[str, ...] = ()
    categories: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @cached_property
    def key(self) -> str:
        """Stable internal id, ``pods`` / ``deployments.apps`` (cached: used per stored object)."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def singular(self) -> str:
        return self.kind.lower()


_WORKLOAD = {
    "subresources": ("status",),
    "status_reset_on_update": True,
    "status_on_create": "clear",
    "tracks_generation": True,
    "categories": ("all",),
}

DEFAULT_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        subresources=("status", "binding"),
        return_deleted_object=True,
        status_reset_on_update=True,
        status_on_create="pod",
        tracks_generation=True,
        field_labels=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        categories=("all",),
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        subresources=("status",),
        status_reset_on_update=True,
        field_labels=("spec.unschedulable",),
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status", "finalize"),
        return_deleted_object=True,
        status_reset_on_update=True,
        field_labels=("status.phase",),
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", field_labels=("type",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        subresources=("status",),
        return_deleted_object=True,
        status_reset_on_update=True,
        categories=("all",),
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        short_names=("ev",),
        field_labels=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ),
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",), **_WORKLOAD),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",), **_WORKLOAD),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        subresources=("status",),
        status_reset_on_update=True,
        status_on_create="clear",
        tracks_generation=True,
        categories=("all",),
    ),
    ResourceType(
        "apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",), field_labels=("status.replicas",), **_WORKLOAD
    ),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        subresources=("status",),
        status_reset_on_update=True,
        status_on_create="clear",
        tracks_generation=True,
        field_labels=("status.successful",),
        categories=("all",),
    ),
    ResourceType(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        short_names=("cj",),
        subresources=("status",),
        status_reset_on_update=True,
        status_on_create="clear",
        tracks_generation=True,
        categories=("all",),
    ),
)


class Registry:
    """Lookup tables over the served types (by URL coordinates and by apiVersion/kind)."""

    def __init__(self, types: tuple[ResourceType, ...] = DEFAULT_TYPES) -> None:
        self.by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self.by_gvk: dict[tuple[str, str], ResourceType] = {}
        self.by_key: dict[str, ResourceType] = {}
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self.by_gvr[(rt.group, rt.version, rt.resource)] = rt
        self.by_gvk[(rt.api_version, rt.kind)] = rt
        self.by_key[rt.key] = rt

    def lookup(self, resource: str) -> ResourceType:
        """Accept ``pods``, ``deployments.apps``, ``Pod``, ``apps/v1/deployments`` (helper convenience)."""
        if resource in self.by_key:
            return self.by_key[resource]
        parts = resource.split("/")
        if len(parts) == 3 and (parts[0], parts[1], parts[2]) in self.by_gvr:
            return self.by_gvr[(parts[0], parts[1], parts[2])]
        if len(parts) == 2 and ("", parts[0], parts[1]) in self.by_gvr:
            return self.by_gvr[("", parts[0], parts[1])]
        for rt in self.by_key.values():
            if resource in (rt.kind, rt.singular) or resource in rt.short_names:
                return rt
        raise KeyError(f"unknown resource {resource!r}")

    # ----- discovery -------------------------------------------------------------------------
    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in self.by_key.values():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        resources: list[dict[str, Any]] = []
        for rt in self.by_key.values():
            if rt.group != group or rt.version != version:
                continue
            entry: dict[str, Any] = {
                "name": rt.resource,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ALL_VERBS,
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                if sub == "binding":
                    resources.append(
                        {
                            "name": "pods/binding",
                            "singularName": "",
                            "namespaced": True,
                            "kind": "Binding",
                            "verbs": ["create"],
                        }
                    )
                elif sub == "finalize":
                    resources.append(
                        {
                            "name": f"{rt.resource}/finalize",
                            "singularName": "",
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": ["update"],
                        }
                    )
                else:
                    resources.append(
                        {
                            "name": f"{rt.resource}/{sub}",
                            "singularName": "",
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        if not resources:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def group_doc(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        if not versions or not group:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def group_list(self) -> dict[str, Any]:
        docs = [self.group_doc(g) for g in self.groups() if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [d for d in docs if d]}
