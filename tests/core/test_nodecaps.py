"""Node capabilities: mount table, memory, NRI plugin config, class offers, budget (qosgate.core.nodecaps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.catalog import DEFAULT_CATALOG, load_catalog_yaml
from qosgate.core.nodecaps import (
    NriConfig,
    memory_controller,
    offered_classes,
    parse_meminfo_total,
    parse_mountinfo,
    parse_nri_config,
    protectable_bytes,
)

SYSTEMD_HOST = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,nosuid,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
CONTAINER = """\
900 800 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
901 800 0:23 / /host/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
V1 = "30 24 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"


def test_mountinfo() -> None:
    host = parse_mountinfo(SYSTEMD_HOST, "/sys/fs/cgroup")
    assert host.cgroup2 and host.recursiveprot
    assert parse_mountinfo(CONTAINER, "/host/sys/fs/cgroup").recursiveprot is True
    assert parse_mountinfo(CONTAINER, "/sys/fs/cgroup").recursiveprot is False
    assert not parse_mountinfo(V1, "/sys/fs/cgroup").cgroup2
    assert parse_mountinfo("", "/sys/fs/cgroup").recursiveprot is None
    escaped = "1 0 0:1 / /my\\040root rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(escaped, "/my root").cgroup2


@given(st.text(max_size=300))
def test_mountinfo_never_raises(text) -> None:
    parse_mountinfo(text, "/sys/fs/cgroup")


def test_controllers_and_meminfo() -> None:
    assert memory_controller("cpuset cpu io memory hugetlb pids\n")
    assert not memory_controller("cpuset cpu io\n") and not memory_controller(None)
    assert parse_meminfo_total("MemTotal:       16333700 kB\nMemFree: 1 kB\n") == 16333700 * 1024
    assert parse_meminfo_total("garbage") is None and parse_meminfo_total(None) is None


def test_nri_config_is_read_like_the_plugin() -> None:
    config = parse_nri_config("UnifiedAnnotations: [memory.min, memory.high]\nclasses:\n- Name: bronze\n"
                              "  swaplimitratio: 0.5\n- name: gold\n")
    assert config == NriConfig(frozenset({"memory.min", "memory.high"}), frozenset({"bronze", "gold"}))
    assert parse_nri_config("") == NriConfig(frozenset(), frozenset())
    assert parse_nri_config("[1, 2]") is None and parse_nri_config("{") is None
    assert parse_nri_config("classes: 3").problems == ("classes is not a list",)


def test_offers_follow_the_plugin_config() -> None:
    full = NriConfig(frozenset({"memory.min", "memory.high"}), frozenset({"bronze"}))
    assert offered_classes(DEFAULT_CATALOG, full, True).value == "memory-qos=gold,silver,bronze"
    min_only = NriConfig(frozenset({"memory.min"}), frozenset())
    offer = offered_classes(DEFAULT_CATALOG, min_only, True)
    assert offer.value == "memory-qos=gold" and set(offer.refused) == {"silver", "bronze"}
    assert offered_classes(DEFAULT_CATALOG, full, False).value == "memory-qos=bronze"
    assert offered_classes(DEFAULT_CATALOG, NriConfig(frozenset(), frozenset()), True).value == ""
    assert offered_classes(DEFAULT_CATALOG, None, True, "memory-qos=gold").value == "memory-qos=gold"
    assert offered_classes(DEFAULT_CATALOG, None, True).value is None
    koord = load_catalog_yaml("backends: [koordinator]\nresources:\n- name: memory-qos\n  classes:\n"
                              "  - {name: gold, memoryMinPercent: 100}\n")
    assert offered_classes(koord, full, True).source == "none"


def test_budget() -> None:
    GiB = 2**30
    assert protectable_bytes(10 * GiB, 16 * GiB, 2 * GiB, GiB, True) == 10 * GiB
    assert protectable_bytes(15 * GiB, 16 * GiB, 2 * GiB, GiB, True) == 13 * GiB  # MemoryMin= outside counts
    assert protectable_bytes(None, 16 * GiB, 0, GiB, True) == 15 * GiB
    assert protectable_bytes(10 * GiB, 16 * GiB, 0, 0, False) == 0
    assert protectable_bytes(None, None, 0, 0, True) == 0
    assert protectable_bytes(10 * GiB, GiB, 4 * GiB, GiB, True) == 0
