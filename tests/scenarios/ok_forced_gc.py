"""A program that forces memwatch.gc() every half second (and takes HeapDiffs in a listener)."""
import memwatch

from _harness import Run, churn


def main():
    run = Run("ok_forced_gc", leaking=False, duration=600)
    diffs = []

    @memwatch.on("stats")
    def diff_now_and_then(stats):
        if stats["num_full_gc"] % 50 == 0:
            hd = memwatch.HeapDiff()
            diffs.append(hd.end()["change"]["size_bytes"])
            del diffs[:-3]

    samples = 0
    while run.running():
        churn(300)
        memwatch.gc()
        samples += 1
        run.sleep(0.5)
    run.finish(forced=samples)


if __name__ == "__main__":
    main()
