"""Four worker threads leak 25 KB/s each (100 KB/s in all) while the main thread waits in join()."""
import threading

from _harness import Pacer, Run, churn, unit_size


class Job:
    def __init__(self, n):
        self.n = n
        self.payload = {"id": n, "data": [n] * 8}


def main():
    run = Run("leak_threads", leaking=True, duration=240)
    results = {}
    lock = threading.Lock()
    unit = unit_size(lambda: Job(0))     # measured before the threads allocate

    def worker(k):
        counter = iter(range(10**9))
        pacer = None
        while run.running():
            churn(200)
            if run.now() >= 30:
                run.mark_leak_start()
                if pacer is None:
                    def keep(job, k=k):
                        with lock:
                            results[(k, job.n)] = job
                    pacer = Pacer(run, 25 * 1024, lambda: Job(next(counter)), keep, unit=unit)
                pacer.step()
            run.sleep(0.25)

    threads = [threading.Thread(target=worker, args=(k,), name=f"worker-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.finish(expect_type="__main__.Job")


if __name__ == "__main__":
    main()
