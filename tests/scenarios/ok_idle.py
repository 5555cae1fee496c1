"""An idle process: nothing allocates, only the tracker's timer samples."""
from _harness import Run


def main():
    run = Run("ok_idle", leaking=False, duration=600)
    while run.running():
        run.sleep(1)
    run.finish()


if __name__ == "__main__":
    main()
