"""Invalid quota and catalog ConfigMaps are refused with every bad field named."""

from __future__ import annotations

from qosgate.core.catalog import DEFAULT_CATALOG, DEFAULT_CATALOG_YAML
from qosgate.webhook.checks.configmaps import check_configmap_content
from qosgate.webhook.checks.settings import ValidatorSettings
from tests.webhook.checks.helpers import configmap, quota_configmap, request

SETTINGS = ValidatorSettings()


def check(obj, operation="CREATE"):
    return check_configmap_content(request(obj, operation=operation, kind="ConfigMap"), SETTINGS, DEFAULT_CATALOG)


def test_valid_quota_passes() -> None:
    assert check(quota_configmap("pod: [{name: memory-qos, classes: [{name: gold, capacity: 5}]}]")) == \
        check(quota_configmap("container: []"))
    assert not check(quota_configmap("pod: [{name: memory-qos, classes: [{name: gold, capacity: 5}]}]")).denied


def test_invalid_quota_names_every_field() -> None:
    finding = check(quota_configmap("enforcement: maybe\npod: [{name: memory-qos, classes: [{name: gold, "
                                    "capacity: -2, maxMemoryMin: 1Qi}]}]"))
    assert finding.denials == (
        "invalid quota: configmap team-a/qos-quota: data[quota.yaml]: enforcement: must be one of deny, warn, dryrun,"
        " got 'maybe'",
        "invalid quota: configmap team-a/qos-quota: data[quota.yaml]: pod[0].classes[0].capacity: must be an integer "
        "≥ 0 (0 = unlimited), got -2",
        "invalid quota: configmap team-a/qos-quota: data[quota.yaml]: pod[0].classes[0].maxMemoryMin: '1Qi' is not a "
        "valid quantity (e.g. 128974848, 129e6, 129M, 123Mi)",
    )


def test_missing_key_and_namespace_from_request() -> None:
    cm = configmap("q", labels={"qosgate.io/quota": "true"})
    del cm["metadata"]["namespace"]  # CREATE bodies may leave it to the URL
    assert check(cm).denials == ("invalid quota: configmap team-a/q: data: missing key 'quota.yaml'",)


def test_unknown_catalog_classes_warn() -> None:
    finding = check(quota_configmap("pod: [{name: memory-qos, classes: [{name: platinum}]}, "
                                    "{name: example.com/io, classes: [{name: fast}]}]"))
    assert not finding.denied
    assert finding.warnings == ("quota lists memory-qos class platinum (not in the catalog), example.com/io "
                                "(not in the catalog); pods cannot ask for it yet",)


def test_label_value_other_than_true_warns() -> None:
    finding = check(configmap("x", labels={"qosgate.io/quota": "yes"}))
    assert not finding.denied and "only qosgate.io/quota: \"true\" takes effect" in finding.warnings[0]


def test_catalog_content() -> None:
    good = configmap("qosgate-classes", "qosgate-system", {"catalog.yaml": DEFAULT_CATALOG_YAML})
    assert not check(good).denied
    bad = configmap("qosgate-classes", "qosgate-system", {"catalog.yaml": "backends: [nope]\nresources: []"})
    denials = check(bad, "UPDATE").denials
    assert len(denials) == 2
    assert denials[0].startswith("invalid catalog: configmap qosgate-system/qosgate-classes: data[catalog.yaml]: ")


def test_delete_and_plain_configmaps_pass() -> None:
    assert not check(configmap("app")).denied
    req = request(None, operation="DELETE", kind="ConfigMap", old=quota_configmap("garbage: ["))
    assert not check_configmap_content(req, SETTINGS, DEFAULT_CATALOG).denied
