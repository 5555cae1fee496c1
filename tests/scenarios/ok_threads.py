"""Eight threads of churn, each with a bounded per-thread cache: multi-threaded, no leak."""
import threading
from collections import deque

from _harness import Run, churn


def main():
    run = Run("ok_threads", leaking=False, duration=600)

    def worker(k):
        recent = deque(maxlen=2000)
        n = 0
        while run.running():
            churn(150)
            for _ in range(200):
                recent.append({"k": k, "n": n, "s": str(n) * 3})
                n += 1
            run.sleep(0.25)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.finish()


if __name__ == "__main__":
    main()
