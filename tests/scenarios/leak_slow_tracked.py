"""Leak ~10 KB/s of closures: event handlers registered and never removed (node's classic)."""
from _harness import Pacer, Run, churn

handlers = []


def subscribe(n):
    state = {"request": n, "headers": {"x-id": str(n)}}

    def on_done(result):
        return state, result
    return on_done


def main():
    run = Run("leak_slow_tracked", leaking=True, duration=1200)
    counter = iter(range(10**9))
    while run.running() and run.now() < 30:
        churn(200)
        run.sleep(0.5)
    run.mark_leak_start()
    pacer = Pacer(run, 10 * 1024, lambda: subscribe(next(counter)), handlers.append)
    while run.running():
        churn(200)
        pacer.step()
        run.sleep(0.5)
    run.finish(expect_type="dict", unit=pacer.unit)


if __name__ == "__main__":
    main()
