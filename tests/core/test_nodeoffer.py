from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosgate.core.errors import InvalidError
from qosgate.core.nodeoffer import MAX_CAPACITY, format_node_offer, parse_node_offer

PATH = "metadata.annotations[qosgate.io/qos-classes]"


def test_parses_the_documented_example() -> None:
    offer = parse_node_offer("memory-qos=gold:10,silver;example.com/blockio=throttled", PATH)
    assert offer == {"memory-qos": {"gold": 10, "silver": 0}, "example.com/blockio": {"throttled": 0}}


def test_whitespace_and_trailing_separator_are_tolerated() -> None:
    offer = parse_node_offer("  memory-qos = gold : 3 , silver:0 ; ", PATH)
    assert offer == {"memory-qos": {"gold": 3, "silver": 0}}


def test_empty_value_offers_nothing() -> None:
    assert parse_node_offer("", PATH) == {}
    assert parse_node_offer("   ", PATH) == {}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("memory-qos", "not of the form"),
        ("memory-qos=", "non-empty"),
        ("memory-qos=gold:x", "capacity 'x'"),
        ("memory-qos=gold:-1", "capacity '-1'"),
        (f"memory-qos=gold:{MAX_CAPACITY + 1}", "capacity"),
        ("memory-qos=gold,gold", "more than once"),
        ("memory-qos=gold;memory-qos=silver", "more than once"),
        ("Bad_Prefix/x=gold", "prefix"),
        ("memory-qos=-gold", "class '-gold'"),
    ],
)
def test_rejects_malformed_values_naming_the_path(value: str, fragment: str) -> None:
    with pytest.raises(InvalidError) as info:
        parse_node_offer(value, PATH)
    assert all(e.path == PATH for e in info.value.errors)
    assert fragment in str(info.value)


def test_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidError) as info:
        parse_node_offer("a=gold:x;b=;c", PATH)
    assert len(info.value.errors) == 3


def test_rejects_non_string() -> None:
    with pytest.raises(InvalidError):
        parse_node_offer(42, PATH)  # type: ignore[arg-type]


def test_format_refuses_a_resource_without_classes() -> None:
    with pytest.raises(ValueError, match="offers no class"):
        format_node_offer({"memory-qos": {}})


_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
_name_part = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?", fullmatch=True)
_prefix = st.one_of(st.none(), st.lists(_label, min_size=1, max_size=3).map(".".join))
_resource = st.builds(lambda prefix, local: f"{prefix}/{local}" if prefix else local, _prefix, _name_part)
_classes = st.dictionaries(_name_part, st.integers(0, MAX_CAPACITY), min_size=1, max_size=4)
_offers = st.dictionaries(_resource, _classes, max_size=4)


@given(_offers)
def test_round_trip(offer: dict[str, dict[str, int]]) -> None:
    text = format_node_offer(offer)
    assert parse_node_offer(text, PATH) == offer
    # Formatting is canonical: parsing and formatting again changes nothing.
    assert format_node_offer(parse_node_offer(text, PATH)) == text
