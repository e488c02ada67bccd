"""`qosgate status` against the fake API: the same figures the extender decides with, readable at a glance."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from qosgate.cli.main import main
from qosgate.core.nodereport import NodeReport, lease_object
from tests.extender.objects import GI, bound, make_node, make_pod

NOW = datetime.now(UTC)


def report(node: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(node=node, observed_at=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), cgroup_v2=True,
                                  memory_controller=True, recursive_prot=True, kubelet_policy="none",
                                  protectable_bytes=64 * GI, kubepods_min_bytes=0, demanded_bytes=0,
                                  kernel_protected_bytes=3 * GI, kernel_protected_now_bytes=3 * GI,
                                  outside_kubepods_min_bytes=0, accounted_bytes=3 * GI, drift_bytes=0,
                                  overcommit_bytes=0, nri_honoured=True, nri_mismatches=0,
                                  offered_classes="memory-qos=gold:4")
    values.update(fields)
    lease = lease_object(NodeReport(**values), NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), 90)
    lease["metadata"]["namespace"] = "qosgate-system"
    return lease


def seed(fake_api: Any, with_reports: bool = True) -> None:
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                     for n in ("qosgate-system", "team-a")]
    objects += [make_node("roomy", protectable="10Gi"), make_node("tight", protectable="10Gi")]
    tight = make_node("edge", protectable="10Gi")
    tight["metadata"]["labels"]["zone"] = "edge"
    objects.append(tight)
    for name, size, node in (("a", 3, "roomy"), ("b", 9, "tight")):
        pod = bound(make_pod(name, size * GI, namespace="team-a", classes={"memory-qos": "gold"}), node)
        objects.append(pod)
    objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "quota", "namespace": "team-a", "labels": {"qosgate.io/quota": "true"}},
                    "data": {"quota.yaml": "pod:\n- name: memory-qos\n  classes:\n  - {name: gold, capacity: 4}\n"}})
    if with_reports:
        objects += [{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **report("roomy")}]
    fake_api.seed(objects)


def run(capsys: pytest.CaptureFixture[str], kubeconfig: str, *argv: str) -> tuple[int, str, str]:
    code = main(["status", "--kubeconfig", kubeconfig, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lists_every_node_tightest_first_with_the_extenders_figures(fake_api: Any, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    code, out, _ = run(capsys, fake_api.write_kubeconfig(str(tmp_path / "kc")), "-o", "json")
    assert code == 0
    status = json.loads(out)
    assert [n["name"] for n in status["nodes"]] == ["tight", "roomy", "edge"]
    tight, roomy = status["nodes"][0], status["nodes"][1]
    assert (tight["protectable"], tight["accounted"], tight["headroom"]) == (10 * GI, 9 * GI, GI)
    assert roomy["report"] == "fresh" and roomy["kernel_protected"] == 3 * GI and roomy["classes"] == [
        "memory-qos=gold:4"]
    assert tight["report"] == "none" and tight["classes"] is None
    (team,) = status["namespaces"]
    assert team["namespace"] == "team-a" and team["classes"][0] | {"used": 2, "capacity": 4} == team["classes"][0]
    assert any("extender Lease" in w for w in status["warnings"])


def test_text_draws_a_bar_per_node_and_honours_the_selector(fake_api: Any, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "kc"))
    code, out, _ = run(capsys, kubeconfig)
    assert code == 0
    tight = next(line for line in out.splitlines() if line.startswith("tight"))
    assert "[" + "#" * 18 + ".." + "]" in tight
    code, out, _ = run(capsys, kubeconfig, "-l", "zone=edge", "-o", "yaml")
    assert code == 0 and "name: edge" in out and "name: tight" not in out


def test_missing_agent_and_missing_access_are_named_not_fatal(fake_api: Any, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api, with_reports=False)
    fake_api.add_user("viewer", "viewer")
    fake_api.authorizer = lambda user, record: not (user.username == "viewer" and record.resource == "configmaps")
    code, out, _ = run(capsys, fake_api.write_kubeconfig(str(tmp_path / "kc"), token="viewer"))
    assert code == 0
    assert "is the qosgate agent DaemonSet installed?" in out
    assert "no access to quota configmaps" in out
    assert "tight" in out  # the rest is still shown


def test_no_cluster_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["status"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def one_line_error(code: int, out: str, err: str) -> str:
    """The command failed with exactly one line on stderr, nothing on stdout, and no bug report."""
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "internal error" not in err and "Traceback" not in err
    return err


def test_status_with_an_unreachable_api_server_is_a_one_line_error(fake_api: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = Path(fake_api.write_kubeconfig(str(tmp_path / "kc")))
    kubeconfig.write_text(kubeconfig.read_text().replace(fake_api.url, "https://127.0.0.1:9"))
    err = one_line_error(*run(capsys, str(kubeconfig)))
    assert "cannot reach the API server https://127.0.0.1:9" in err


def test_status_for_a_namespace_shows_the_cluster_default_quota_that_applies_to_it(
        fake_api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    fake_api.seed([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}},
        bound(make_pod("c", GI, namespace="team-b", classes={"memory-qos": "gold"}), "roomy"),
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "default-quota", "namespace": "qosgate-system", "labels": {"qosgate.io/quota": "true"}},
         "data": {"quota.yaml": "pod:\n- name: memory-qos\n  classes:\n  - {name: gold, capacity: 10}\n"}}])
    kubeconfig = fake_api.write_kubeconfig(str(tmp_path / "kc"))
    code, out, _ = run(capsys, kubeconfig, "-o", "json")
    assert code == 0
    everywhere = {space["namespace"]: space for space in json.loads(out)["namespaces"]}
    assert everywhere["team-b"]["classes"][0] | {"used": 1, "capacity": 10} == everywhere["team-b"]["classes"][0]
    code, out, _ = run(capsys, kubeconfig, "-n", "team-b", "-o", "json")
    assert code == 0
    assert json.loads(out)["namespaces"] == [everywhere["team-b"]]


def test_status_with_an_invalid_label_selector_is_a_one_line_error(fake_api: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    err = one_line_error(*run(capsys, fake_api.write_kubeconfig(str(tmp_path / "kc")), "-l", "!!!bad"))
    assert "'!!!bad'" in err


@pytest.mark.parametrize("lease", ["bad", "/name", "namespace/", "a/b/c"])
def test_status_with_a_lease_not_namespace_slash_name_is_a_usage_error(lease: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--lease", lease])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --lease: {lease!r}: expected NAMESPACE/NAME" in err


def test_status_with_refused_credentials_is_a_one_line_error(fake_api: Any, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    err = one_line_error(*run(capsys, fake_api.write_kubeconfig(str(tmp_path / "kc"), token="unknown")))
    assert f"the API server {fake_api.url} refused the credentials" in err


def test_status_fails_when_every_read_is_forbidden(fake_api: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake_api)
    fake_api.add_user("nobody", "nobody")
    fake_api.authorizer = lambda user, record: user.username != "nobody"
    err = one_line_error(*run(capsys, fake_api.write_kubeconfig(str(tmp_path / "kc"), token="nobody")))
    assert f"no access to anything status reads on the API server {fake_api.url} (nodes, pods," in err
