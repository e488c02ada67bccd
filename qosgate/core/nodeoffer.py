"""The node side of KEP-3008 (`QOSResourceStatus`) carried in the node annotation `qosgate.io/qos-classes`.

Grammar (whitespace around every token is ignored):

    offer    ::= resource (";" resource)*          an empty value offers nothing
    resource ::= name "=" class ("," class)*
    class    ::= className [":" capacity]          capacity: decimal integer ≥ 0; 0 or absent = unlimited

    qosgate.io/qos-classes: "memory-qos=gold:10,silver;example.com/blockio=throttled"
    → {"memory-qos": {"gold": 10, "silver": 0}, "example.com/blockio": {"throttled": 0}}

A node *without* the annotation offers every class without limit; that distinction lives in the caller
(`NodeRecord.offered_classes is None`), because an empty string here deliberately means "offers nothing".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from qosgate.core.errors import FieldError, InvalidError
from qosgate.core.qosresources import class_name_problem, qualified_name_problem

# Capacities are counts of pods or containers; anything beyond this is a typo, not a real node.
MAX_CAPACITY = 10**9
_CAPACITY = re.compile(r"\d{1,10}")

UNLIMITED = 0


def parse_node_offer(value: str, path: str) -> dict[str, dict[str, int]]:
    """Parse the annotation value into {resource: {class: capacity}}; every problem is reported at once."""
    if not isinstance(value, str):
        raise InvalidError.single(path, "must be a string such as memory-qos=gold:10,silver")
    offer: dict[str, dict[str, int]] = {}
    if not value.strip():
        return offer
    errors: list[FieldError] = []
    for part in value.split(";"):
        part = part.strip()
        if not part:
            # A trailing ";" is a harmless editing artefact; an empty middle segment is just as harmless.
            continue
        name, eq, class_list = (s.strip() for s in part.partition("="))
        if not eq:
            errors.append(FieldError(path, f"{part!r} is not of the form resource=class[:capacity],..."))
            continue
        problem = qualified_name_problem(name)
        if problem:
            errors.append(FieldError(path, problem))
            continue
        if name in offer:
            errors.append(FieldError(path, f"resource {name!r} appears more than once"))
            continue
        classes: dict[str, int] = {}
        for entry in class_list.split(","):
            klass, colon, capacity_text = (s.strip() for s in entry.partition(":"))
            problem = class_name_problem(klass)
            if problem:
                errors.append(FieldError(path, f"resource {name!r}: {problem}"))
                continue
            if klass in classes:
                errors.append(FieldError(path, f"resource {name!r}: class {klass!r} appears more than once"))
                continue
            capacity = UNLIMITED
            if colon:
                if not _CAPACITY.fullmatch(capacity_text) or int(capacity_text) > MAX_CAPACITY:
                    errors.append(FieldError(
                        path, f"resource {name!r} class {klass!r}: capacity {capacity_text!r} must be an "
                              f"integer between 0 and {MAX_CAPACITY} (0 = unlimited)"))
                    continue
                capacity = int(capacity_text)
            classes[klass] = capacity
        offer[name] = classes
    if errors:
        raise InvalidError(errors)
    return offer


def format_node_offer(offer: Mapping[str, Mapping[str, int]]) -> str:
    """Inverse of parse_node_offer; unlimited classes are written without a capacity, as people write them.

    A resource with no classes cannot be expressed (the grammar needs at least one class) and is rejected
    rather than silently dropped, so a round trip never changes meaning.
    """
    parts = []
    for name, classes in offer.items():
        if not classes:
            raise ValueError(f"resource {name!r} offers no class; omit it instead")
        entries = [klass if capacity == UNLIMITED else f"{klass}:{capacity}"
                   for klass, capacity in classes.items()]
        parts.append(f"{name}={','.join(entries)}")
    return ";".join(parts)
