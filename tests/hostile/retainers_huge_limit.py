"""Point 1: retainers(limit=huge) wrapped (limit + 1) * 4 and overflowed the heap."""
import sys

import memwatch


class Few:
    pass


keep = [Few() for _ in range(3)]
for limit in (2 ** 31, 2 ** 40, 2 ** 62, sys.maxsize, 2 ** 64 + 1):
    assert len(memwatch.retainers(Few, limit=limit)) == 3, limit
    assert len(memwatch.retainers(keep[0], limit=limit)) >= 1, limit
for bad in (0, -1, -sys.maxsize, 1.5, "5", None, True):
    try:
        memwatch.retainers(Few, limit=bad)
    except ValueError as e:
        assert "limit" in str(e), e
    else:
        raise AssertionError(f"limit={bad!r} accepted")
census = memwatch.census()
for bad in (-1, 2.5, "3"):
    for call in (census.top, census.format, lambda limit: census.to_dict(limit=limit)):
        try:
            call(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"census limit={bad!r} accepted")
print("ok")
