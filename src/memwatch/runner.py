"""``memwatch run script.py [args]``: run a program under the tracker.

Prints every ``stats`` and ``leak`` event to stderr as it happens (the
program's stdout stays its own), optionally writes them as JSON lines
(``--jsonl FILE``, one object a line with an ``"event"`` key; the input of
``memwatch report``) and serves the HTTP API while the program runs
(``--serve PORT``).

The event handlers only append the payload to a queue: printing and writing
happen in a background thread, never inside the garbage collector, so a
collection that fires while the program itself is writing to stderr cannot
re-enter the stream.
"""
from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import runpy
import sys
import threading
import traceback
from typing import IO, Any

from memwatch.formatting import format_duration, format_size

__all__ = ["add_parser", "EventLog", "add_arguments", "main", "format_stats", "format_leak"]

HELP = "run a Python program under memwatch's tracker, printing stats and leak events"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return f"<{type(obj).__name__}>"


def format_stats(s: dict) -> str:
    parts = [f"stats #{s.get('num_full_gc', '?')}",
             f"current_base {format_size(s.get('current_base', 0))}",
             f"estimated_base {format_size(s.get('estimated_base', 0))}"]
    if s.get("usage_trend") is not None:
        parts.append(f"trend {s['usage_trend']:+.1f}%" if isinstance(s["usage_trend"], (int, float))
                     else f"trend {s['usage_trend']}")
    if s.get("rss"):
        parts.append(f"rss {format_size(s['rss'])}")
    if s.get("pause") is not None:
        parts.append(f"pause {s['pause'] * 1000:.1f} ms")
    if s.get("collected") is not None:
        parts.append(f"collected {s['collected']}")
    return "memwatch: " + ", ".join(parts)


def format_leak(info: dict) -> str:
    line = f"memwatch: LEAK {info.get('reason', '')}; growth {format_size(info.get('growth', 0))}"
    top = info.get("top_types") or []
    if top:
        shown = ", ".join(f"{t.get('what')} {t.get('count_change', 0):+d} "
                          f"({format_size(t.get('size_change', 0))})" for t in top[:5])
        line += f"; top: {shown}"
        holders = [f"{t.get('what')} held by {t['holder']}" for t in top if t.get("holder")]
        if holders:
            line += "; " + "; ".join(holders)
    if info.get("kind"):
        line += f" [{info['kind']} samples]"
    sites = info.get("top_sites") or []   # memwatch run --sample (issue 11)
    if sites:
        shown = ", ".join(f"{s.get('where')} {s.get('function')} (+{format_size(s.get('size_change', 0))})"
                          for s in sites[:3])
        line += f"; allocated at: {shown}"
    return line


class EventLog:
    """Collects events from the tracker and writes them from a background thread.

    ``stats``/``leak`` handlers only append to a bounded deque (safe inside the
    GC); :meth:`flush` (called by the thread every ``interval`` seconds and by
    :meth:`close`) prints them and writes JSON lines."""

    def __init__(self, *, out: IO[str] | None = None, jsonl: IO[str] | None = None,
                 print_stats: bool = True, interval: float = 0.2, maxlen: int = 100_000) -> None:
        self.out = out
        self.jsonl = jsonl
        self.print_stats = print_stats
        self.interval = interval
        self._queue: collections.deque = collections.deque(maxlen=maxlen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self.counts = {"stats": 0, "leak": 0}

    # handlers: run wherever the tracker calls them
    def on_stats(self, stats: dict) -> None:
        self._queue.append(("stats", stats))

    def on_leak(self, info: dict) -> None:
        self._queue.append(("leak", info))

    def record(self, event: str, payload: dict) -> None:
        self._queue.append((event, payload))

    def flush(self) -> None:
        with self._flush_lock:
            while True:
                try:
                    event, payload = self._queue.popleft()
                except IndexError:
                    break
                if event in self.counts:
                    self.counts[event] += 1
                if self.out is not None:
                    if event == "stats" and self.print_stats:
                        print(format_stats(payload), file=self.out)
                    elif event == "leak":
                        print(format_leak(payload), file=self.out)
                if self.jsonl is not None:
                    self.jsonl.write(json.dumps({"event": event, **payload}, default=_json_default,
                                                separators=(",", ":")) + "\n")
            for stream in (self.out, self.jsonl):
                if stream is not None:
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def start(self) -> "EventLog":
        import memwatch
        memwatch.on("stats", self.on_stats)
        memwatch.on("leak", self.on_leak)
        self._thread = threading.Thread(target=self._loop, name="memwatch-eventlog", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        import memwatch
        try:
            memwatch.off("stats", self.on_stats)
            memwatch.off("leak", self.on_leak)
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jsonl", metavar="FILE",
                        help="also write every event as a JSON line to FILE (input of 'memwatch report')")
    parser.add_argument("--serve", metavar="PORT", type=int,
                        help="serve the HTTP API on PORT while the program runs (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address for --serve (default 127.0.0.1)")
    parser.add_argument("--token", default=os.environ.get("MEMWATCH_TOKEN"),
                        help="bearer token the HTTP API requires (default: $MEMWATCH_TOKEN)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only leak events (stats still go to --jsonl)")
    parser.add_argument("--measure", default=None,
                        help="what current_base measures: rss (default), uss, python, blocks, tracemalloc")
    parser.add_argument("--time-scale", type=float, default=None, metavar="X",
                        help="multiply the tracker's durations (leak window, timer) by X")
    verdict = parser.add_argument_group(
        "leak verdict", "the tracker's options (memwatch.configure); defaults in docs/tracker.md")
    verdict.add_argument("--min-growth", type=_size, metavar="SIZE",
                         help="smallest rise reported, e.g. 4mb, 500kb, 4194304 (default 4 MiB; "
                              "with --measure blocks, a count of blocks)")
    verdict.add_argument("--min-duration", type=_seconds, metavar="S",
                         help="shortest window judged, seconds (default 60)")
    verdict.add_argument("--min-samples", type=int, metavar="N",
                         help="fewest samples in a window (default 5)")
    verdict.add_argument("--segments", type=int, metavar="N",
                         help="slices of the window whose floors must all rise (default 4)")
    verdict.add_argument("--warmup", type=_seconds, metavar="S",
                         help="no window starts this soon after start (default 0.25 x min-duration)")
    verdict.add_argument("--sample-interval", type=_optional_seconds, metavar="S", default=_UNSET,
                         help="clock samples every S seconds ('none': only after full "
                              "collections; default 1)")
    verdict.add_argument("--timer-interval", type=_optional_seconds, metavar="S", default=_UNSET,
                         help="force a full collection when none happened for S seconds "
                              "('none': never; default 5)")
    verdict.add_argument("--confirm", choices=("blocks", "none"),
                         help="with a process-wide measure, live blocks must grow too (default "
                              "blocks)")
    verdict.add_argument("--top-types", type=int, metavar="N",
                         help="growing types listed in a leak event (0: no censuses; default 10)")
    verdict.add_argument("--retainers", type=int, metavar="N",
                         help="one retainer path for each of the first N top types (default 3)")
    parser.add_argument("--sample", action="store_true",
                        help="sample allocations (memwatch.start_sampling()) so leak events say "
                             "where the growth was allocated (top_sites)")
    parser.add_argument("--sample-bytes", type=int, default=None, metavar="BYTES",
                        help="mean bytes between allocation samples with --sample (default 16384)")
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a module as 'python -m MODULE' does, instead of a script")
    parser.add_argument("target", nargs=argparse.REMAINDER,
                        help="script.py [args...] (or, with -m, the module's args)")


_UNSET = object()  # default of the flags whose value may be None (argparse converts str defaults)
_UNITS = {"": 1, "b": 1, "kb": 1024, "k": 1024, "mb": 1024 ** 2, "m": 1024 ** 2,
          "gb": 1024 ** 3, "g": 1024 ** 3, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}


def _size(text: str) -> int:
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (a positive number of bytes, or with a unit: 500kb, 4mb, 1gb)")
    return int(float(m.group(1)) * _UNITS[unit])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (positive seconds, e.g. 60)")
    return value


def _optional_seconds(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else _seconds(text)


#: argparse destination -> memwatch.configure option (flags left unset are not passed)
_VERDICT_FLAGS = ("min_growth", "min_duration", "min_samples", "segments", "warmup",
                  "sample_interval", "timer_interval", "confirm", "top_types", "retainers")


def tracker_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The memwatch.configure() options given on the command line."""
    options: dict[str, Any] = {}
    for key in ("measure", "time_scale") + _VERDICT_FLAGS:
        if key in ("sample_interval", "timer_interval"):
            raw = getattr(ns, key, _UNSET)
            if raw is not _UNSET:      # None ('none' on the command line) is a value here
                options[key] = raw
            continue
        value = getattr(ns, key, None)
        if value is not None:
            options[key] = None if (key == "confirm" and value == "none") else value
    return options


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def run(ns: argparse.Namespace) -> int:
    target = list(ns.target)
    if target and target[0] == "--":
        target = target[1:]
    if not ns.module and not target:
        print("memwatch run: give the script to run: memwatch run script.py [args...] "
              "(or memwatch run -m module [args...])", file=sys.stderr)
        return 2
    if not ns.module and not os.path.exists(target[0]):
        print(f"memwatch run: no such script: {target[0]!r}", file=sys.stderr)
        return 2
    if ns.module and not _module_exists(ns.module):
        print(f"memwatch run: no module named {ns.module!r} in {sys.executable} (as "
              f"'python -m {ns.module}' would fail); check the name, or install it in this "
              "interpreter's environment", file=sys.stderr)
        return 2
    jsonl = open(ns.jsonl, "w", encoding="utf-8") if ns.jsonl else None  # noqa: SIM115
    log = EventLog(out=sys.stderr, jsonl=jsonl, print_stats=not ns.quiet)
    started = _now()
    log.record("start", {"timestamp": started, "pid": os.getpid(),
                         "argv": ([f"-m {ns.module}"] if ns.module else []) + target,
                         "python": sys.version.split()[0]})
    server = None
    code: int = 0
    try:
        options = tracker_options(ns)
        if ns.sample or ns.sample_bytes is not None:   # the tracker's option (issue 11)
            options["sample_allocations"] = True if ns.sample_bytes is None else ns.sample_bytes
        if options:
            import memwatch
            memwatch.configure(**options)
        log.start()
        if ns.serve is not None:
            from memwatch.httpapi import serve
            server = serve(ns.serve, host=ns.host, token=ns.token)
            print(f"memwatch: HTTP API on {server.url}/ah (live page: {server.ui_url}"
                  f"{'#token=<your token>' if ns.token else ''})",
                  file=sys.stderr, flush=True)
        code = _run_program(ns.module, target)
    finally:
        if server is not None:
            server.close()
        ended = _now()
        if ns.sample or ns.sample_bytes is not None:   # the heap profile (issue 11)
            from memwatch import heapprofile
            if heapprofile.is_sampling():
                log.record("profile", heapprofile.profile_event())
        log.record("exit", {"timestamp": ended, "code": code,
                            "elapsed": (ended - started).total_seconds()})
        log.close()
        if not ns.quiet:
            print(f"memwatch: {log.counts['stats']} stats and {log.counts['leak']} leak events in "
                  f"{format_duration((ended - started).total_seconds())}"
                  + (f"; JSON lines in {ns.jsonl}" if ns.jsonl else ""), file=sys.stderr)
        if jsonl is not None:
            jsonl.close()
    return code


def _module_exists(module: str) -> bool:
    """Whether ``python -m module`` would find it (its parent packages are imported)."""
    import importlib.util
    sys.path.insert(0, os.getcwd())  # as python -m does: the current directory first
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path.remove(os.getcwd())


def _run_program(module: str | None, target: list[str]) -> int:
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    try:
        if module:
            sys.argv = [module, *target]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            script = target[0]
            sys.argv = list(target)
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
            runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - the program's own error, shown as python would
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path and sys.path[0] != saved_path0:
            try:
                sys.path.remove(os.path.dirname(os.path.abspath(target[0])) if target else "")
            except ValueError:
                pass


def add_parser(subparsers: Any) -> None:
    """Register ``memwatch run`` with the ``memwatch`` command's subparsers."""
    p = subparsers.add_parser("run", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memwatch run", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
