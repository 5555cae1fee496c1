"""A big long-lived heap (--heap objects, default 500k dicts, ~170 MB) leaking ~100 KB/s of
untracked ``bytes`` after 30 s: the leak itself never triggers a collection (the scenario
allocates no tracked object), so only the clock samples can see it."""

from _harness import Pacer, Run, heap_arg, heap_facts, long_lived_heap


def main():
    heap = long_lived_heap(*heap_arg())
    run = Run("leak_bigheap_untracked", leaking=True, duration=300)
    kept = []
    counter = iter(range(10**9))
    while run.running() and run.now() < 30:
        run.sleep(0.25)
    run.mark_leak_start()
    pacer = Pacer(run, 100 * 1024, lambda: b"%d" % next(counter) * 200, kept.append)
    while run.running():
        pacer.step()
        run.sleep(0.25)
    run.finish(expect_type="bytes", unit=pacer.unit, **heap_facts(heap))


if __name__ == "__main__":
    main()
