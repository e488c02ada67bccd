"""argparse value types the commands share: a bad value is a one-line usage error naming it."""

from __future__ import annotations

import argparse
import math

from qosgate.core.errors import InvalidError
from qosgate.core.quantity import parse_quantity


def positive_seconds(value: str) -> float:
    """A finite number above zero ("nan" and "inf" parse as floats, but no deadline or interval can be either)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return number


def seconds(value: str) -> float:
    """A finite number of seconds, zero allowed (a delay that may be skipped); not "nan", not "inf"."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a number of seconds, 0 or more")
    return number


def port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def quantity(value: str) -> int:
    """A Kubernetes quantity in bytes ("1Gi", "129e6"), the error naming the accepted forms."""
    try:
        return parse_quantity(value, "")
    except InvalidError as exc:
        raise argparse.ArgumentTypeError(str(exc).lstrip(": ")) from None
