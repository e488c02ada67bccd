"""Which quotas apply to a namespace: its own quota ConfigMaps, else the cluster default (architecture §4.1.3)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qosgate.core.annotations import QUOTA_LABEL, SYSTEM_NAMESPACE
from qosgate.core.errors import InvalidError
from qosgate.core.quota import QUOTA_LABEL_VALUE, Quota, quota_from_configmap, quotas_in_force
from qosgate.kube.store import ObjectStore


@dataclass(frozen=True, slots=True)
class QuotaLookup:
    quotas: Sequence[Quota] = ()
    errors: Sequence[str] = ()  # invalid quota ConfigMaps in force for the namespace


class QuotaSource:
    """Quota ConfigMaps from the informer's ObjectStore, parsed once per resourceVersion.

    A namespace's own quota ConfigMaps replace the cluster default ones (those in `default_namespace`).
    """

    def __init__(self, configmaps: ObjectStore, default_namespace: str = SYSTEM_NAMESPACE):
        self.configmaps = configmaps
        self.default_namespace = default_namespace
        self._parsed: dict[str, tuple[str, Quota | InvalidError]] = {}
        self._lock = threading.Lock()

    @property
    def synced(self) -> bool:
        return self.configmaps.synced

    def _parse(self, obj: Mapping[str, Any]) -> Quota | InvalidError:
        metadata = obj.get("metadata") or {}
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        version = str(metadata.get("resourceVersion") or "")
        with self._lock:
            cached = self._parsed.get(key)
        if cached is not None and cached[0] == version and version:
            return cached[1]
        try:
            parsed: Quota | InvalidError = quota_from_configmap(obj)
        except InvalidError as exc:
            parsed = exc
        with self._lock:
            if len(self._parsed) > 10_000:  # deleted ConfigMaps leave entries behind; start over now and then
                self._parsed.clear()
            self._parsed[key] = (version, parsed)
        return parsed

    def _in(self, namespace: str) -> tuple[list[Quota], list[str]]:
        quotas: list[Quota] = []
        errors: list[str] = []
        for obj in sorted(self.configmaps.in_namespace(namespace), key=lambda o: str(o["metadata"].get("name"))):
            labels = obj["metadata"].get("labels") or {}
            if labels.get(QUOTA_LABEL) != QUOTA_LABEL_VALUE:
                continue
            parsed = self._parse(obj)
            if isinstance(parsed, InvalidError):
                errors.extend(str(e) for e in parsed.errors)
            else:
                quotas.append(parsed)
        return quotas, errors

    def quotas_for(self, namespace: str) -> QuotaLookup:
        own, errors = self._in(namespace)
        if own or errors:
            return QuotaLookup(tuple(own), tuple(errors))
        default, errors = self._in(self.default_namespace)
        return QuotaLookup(tuple(quotas_in_force(own, default)), tuple(errors))


class StaticQuotas:
    """Fixed quotas per namespace (tests, benchmarks, `--local` runs); `"*"` is the default."""

    def __init__(self, quotas: Mapping[str, Sequence[Quota]]):
        self._quotas = dict(quotas)
        self.synced = True

    def quotas_for(self, namespace: str) -> QuotaLookup:
        return QuotaLookup(tuple(self._quotas.get(namespace, self._quotas.get("*", ()))))


class QuotaProvider(Protocol):
    @property
    def synced(self) -> bool: ...

    def quotas_for(self, namespace: str) -> QuotaLookup: ...
