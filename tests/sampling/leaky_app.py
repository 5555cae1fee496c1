"""A program that leaks at one known line; run under memwatch run --sample."""
import gc
import time

CACHE = []


def steady():
    junk = [{"k": i} for i in range(2000)]
    del junk


def handle_request(n):
    CACHE.append(bytearray(20_000))   # THE LEAK


start = time.monotonic()
n = 0
while time.monotonic() - start < 6.0:
    steady()
    for _ in range(20):
        handle_request(n)
        n += 1
    gc.collect()
    time.sleep(0.02)
