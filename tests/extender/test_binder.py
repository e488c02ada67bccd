"""KubeBinder against the fake kube-apiserver: the pods/binding subresource and how its answers are read."""

from __future__ import annotations

import socket

from qosgate.extender.binder import KubeBinder, binding_body
from qosgate.extender.state import BindOutcome
from qosgate.kube.config import load_api_client
from tests.extender.objects import make_node, make_pod
from tests.fakeapi.server import FakeAPIServer


def seeded(fake_api: FakeAPIServer) -> dict:
    fake_api.seed([make_node("a"), make_node("b")])
    pod = make_pod("p", 1024)
    fake_api.seed([pod])
    return fake_api.get_object("pods", "default", "p")  # type: ignore[return-value]


def test_binding_body_carries_the_uid_precondition() -> None:
    assert binding_body("ns", "p", "u-1", "n1") == {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    assert "uid" not in binding_body("ns", "p", "", "n1")["metadata"]


def test_bind_then_retry_then_elsewhere(fake_api: FakeAPIServer) -> None:
    pod = seeded(fake_api)
    binder = KubeBinder(fake_api.kube_client())
    uid = pod["metadata"]["uid"]
    assert binder.bind("default", "p", uid, "a").outcome is BindOutcome.BOUND
    assert fake_api.get_object("pods", "default", "p")["spec"]["nodeName"] == "a"  # type: ignore[index]
    # A retried bind (the scheduler timed out waiting for us) is a success, not an error.
    assert binder.bind("default", "p", uid, "a").outcome is BindOutcome.ALREADY_BOUND_HERE
    elsewhere = binder.bind("default", "p", uid, "b")
    assert elsewhere.outcome is BindOutcome.BOUND_ELSEWHERE and "already bound to node a" in elsewhere.message


def test_replaced_pod_is_never_bound(fake_api: FakeAPIServer) -> None:
    seeded(fake_api)
    result = KubeBinder(fake_api.kube_client()).bind("default", "p", "some-older-uid", "a")
    assert result.outcome is BindOutcome.REJECTED
    assert not fake_api.get_object("pods", "default", "p")["spec"].get("nodeName")  # type: ignore[index]


def test_missing_pod_is_rejected(fake_api: FakeAPIServer) -> None:
    seeded(fake_api)
    result = KubeBinder(fake_api.kube_client()).bind("default", "ghost", "u", "a")
    assert result.outcome is BindOutcome.REJECTED and "ghost" in result.message


def test_unreachable_api_is_ambiguous(tmp_path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n")
    api = load_api_client(str(kubeconfig))
    result = KubeBinder(api, timeout=2).bind("default", "p", "u", "a")
    assert result.outcome is BindOutcome.UNKNOWN
