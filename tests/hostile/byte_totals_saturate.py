"""Point 6: five __sizeof__ of 2**62 wrapped the uint64 totals; absurd sizes
are sizeof errors, and no total ever wraps."""
import sys

import memwatch


class Huge:
    def __sizeof__(self):
        return 2 ** 62


class Big:
    def __sizeof__(self):
        return 2 ** 47 - 64      # large, but a possible size: counted as is


base = memwatch.census()
hs = [Huge() for _ in range(5)]
c = memwatch.census()
assert c.sizeof_errors >= base.sizeof_errors + 5, (c.sizeof_errors, base.sizeof_errors)
assert 0 < c.total_size < 2 ** 40, c.total_size
assert 0 < c.size("__main__.Huge") < 2 ** 20, c.size("__main__.Huge")   # basic sizes
big = [Big() for _ in range(3)]
c = memwatch.census()
expected = 3 * sys.getsizeof(big[0])
assert c.size("__main__.Big") == expected, (c.size("__main__.Big"), expected)
assert c.total_size > expected and c.total_size < 2 ** 64
print("ok")
