"""The value types every command shares: a bad value is a usage error naming it, never a crash later."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosgate.cli.argtypes import port, positive_seconds, quantity, seconds


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "", "ten", "1e999"])
def test_seconds_that_no_deadline_can_be_are_refused(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="number"):
        positive_seconds(value)


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_any_finite_positive_number_of_seconds_is_taken_as_written(number: float) -> None:
    assert positive_seconds(repr(number)) == number


@pytest.mark.parametrize("value", ["-1", "65536", "8a", "", " 80", "0x50"])
def test_ports_outside_0_to_65535_or_not_decimal_are_refused(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="port number"):
        port(value)


@pytest.mark.parametrize("value, expected", [("0", 0), ("8443", 8443), ("65535", 65535)])
def test_ports_are_read_as_decimal(value: str, expected: int) -> None:
    assert port(value) == expected


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "", "ten", "1e999"])
def test_delays_that_no_clock_can_wait_are_refused(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="number"):
        seconds(value)


def test_a_zero_delay_is_taken() -> None:
    assert seconds("0") == 0.0


def test_serve_refuses_a_nan_shutdown_delay_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from qosgate.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "webhook", "--local", "--shutdown-delay", "nan"])
    assert exit_.value.code == 2
    assert "--shutdown-delay: 'nan' must be a number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [("1Gi", 2**30), ("129e6", 129_000_000), ("0", 0)])
def test_quantities_are_read_in_bytes(value: str, expected: int) -> None:
    assert quantity(value) == expected


def test_a_bad_quantity_names_the_accepted_forms() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'12x' is not a valid quantity \(e\.g\. "):
        quantity("12x")
