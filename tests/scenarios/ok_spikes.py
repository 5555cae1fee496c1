"""Large transient spikes: every 15 s, ~50 MB of objects live for 2 s, then freed."""
from _harness import Run, churn


def main():
    run = Run("ok_spikes", leaking=False, duration=600)
    next_spike = 10.0
    while run.running():
        if run.now() >= next_spike:
            spike = [("x" * 400, i) for i in range(100_000)]     # ~50 MB  # noqa: F841
            run.sleep(2)
            del spike
            next_spike = run.now() + 13
        churn(200)
        run.sleep(0.25)
    run.finish()


if __name__ == "__main__":
    main()
