"""Kubernetes resource quantities (apimachinery `resource.Quantity` grammar), as whole bytes.

    quantity ::= signedNumber suffix
    suffix   ::= binarySI (Ki Mi Gi Ti Pi Ei) | decimalSI (m "" k M G T P E) | ("e"|"E") signedNumber

Fractional byte counts round up, as kube does when it asks for an integer value (`100m` → 1).
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

from qosgate.core.errors import InvalidError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "m": Fraction(1, 1000), "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6),
    "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
}
# Exponent first so "1E3" is 1000 while a bare "1E" is one exa.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>\d+\.?\d*|\.\d+)"
    r"(?:(?P<exp>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]))?",
    re.ASCII,  # kube's grammar is ASCII digits only; without this `\d` also takes "١٢٣"
)
# Anything bigger cannot be a real byte count and must not make us compute 10**10**9.
MAX_BYTES = 2**63 - 1
_MAX_EXPONENT = 30
_MAX_LENGTH = 64


class _Problem(ValueError):
    """What is wrong with a quantity text; parse_quantity adds the field path."""


@functools.lru_cache(maxsize=4096)
def _text_bytes(text: str) -> int:
    """Whole bytes of a quantity text. Memoised: manifests repeat a handful of values ("1Gi", "512Mi")
    across thousands of pods, and exact rational arithmetic is the costly part of admission."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise _Problem(f"{text!r} is not a valid quantity (e.g. 128974848, 129e6, 129M, 123Mi)")
    amount = Fraction(match["number"])
    if match["exp"]:
        exponent = int(match["exp"][1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise _Problem(f"{text!r}: exponent out of range")
        amount *= Fraction(10) ** exponent
    else:
        suffix = match["suffix"] or ""
        amount *= _BINARY.get(suffix) or _DECIMAL[suffix]
    if match["sign"] == "-" and amount != 0:
        raise _Problem(f"{text!r} must not be negative")
    whole = -(-amount.numerator // amount.denominator)
    if whole > MAX_BYTES:
        raise _Problem(f"{text!r} is too large")
    return whole


def parse_quantity(value: object, path: str) -> int:
    """Parse a non-negative quantity into whole bytes (rounded up), naming `path` on error."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidError.single(path, f"must be a quantity string, got {type(value).__name__}")
    if isinstance(value, int):
        # Decide on the sign and size before any repr: an int beyond 4300 digits cannot be printed at all.
        if value < 0:
            raise InvalidError.single(path, "must not be negative")
        if value > MAX_BYTES:
            raise InvalidError.single(path, "is too large")
        return value
    text = repr(value) if isinstance(value, float) else value
    if len(text) > _MAX_LENGTH:
        raise InvalidError.single(path, f"quantity is longer than {_MAX_LENGTH} characters")
    try:
        return _text_bytes(text)
    except _Problem as exc:
        raise InvalidError.single(path, str(exc)) from None


_UNITS = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def format_bytes(count: int) -> str:
    """Human form for messages: exact binary suffix when possible, else one decimal ("6Gi", "1.5Gi")."""
    for unit, size in _UNITS:
        if count >= size:
            if count % size == 0:
                return f"{count // size}{unit}"
            return f"{count / size:.1f}{unit}"
    return str(count)
