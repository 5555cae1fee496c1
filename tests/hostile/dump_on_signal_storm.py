"""Point 4: signals during a dump_on_signal dump started a dump inside it
(10 signals gave 10 nested dumps).  One at a time, plus at most one more."""
import os
import signal
import sys
import tempfile
import threading
import time

if not hasattr(signal, "SIGUSR2"):
    print("SKIP: no SIGUSR2 here")
    sys.exit(0)

import memwatch
from memwatch import dumps

heap = [{"i": i, "s": str(i)} for i in range(60_000)]   # a dump takes a while
directory = tempfile.mkdtemp()
depth = 0
max_depth = 0
calls = 0
real_write_dump = dumps.write_dump


def counting_write_dump(*args, **kwargs):
    global depth, max_depth, calls
    depth += 1
    calls += 1
    max_depth = max(max_depth, depth)
    try:
        return real_write_dump(*args, **kwargs)
    finally:
        depth -= 1


dumps.write_dump = counting_write_dump
written = []
restore = memwatch.dump_on_signal(signal.SIGUSR2, directory, callback=written.append)


def storm(n, gap):
    for _ in range(n):
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(gap)


t = threading.Thread(target=storm, args=(10, 0.05))
t.start()
deadline = time.monotonic() + 60
while t.is_alive() or (time.monotonic() < deadline and depth):
    sum(range(1000))        # bytecodes: the handler runs here
t.join()
time.sleep(0.2)
for _ in range(1000):
    sum(range(100))
restore()
assert max_depth == 1, f"nested dumps: depth {max_depth}"
assert 1 <= calls, calls
assert calls == len(written) == len(os.listdir(directory)), (calls, written)
# A storm during one dump asks for one more dump, not one per signal: with
# 10 signals over 0.5 s and dumps far slower than 50 ms each, fewer dumps
# than signals.  (Bounded by the count of signals either way.)
assert calls <= 10, calls
# The handler is still usable after a storm.
before = len(written)
restore = memwatch.dump_on_signal(signal.SIGUSR2, directory, callback=written.append)
os.kill(os.getpid(), signal.SIGUSR2)
for _ in range(1000):
    sum(range(100))
restore()
assert len(written) == before + 1, (before, len(written))
print(f"dumps={calls}", "ok")
