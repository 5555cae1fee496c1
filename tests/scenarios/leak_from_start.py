"""Leak ~100 KB/s from the first second (the process's start-up is the leak's start):
the target is a report within 90 s of process start, whatever the warm-up."""
from _harness import Pacer, Run, churn


class Order:
    def __init__(self, n):
        self.lines = [{"sku": n, "qty": 1}, {"sku": n + 1, "qty": 2}]
        self.note = f"order {n}"


def main():
    run = Run("leak_from_start", leaking=True, duration=240)
    orders = []
    counter = iter(range(10**9))
    run.mark_leak_start()
    pacer = Pacer(run, 100 * 1024, lambda: Order(next(counter)), orders.append)
    while run.running():
        churn(300)
        pacer.step()
        run.sleep(0.25)
    run.finish(expect_type="__main__.Order", unit=pacer.unit)


if __name__ == "__main__":
    main()
