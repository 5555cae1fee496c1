"""The leak verdict: when does a series of post-GC bases mean "leak"?

node-memwatch reports a leak after five consecutive increases of the base.
On a real service that both cries wolf (start-up, a cache filling, five
lucky samples in a row of noise, forced GCs taken in quick succession) and
misses leaks (one sample that happens to be lower resets the count, so a
leak under a noisy workload never fires).

memwatch's rule looks at the *floor* of the series, never at single samples:

* The samples of the last ``d`` seconds (for a geometric range of window
  lengths ``d >= min_duration``) are cut into ``segments`` equal slices of
  time, and the floor (the lowest base) of each slice is taken.  Garbage not
  yet collected, a transient spike, a buffer that fills and is cleared: all of
  these raise samples *above* the floor, none of them raises the floor.
* A leak is declared when the floors rise from every slice to the next by a
  noise margin (``min_growth / (4 * segments)``), the floor of the last half
  of the last slice is above the last slice's floor too (so a cache that
  stopped filling no longer counts, at most half a slice after it stopped),
  no single one of these rises carries more than half of the total (a ramp,
  not a step: the first big spike raising the allocator's high-water mark is
  a step), the total rise is at least ``min_growth``, and there are at least
  ``min_samples`` samples.
* After a leak is reported the history starts afresh: the next report needs
  a whole new window of growth.

Why these defaults (``min_growth`` 4 MiB, ``min_duration`` 60 s, 4 slices):
a sustained leak of 100 KB/s reaches 4 MiB in 41 s, so it is reported as
soon as a 60 s window exists (about one minute); 10 KB/s reaches it in 410 s,
reported by the first window of at least that length (window lengths step by
a factor 1.25, so under 8.6 minutes).  A cache that fills during start-up in
less than ``min_duration`` can never be reported, whatever its size, and
neither can anything whose floor stops rising, however noisy.

Samples are kept in buckets of ``min_duration / (4 * segments)`` seconds
(their floor, sample count and time span); when more than ``max_buckets``
accumulate, neighbours are merged pairwise, so history and evaluation cost
stay bounded however long the process runs.
"""
from __future__ import annotations

__all__ = ["LeakDetector", "Verdict"]


class Verdict:
    """A window of growth that the detector judged to be a leak."""

    __slots__ = ("start", "end", "start_wall", "end_wall", "growth", "samples", "duration")

    def __init__(self, start: float, end: float, start_wall: float, end_wall: float,
                 growth: float, samples: int) -> None:
        self.start = start
        self.end = end
        self.start_wall = start_wall
        self.end_wall = end_wall
        self.growth = growth
        self.samples = samples
        self.duration = end - start

    def __repr__(self) -> str:
        return (f"<Verdict growth={self.growth:.0f} over {self.duration:.1f}s, "
                f"{self.samples} samples>")


class _Bucket:
    __slots__ = ("t0", "t1", "w0", "w1", "floor", "n")

    def __init__(self, t: float, wall: float, value: float) -> None:
        self.t0 = self.t1 = t
        self.w0 = self.w1 = wall
        self.floor = value
        self.n = 1

    def add(self, t: float, wall: float, value: float) -> None:
        self.t1 = t
        self.w1 = wall
        if value < self.floor:
            self.floor = value
        self.n += 1

    def merge(self, other: "_Bucket") -> None:
        self.t1 = other.t1
        self.w1 = other.w1
        if other.floor < self.floor:
            self.floor = other.floor
        self.n += other.n


class LeakDetector:
    """Feed ``add(t, value)`` with post-GC bases; it returns a :class:`Verdict` or None.

    ``t`` is a monotonic time in seconds; values are in the measure's unit.
    Pure computation, no clock and no I/O: the tests drive it with synthetic series.
    """

    def __init__(self, *, min_growth: float = 4 * 1024 * 1024, min_duration: float = 60.0,
                 min_samples: int = 5, segments: int = 4, window_ratio: float = 1.25,
                 max_buckets: int = 256) -> None:
        if min_growth <= 0:
            raise ValueError("min_growth must be positive")
        if min_duration <= 0:
            raise ValueError("min_duration must be positive")
        if segments < 2:
            raise ValueError("segments must be at least 2")
        if window_ratio <= 1.0:
            raise ValueError("window_ratio must be greater than 1")
        self.min_growth = float(min_growth)
        self.min_duration = float(min_duration)
        self.min_samples = max(2, int(min_samples))
        self.segments = int(segments)
        self.window_ratio = float(window_ratio)
        self.max_buckets = max(4 * self.segments, int(max_buckets))
        self.margin = self.min_growth / (4 * self.segments)
        self.max_step = max(0.5, 1.5 / self.segments)
        self._width = self.min_duration / (4 * self.segments)
        self._buckets: list[_Bucket] = []
        self._last_eval = float("-inf")

    # -- feeding -----------------------------------------------------------------

    def add(self, t: float, value: float, wall: float | None = None) -> Verdict | None:
        """Record one sample; return a verdict when this sample completes a leak window."""
        wall = t if wall is None else wall
        buckets = self._buckets
        if buckets and t - buckets[-1].t0 < self._width:
            buckets[-1].add(t, wall, value)
        else:
            buckets.append(_Bucket(t, wall, value))
            if len(buckets) > self.max_buckets:
                self._thin()
        # Evaluating costs O(buckets * windows): do it at most a few times per bucket.
        if t - self._last_eval < self._width / 4:
            return None
        self._last_eval = t
        verdict = self.evaluate()
        if verdict is not None:
            self.reset(keep_last=True)
        return verdict

    def reset(self, keep_last: bool = False) -> None:
        """Forget the history (after a report, so the next needs a new window)."""
        last = self._buckets[-1] if keep_last and self._buckets else None
        self._buckets = []
        if last is not None:
            fresh = _Bucket(last.t1, last.w1, last.floor)
            self._buckets.append(fresh)

    def _thin(self) -> None:
        merged = []
        buckets = self._buckets
        for i in range(0, len(buckets) - 1, 2):
            a = buckets[i]
            a.merge(buckets[i + 1])
            merged.append(a)
        if len(buckets) % 2:
            merged.append(buckets[-1])
        self._buckets = merged
        self._width *= 2

    @property
    def span(self) -> float:
        """Seconds of history currently held."""
        return self._buckets[-1].t1 - self._buckets[0].t0 if self._buckets else 0.0

    # -- judging -----------------------------------------------------------------

    def evaluate(self) -> Verdict | None:
        """The longest window ending now that qualifies as a leak, or None."""
        buckets = self._buckets
        if len(buckets) < 2:
            return None
        end = buckets[-1].t1
        span = end - buckets[0].t0
        if span < self.min_duration:
            return None
        best = None
        d = self.min_duration
        lengths = []
        while d < span:
            lengths.append(d)
            d *= self.window_ratio
        lengths.append(span)
        # Start index for each length: first bucket starting at or after end - d.
        for d in lengths:
            lo = end - d
            i = _first_at_or_after(buckets, lo)
            if i >= len(buckets) - 1 or end - buckets[i].t0 < self.min_duration * 0.999:
                continue
            verdict = self._judge(i)
            if verdict is not None:
                best = verdict  # lengths ascend: keep the longest
        return best

    def _judge(self, i: int) -> Verdict | None:
        buckets = self._buckets
        window = buckets[i:]
        t0 = window[0].t0
        t1 = window[-1].t1
        dur = t1 - t0
        if dur <= 0:
            return None
        if sum(b.n for b in window) < self.min_samples:
            return None
        nseg = self.segments
        floors: list[float | None] = [None] * nseg
        tail: float | None = None
        seg_len = dur / nseg
        tail_start = t0 + (nseg - 0.5) * seg_len
        for b in window:
            k = min(nseg - 1, int((b.t0 - t0) / seg_len))
            f = floors[k]
            if f is None or b.floor < f:
                floors[k] = b.floor
            if b.t0 >= tail_start and (tail is None or b.floor < tail):
                tail = b.floor
        if tail is None or any(f is None for f in floors):
            return None
        margin = self.margin
        rises = [floors[k + 1] - floors[k] for k in range(nseg - 1)]  # type: ignore[operator]
        tail_rise = tail - floors[-1]  # type: ignore[operator]
        if min(rises) < margin or tail_rise < margin / 2:
            return None
        growth = tail - floors[0]  # type: ignore[operator]
        if growth < self.min_growth:
            return None
        # A ramp, not a step: no single rise may carry most of the growth.  A
        # leak grows about as much in every slice; a one-off step (the first
        # large spike raising the allocator's high-water mark, a cache filled
        # in one go) plus a little creep does not.
        if max(max(rises), tail_rise) > self.max_step * growth:
            return None
        return Verdict(t0, t1, window[0].w0, window[-1].w1, growth,
                       sum(b.n for b in window))


def _first_at_or_after(buckets: list[_Bucket], t: float) -> int:
    lo, hi = 0, len(buckets)
    while lo < hi:
        mid = (lo + hi) // 2
        if buckets[mid].t0 < t:
            lo = mid + 1
        else:
            hi = mid
    return lo
