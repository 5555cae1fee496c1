"""An asyncio service whose request handlers leak ~100 KB/s of response objects."""
import asyncio

from _harness import Run, churn, unit_size


class Response:
    def __init__(self, n):
        self.n = n
        self.body = {"items": list(range(10)), "id": n}


async def handler(n, cache):
    await asyncio.sleep(0)
    churn(20)
    cache.append(Response(n))      # the leak: every response is kept


async def serve(run):
    cache = []
    n = 0
    unit = unit_size(lambda: Response(0))
    leak_t0 = None
    while run.running():
        if run.now() >= 30:
            run.mark_leak_start()
            leak_t0 = leak_t0 if leak_t0 is not None else run.now()
            due = int((run.now() - leak_t0) * 100 * 1024 / unit)
            # At most 300 requests in flight: on a loaded machine the loop falls
            # behind, and one huge gather would make its thousands of pending
            # coroutines the "top types" of whatever census runs meanwhile.
            due = min(due, n + 300)
            batch = [handler(i, cache) for i in range(n, due)]
            n = max(n, due)
            await asyncio.gather(*batch)
        else:
            churn(200)
        await asyncio.sleep(0.25 * run.scale)


def main():
    run = Run("leak_asyncio", leaking=True, duration=480)
    asyncio.run(serve(run))
    run.finish(expect_type="__main__.Response")


if __name__ == "__main__":
    main()
