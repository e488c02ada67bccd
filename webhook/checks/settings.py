"""Who may write qosgate's configuration, and where that configuration lives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qosgate.core.annotations import CATALOG_CONFIGMAP, SYSTEM_NAMESPACE

DEFAULT_ADMIN_GROUPS = frozenset({"system:masters"})
DEFAULT_CONTROLLER_DELETERS = frozenset({
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
})


@dataclass(frozen=True, slots=True)
class ValidatorSettings:
    """Admins are the only principals allowed to create, change or delete quota and catalog ConfigMaps.

    Tenants commonly hold the `edit` role, which can write any ConfigMap of their namespace — RBAC alone
    cannot keep them from raising their own quota, so the validating webhook does.
    """

    admin_users: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = DEFAULT_ADMIN_GROUPS
    catalog_namespace: str = SYSTEM_NAMESPACE
    catalog_name: str = CATALOG_CONFIGMAP
    # The namespace whose quota ConfigMaps are the cluster default (architecture §4.1.3).
    system_namespace: str = SYSTEM_NAMESPACE
    # Controllers that delete whatever is left in a namespace being deleted, or whose owner is gone: refusing
    # them would leave a namespace stuck in Terminating. Only deletes: they never create or edit a quota.
    controller_deleters: frozenset[str] = DEFAULT_CONTROLLER_DELETERS

    @classmethod
    def of(cls, admin_users: Iterable[str] = (), admin_groups: Iterable[str] = DEFAULT_ADMIN_GROUPS,
           **kwargs: object) -> ValidatorSettings:
        return cls(admin_users=frozenset(admin_users), admin_groups=frozenset(admin_groups),
                   **kwargs)  # type: ignore[arg-type]

    def is_admin(self, username: str, groups: Iterable[str]) -> bool:
        return username in self.admin_users or not self.admin_groups.isdisjoint(groups)
