"""A buffer that grows ~1 MB/s for 10 s, is flushed, and grows again: a sawtooth."""
from _harness import Run, churn


def main():
    run = Run("ok_sawtooth", leaking=False, duration=600)
    buffer = []
    last_flush = run.now()
    while run.running():
        buffer.extend({"row": i, "text": "x" * 100} for i in range(1000))
        if run.now() - last_flush >= 10:
            buffer.clear()
            last_flush = run.now()
        churn(200)
        run.sleep(0.25)
    run.finish()


if __name__ == "__main__":
    main()
