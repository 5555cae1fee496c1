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


# ---------------------------------------------------------------------------
# Pretty-printers (issue 12)

from memwatch.formatting import format_comparison, format_heapdiff, shorten_name  # noqa: E402


@pytest.mark.parametrize("name,width,expected", [
    ("dict", 10, "dict"),
    ("myapp.services.sessions.store.Session", 38, "myapp.services.sessions.store.Session"),
    ("myapp.services.sessions.store.Session", 30, "myapp.services...Session"),
    ("myapp.services.sessions.store.Session", 16, "myapp...Session"),
    ("averyveryverylongpackage.Session", 16, "averyv...Session"),
    ("pkg.AnExtremelyLongClassNameIndeed", 12, "pkg.AnExt..."),
    ("abcdef", 3, "abc"),
])
def test_shorten_name_keeps_package_and_class(name, width, expected):
    out = shorten_name(name, width)
    assert out == expected and len(out) <= width


def test_shorten_name_rejects_a_width_below_one():
    with pytest.raises(ValueError, match="width"):
        shorten_name("x", 0)


def test_census_format_width_keeps_the_module():
    from memwatch.typestats import Census
    import memwatch
    c = memwatch.census()
    text = c.format(limit=5, width=20)
    assert all(len(line.split(" ")[0]) <= 20 for line in text.splitlines())
    assert Census.format.__doc__ and "width" in Census.format.__doc__


def _diff(details, total=None):
    change = {"size": "1 kb", "allocated_nodes": 3, "freed_nodes": 1, "details": details}
    if total is not None:
        change["details_total"] = total
    return {"before": {"nodes": 10, "size": "1 kb"}, "after": {"nodes": 12, "size": "2 kb"},
            "change": change}


def test_format_heapdiff_rows_and_cut_answers():
    rows = [{"what": "myapp.services.sessions.store.VeryLongSessionClassName", "size": "1 kb",
             "+": 3, "-": 1}, {"what": "dict", "size": "24 bytes", "+": 1, "-": 0}]
    text = format_heapdiff(_diff(rows), width=30)
    assert "mya...VeryLongSessionClassName" in text and "\ndict " in text
    # an HTTP answer cut by ?top=2 of 9 rows says 7 more
    assert format_heapdiff(_diff(rows, total=9)).endswith("... 7 more types")
    assert format_heapdiff(_diff(rows), limit=1).endswith("... 1 more types")


def test_format_comparison_of_two_censuses():
    import memwatch

    class Grown:
        pass
    old = memwatch.census()
    kept = [Grown() for _ in range(1000)]
    new = memwatch.census()
    text = format_comparison(new.compare_to(old), limit=5)
    line = next(ln for ln in text.splitlines() if "Grown" in ln)
    assert "+1000" in line.split() or any(tok.startswith("+10") for tok in line.split())
    assert text.splitlines()[0].split()[:2] == ["type", "objects"]
    assert format_comparison([]).endswith("(no change)")
    assert memwatch.format_comparison is format_comparison
    del kept
