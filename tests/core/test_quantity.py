from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosgate.core.errors import InvalidError
from qosgate.core.quantity import MAX_BYTES, format_bytes, parse_quantity

PATH = "spec.containers[0].resources.requests.memory"
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
FAST = settings(max_examples=150, deadline=None)


def rejected(value: object) -> InvalidError:
    with pytest.raises(InvalidError) as info:
        parse_quantity(value, PATH)
    return info.value


# --- accepted forms -------------------------------------------------------------------------------------


def test_plain_integer_string_is_bytes() -> None:
    assert parse_quantity("128974848", PATH) == 128974848


def test_zero_is_zero() -> None:
    assert parse_quantity("0", PATH) == 0


@pytest.mark.parametrize(("text", "expected"), [("129e6", 129_000_000), ("1E3", 1000), ("1e+3", 1000),
                                                ("1.5e3", 1500), ("12E0", 12)])
def test_decimal_exponent_multiplies_by_power_of_ten(text: str, expected: int) -> None:
    assert parse_quantity(text, PATH) == expected


def test_negative_exponent_rounds_the_fraction_up() -> None:
    assert parse_quantity("1e-3", PATH) == 1


def test_bare_capital_e_is_the_exa_suffix_not_an_exponent() -> None:
    assert parse_quantity("1E", PATH) == 10**18


@pytest.mark.parametrize(("suffix", "factor"), sorted(DECIMAL.items()))
def test_decimal_si_suffix_multiplies_by_power_of_ten(suffix: str, factor: int) -> None:
    assert parse_quantity(f"3{suffix}", PATH) == 3 * factor


def test_documented_decimal_example_129m_is_129_million() -> None:
    assert parse_quantity("129M", PATH) == 129_000_000


@pytest.mark.parametrize(("suffix", "factor"), sorted(BINARY.items()))
def test_binary_suffix_multiplies_by_power_of_two(suffix: str, factor: int) -> None:
    assert parse_quantity(f"3{suffix}", PATH) == 3 * factor


def test_documented_binary_example_123mi() -> None:
    assert parse_quantity("123Mi", PATH) == 123 * 2**20


def test_milli_suffix_rounds_a_fractional_byte_up_to_one() -> None:
    assert parse_quantity("100m", PATH) == 1


def test_milli_suffix_of_whole_bytes_is_exact() -> None:
    assert parse_quantity("3000m", PATH) == 3
    assert parse_quantity("3001m", PATH) == 4


@pytest.mark.parametrize(("text", "expected"), [("1.5Gi", 3 * 2**29), (".5Ki", 512), ("5.", 5), ("0.1", 1),
                                                ("1.0001", 2), ("2.5k", 2500)])
def test_fractional_number_is_scaled_then_rounded_up(text: str, expected: int) -> None:
    assert parse_quantity(text, PATH) == expected


def test_explicit_plus_sign_is_accepted() -> None:
    assert parse_quantity("+1k", PATH) == 1000


def test_json_integer_is_bytes() -> None:
    assert parse_quantity(1024, PATH) == 1024


def test_json_float_with_fraction_rounds_up() -> None:
    assert parse_quantity(1.5, PATH) == 2


def test_json_float_in_exponent_notation_is_exact() -> None:
    assert parse_quantity(1e9, PATH) == 10**9
    assert parse_quantity(1e16, PATH) == 10**16


def test_largest_representable_byte_count_is_accepted() -> None:
    assert parse_quantity(str(MAX_BYTES), PATH) == MAX_BYTES
    assert parse_quantity(MAX_BYTES, PATH) == MAX_BYTES
    assert parse_quantity("7Ei", PATH) == 7 * 2**60


# --- rejections -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "-1Gi", "-0.5", "-1e3", -5, -0.5])
def test_negative_quantity_is_rejected_naming_the_field(value: object) -> None:
    error = rejected(value)
    assert error.errors[0].path == PATH
    assert str(error).startswith(PATH + ":")
    assert "negative" in str(error)


@pytest.mark.parametrize("text", ["1Mb", "1K", "1gi", "1mi", "1KiB", "abc", "Gi", ".", "1.2.3", "1e", "1e3Ki",
                                  "1_000", "0x10", "1,5Gi", "--1", "+-1", "Infinity"])
def test_malformed_quantity_is_rejected_naming_the_field(text: str) -> None:
    error = rejected(text)
    assert error.errors[0].path == PATH
    assert repr(text) in str(error)


@pytest.mark.parametrize("text", [" 1Gi", "1Gi ", "1 Gi", "1Gi\n", "\t5", "1\u00a0Gi"])
def test_whitespace_anywhere_is_rejected(text: str) -> None:
    assert rejected(text).errors[0].path == PATH


def test_empty_string_is_rejected() -> None:
    assert rejected("").errors[0].path == PATH


def test_non_ascii_digits_are_rejected() -> None:
    rejected("\u0661\u0662\u0663")  # Arabic-Indic 123
    rejected("1\uff10Mi")  # fullwidth zero


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_quantities(value: bool) -> None:
    assert "bool" in str(rejected(value))


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, b"1Gi"])
def test_non_scalar_values_are_rejected_with_their_type(value: object) -> None:
    error = rejected(value)
    assert error.errors[0].path == PATH
    assert type(value).__name__ in str(error)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected(value: float) -> None:
    assert rejected(value).errors[0].path == PATH


@pytest.mark.parametrize("text", ["1e999999999", "1e-999999999", "1e31", "1E" + "9" * 60])
def test_absurd_exponent_is_rejected_before_any_power_is_computed(text: str) -> None:
    error = rejected(text)
    assert "exponent out of range" in str(error) or "longer than" in str(error)


def test_overlong_text_is_rejected_before_parsing() -> None:
    assert "longer than" in str(rejected("1" * 65))


@pytest.mark.parametrize("value", [str(MAX_BYTES + 1), "8Ei", "10E", "9" * 60 + "Ei", 2**63, 1e300, "1e30"])
def test_byte_counts_beyond_int64_are_too_large(value: object) -> None:
    error = rejected(value)
    assert "too large" in str(error) or "out of range" in str(error)


def test_huge_json_integer_is_rejected_without_printing_it() -> None:
    # More digits than Python will turn into a string: the message must not try.
    assert "too large" in str(rejected(10**5000))
    assert "negative" in str(rejected(-(10**5000)))


# --- format_bytes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "text"), [(0, "0"), (1023, "1023"), (1024, "1Ki"), (6 * 2**30, "6Gi"),
                                             (3 * 2**29, "1.5Gi"), (2**60, "1Ei")])
def test_format_bytes_uses_the_largest_fitting_binary_unit(count: int, text: str) -> None:
    assert format_bytes(count) == text


# --- properties -----------------------------------------------------------------------------------------


@FAST
@given(suffix=st.sampled_from(sorted(BINARY)), data=st.data())
def test_binary_suffix_round_trip_is_n_times_power_of_two(suffix: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=0, max_value=MAX_BYTES // BINARY[suffix]))
    assert parse_quantity(f"{n}{suffix}", PATH) == n * BINARY[suffix]


@FAST
@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_decimal_integer_string_parses_to_itself(n: int) -> None:
    assert parse_quantity(str(n), PATH) == n


@FAST
@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_json_integer_parses_to_itself(n: int) -> None:
    assert parse_quantity(n, PATH) == n


@FAST
@given(a=st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
       b=st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
       suffix=st.sampled_from(["m", "", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"]))
def test_parse_is_monotone_in_the_number(a, b, suffix: str) -> None:  # type: ignore[no-untyped-def]
    low, high = sorted((a, b))
    assert parse_quantity(f"{low:f}{suffix}", PATH) <= parse_quantity(f"{high:f}{suffix}", PATH)


# One decimal can round the last half-tenth of an exbibyte up past int64: stay below that, as any real node does.
REALISTIC = st.integers(min_value=0, max_value=4 * 2**60)


@FAST
@given(REALISTIC)
def test_format_bytes_output_is_always_a_valid_quantity(n: int) -> None:
    assert parse_quantity(format_bytes(n), PATH) >= 0


@FAST
@given(unit=st.sampled_from(sorted(BINARY)), data=st.data())
def test_format_bytes_of_a_whole_multiple_of_a_unit_parses_back_exactly(unit: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=min(1023, MAX_BYTES // BINARY[unit]))) * BINARY[unit]
    text = format_bytes(n)
    assert text.endswith(unit)
    assert parse_quantity(text, PATH) == n


@FAST
@given(REALISTIC)
def test_format_bytes_is_exact_without_a_decimal_point_and_within_a_twentieth_unit_with_one(n: int) -> None:
    text = format_bytes(n)
    parsed = parse_quantity(text, PATH)
    if "." not in text:
        assert parsed == n
    else:
        unit = BINARY[text[-2:]]
        assert abs(parsed - n) <= unit // 20 + 1
