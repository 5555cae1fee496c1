import pytest

from memwatch.formatting import format_duration, format_rate, format_size


@pytest.mark.parametrize("value, text", [
    (0, "0 bytes"),
    (1, "1 bytes"),
    (1023, "1023 bytes"),
    (1024, "1024 bytes"),          # node prints a unit only above its size
    (1025, "1 kb"),
    (1536, "1.5 kb"),
    (-2120, "-2.07 kb"),
    (249232, "243.39 kb"),
    (1869904, "1.78 mb"),
    (2119136, "2.02 mb"),
    (66688, "65.13 kb"),           # exactly 65.125: rounds half up, as node does
    (-66688, "-65.13 kb"),
    (239952, "234.33 kb"),
    (3 * 1024**3, "3 gb"),
    (5 * 1024**4, "5120 gb"),      # no larger unit, and no 32-bit overflow
    (2**31 + 10 * 1024**2, "2.01 gb"),
    (-(2**33), "-8 gb"),
])
def test_format_size_matches_node_memwatch(value, text):
    assert format_size(value) == text


def test_format_size_accepts_floats():
    assert format_size(1536.0) == "1.5 kb"
    assert format_size(10.256) == "10.26 bytes"


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (20, "20s"), (59.6, "1m 0s"), (61, "1m 1s"), (3600, "1h 0m 0s"),
    (3723, "1h 2m 3s"), (-5, "0s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_rate_never_divides_by_zero():
    assert format_rate(67984, 20) == "11.67 mb/hr"
    assert format_rate(1000, 0) == "0 bytes/hr"
    assert format_rate(1000, -1) == "0 bytes/hr"
