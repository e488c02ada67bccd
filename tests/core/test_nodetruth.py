"""Kubelet policy inference, the NRI check and the report figures (qosgate.core.nodetruth)."""

from __future__ import annotations

from qosgate.core.ancestors import Owned
from qosgate.core.cgtree import BURSTABLE, GUARANTEED, SYSTEMD, parse_tree, pod_dir
from qosgate.core.nodetruth import infer_kubelet_policy, nri_check, protection_figures
from qosgate.core.podprotection import PodView

MiB = 2**20
G_UID, B_UID = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
G, B = pod_dir(SYSTEMD, GUARANTEED, G_UID), pod_dir(SYSTEMD, BURSTABLE, B_UID)


def tree(values: dict[str, tuple[int, int]], current: int = 0):
    snapshot = {"": {"memory.min": "0"}, "kubepods-burstable.slice": {"memory.min": "0"},
                "kubepods-besteffort.slice": {"memory.min": "0"}}
    for path, (mn, low) in values.items():
        snapshot[path] = {"memory.min": str(mn), "memory.low": str(low), "memory.current": str(current)}
    return parse_tree(snapshot, SYSTEMD)


def test_policy_inference() -> None:
    assert infer_kubelet_policy(tree({}), {}) == "unknown"
    assert infer_kubelet_policy(tree({B: (0, 0), f"{B}/cri-containerd-a.scope": (100 * MiB, 0)}), {}) == "none"
    tiered = tree({G: (1024 * MiB, 0), B: (0, 512 * MiB)})
    assert infer_kubelet_policy(tiered, {}) == "tiered"
    legacy = tree({B: (512 * MiB, 0), "kubepods-burstable.slice": (512 * MiB, 0)})
    assert infer_kubelet_policy(legacy, {}) == "legacy"
    # the agent's own raise is not evidence of a kubelet policy
    assert infer_kubelet_policy(tree({B: (100 * MiB, 0)}), {B: Owned(100 * MiB, 0)}) == "none"
    assert infer_kubelet_policy(tree({G: (1024 * MiB, 0)}), {}) == "legacy"  # ambiguous: the safe reading


def test_nri_check() -> None:
    t = tree({B: (0, 0), f"{B}/cri-containerd-abc.scope": (100 * MiB, 0),
              f"{B}/cri-containerd-def.scope": (0, 0)})
    honoured = PodView(B_UID, "ns", "p", BURSTABLE, True, 100 * MiB, {"a": 100 * MiB + 5}, {"a": "abc"})
    assert nri_check(t, [honoured]).honoured is True  # compared in whole pages
    ignored = PodView(B_UID, "ns", "p", BURSTABLE, True, 100 * MiB, {"b": 100 * MiB}, {"b": "def"})
    check = nri_check(t, [ignored])
    assert check.honoured is False and check.mismatches == 1 and "container b" in check.details[0]
    assert nri_check(t, [PodView(B_UID, "ns", "p", BURSTABLE, True, 0)]).honoured is None


def test_figures_with_and_without_covering_ancestors() -> None:
    container = f"{B}/cri-containerd-abc.scope"
    pod = PodView(B_UID, "ns", "p", BURSTABLE, True, 100 * MiB, {}, {})
    bare = tree({B: (0, 0), container: (100 * MiB, 0)})
    values = {p: n.min or 0 for p, n in bare.nodes.items()}
    figures = protection_figures(bare, values, 100 * MiB, recursive=True, pods=[pod])
    assert figures.kernel_protected == 0 and figures.drift == 100 * MiB and figures.accounted == 100 * MiB
    covered = dict(values, **{"": 100 * MiB, "kubepods-burstable.slice": 100 * MiB, B: 100 * MiB})
    figures = protection_figures(bare, covered, 100 * MiB, recursive=False, pods=[pod])
    assert figures.kernel_protected == 100 * MiB and figures.drift == 0 and figures.kubepods_min == 100 * MiB
    pending = PodView("33333333-3333-3333-3333-333333333333", "ns", "q", BURSTABLE, True, 50 * MiB)
    figures = protection_figures(bare, covered, 150 * MiB, recursive=False, pods=[pod, pending])
    assert figures.accounted == 150 * MiB and figures.drift == 0 and figures.demanded == 150 * MiB
