"""The kernel's effective memory.min arithmetic (qosgate.core.kernelprot): known cases and properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.kernelprot import ProtNode, effective_min, effective_protection, structural_usage

MiB = 2**20


def chain(mins: list[int], usage: int) -> dict[str, ProtNode]:
    """root → a → b → ... with the given memory.min, every level using `usage`."""
    nodes = {"/": ProtNode(None, 0, usage)}
    parent = "/"
    for i, value in enumerate(mins):
        path = f"{parent}/{i}" if parent != "/" else f"/{i}"
        nodes[path] = ProtNode(parent, value, usage)
        parent = path
    return nodes


def test_a_container_under_unprotected_ancestors_gets_nothing() -> None:
    emin = effective_min(chain([0, 0, 0, 200 * MiB], 150 * MiB), "/", recursive=False)
    assert emin["/0/1/2/3"] == 0


def test_recursiveprot_does_not_lift_a_parent_zero() -> None:
    emin = effective_min(chain([0, 0, 0, 200 * MiB], 150 * MiB), "/", recursive=True)
    assert emin["/0/1/2/3"] == 0


def test_every_ancestor_covering_protects_the_usage() -> None:
    emin = effective_min(chain([200 * MiB] * 4, 150 * MiB), "/", recursive=False)
    assert emin["/0/1/2/3"] == 150 * MiB  # min(usage, min) once nothing above is over-committed
    assert emin["/0"] == 200 * MiB  # a child of the reclaim root: its declared value, uncapped


def test_overcommit_shares_the_parent_by_protected_usage() -> None:
    assert effective_protection(100, 300, 100, 100, 200, False) == 50
    assert effective_protection(0, 300, 100, 100, 200, False) == 0


def test_recursive_floating_protection_goes_to_unprotected_usage() -> None:
    # parent protects 300, children claim 100 of it; this child uses 150 with min 0 of the 200 unprotected
    assert effective_protection(150, 300, 0, 300, 100, True) == 150
    assert effective_protection(150, 300, 0, 300, 100, False) == 0


def test_empty_cgroups_get_nothing() -> None:
    nodes = chain([200 * MiB, 200 * MiB], 0)
    assert effective_min(nodes, "/", False)["/0/1"] == 0


trees = st.recursive(
    st.tuples(st.integers(0, 64), st.integers(0, 64), st.just(())),
    lambda kids: st.tuples(st.integers(0, 64), st.integers(0, 64), st.lists(kids, max_size=4).map(tuple)),
    max_leaves=20,
)


def flatten(tree, parent: str | None = None, path: str = "/", out=None) -> dict[str, ProtNode]:
    out = {} if out is None else out
    min_pages, usage_pages, kids = tree
    child_usage = 0
    for i, kid in enumerate(kids):
        flatten(kid, path, f"{path.rstrip('/')}/{i}", out)
        child_usage += out[f"{path.rstrip('/')}/{i}"].usage
    # a parent's usage is at least its children's (charges propagate upwards)
    out[path] = ProtNode(parent, min_pages * 4 * MiB if parent else 0, child_usage + usage_pages * MiB)
    return out


@settings(max_examples=300, deadline=None)
@given(tree=trees, recursive=st.booleans())
def test_children_never_get_more_than_their_parent(tree, recursive) -> None:
    nodes = flatten(tree)
    emin = effective_min(nodes, "/", recursive)
    for path in nodes:
        kids = [p for p, n in nodes.items() if n.parent == path]
        if path != "/" and kids:
            assert sum(emin[k] for k in kids) <= emin[path], (path, [emin[k] for k in kids], emin[path])


@settings(max_examples=300, deadline=None)
@given(tree=trees)
def test_without_recursiveprot_protection_is_capped_by_usage_and_setting(tree) -> None:
    nodes = flatten(tree)
    emin = effective_min(nodes, "/", False)
    for path, node in nodes.items():
        if path == "/" or node.parent == "/":
            continue
        assert emin[path] <= min(node.usage, node.min) + 4096
        if emin[node.parent] == 0:  # type: ignore[index]
            assert emin[path] == 0


@settings(max_examples=300, deadline=None)
@given(tree=trees, recursive=st.booleans())
def test_raising_an_ancestor_never_lowers_anyones_protection(tree, recursive) -> None:
    nodes = flatten(tree)
    before = effective_min(nodes, "/", recursive)
    top = next(p for p, n in nodes.items() if n.parent == "/") if any(n.parent == "/" for n in nodes.values()) else None
    if top is None:
        return
    raised = dict(nodes)
    raised[top] = ProtNode("/", nodes[top].min + 64 * MiB, nodes[top].usage)
    after = effective_min(raised, "/", recursive)
    if not recursive:  # with floating protection a raise can shift shares between siblings' unprotected usage
        assert all(after[p] >= before[p] for p in nodes if p != "/")


@settings(max_examples=200, deadline=None)
@given(tree=trees, recursive=st.booleans())
def test_structurally_covered_trees_protect_every_leaf_fully(tree, recursive) -> None:
    """The theorem the agent relies on: when every cgroup's memory.min ≥ the sum of its children's, every
    leaf using its memory.min is fully protected — whatever the recursiveprot option."""
    nodes = flatten(tree)
    covered: dict[str, ProtNode] = {}
    for path in sorted(nodes, key=lambda p: -p.count("/")):
        kids = [p for p, n in nodes.items() if n.parent == path]
        value = max(nodes[path].min, sum(covered[k].min for k in kids)) if path != "/" else 0
        covered[path] = ProtNode(nodes[path].parent, value, 0)
    emin = effective_min(structural_usage(covered), "/", recursive)
    for path, node in covered.items():
        if path != "/" and not any(n.parent == path for n in covered.values()):
            assert emin[path] == node.min // 4096 * 4096
