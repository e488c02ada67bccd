"""Quota and catalog ConfigMaps are written by admins only — including label flips and deletes."""

from __future__ import annotations

import pytest

from qosgate.webhook.checks.admins import check_writer
from qosgate.webhook.checks.settings import ValidatorSettings
from tests.webhook.checks.helpers import configmap, quota_configmap, request

SETTINGS = ValidatorSettings.of(admin_users=["quota-bot"], admin_groups=["system:masters", "platform"])
QUOTA = quota_configmap("pod: []")


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_tenant_cannot_write_quota(operation: str) -> None:
    finding = check_writer(request(QUOTA, operation=operation, kind="ConfigMap", old=QUOTA), SETTINGS)
    verb = "create" if operation == "CREATE" else "change"
    assert finding.denials == (f"only qosgate admins may {verb} the quota ConfigMap team-a/qos-quota; user 'alice' "
                               "is neither an admin user nor in an admin group (platform, system:masters)",)


def test_delete_is_judged_on_old_object() -> None:
    finding = check_writer(request(None, operation="DELETE", kind="ConfigMap", old=QUOTA), SETTINGS)
    assert "may delete the quota ConfigMap team-a/qos-quota" in finding.denials[0]


def test_adding_or_removing_the_label_is_a_quota_write() -> None:
    plain = configmap("settings")
    assert check_writer(request(QUOTA, operation="UPDATE", kind="ConfigMap", old=plain), SETTINGS).denied
    assert check_writer(request(plain, operation="UPDATE", kind="ConfigMap", old=QUOTA), SETTINGS).denied
    # Any value of the label is guarded (only "true" makes a quota, but nobody else needs the key).
    odd = configmap("x", labels={"qosgate.io/quota": "false"})
    assert check_writer(request(odd, kind="ConfigMap"), SETTINGS).denied


def test_admins_by_user_and_group() -> None:
    assert not check_writer(request(QUOTA, kind="ConfigMap", username="quota-bot"), SETTINGS).denied
    assert not check_writer(request(QUOTA, kind="ConfigMap", groups=("platform",)), SETTINGS).denied
    default = ValidatorSettings()
    assert not check_writer(request(QUOTA, kind="ConfigMap", username="root", groups=("system:masters",)),
                            default).denied


def test_catalog_is_guarded_by_name() -> None:
    catalog = configmap("qosgate-classes", "qosgate-system", {"catalog.yaml": "x"})
    finding = check_writer(request(catalog, kind="ConfigMap"), SETTINGS)
    assert "the catalog ConfigMap qosgate-system/qosgate-classes" in finding.denials[0]
    elsewhere = configmap("qosgate-classes", "team-a")
    assert not check_writer(request(elsewhere, kind="ConfigMap"), SETTINGS).denied


def test_unrelated_configmaps_pass() -> None:
    assert not check_writer(request(configmap("app-config"), kind="ConfigMap"), SETTINGS).denied


def test_namespace_deletion_controllers_may_delete() -> None:
    deleter = "system:serviceaccount:kube-system:namespace-controller"
    assert not check_writer(request(None, operation="DELETE", kind="ConfigMap", old=QUOTA, username=deleter),
                            SETTINGS).denied
    # ...but never create or change one.
    assert check_writer(request(QUOTA, operation="UPDATE", kind="ConfigMap", old=QUOTA, username=deleter),
                        SETTINGS).denied
