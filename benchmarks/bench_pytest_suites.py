"""`pytest --memwatch-leaks` on the released test suites of real libraries.

For each suite: download the sdist (``pip download --no-deps --no-binary
:all:``) into a gitignored cache, make a venv with the library and what its
tests import, copy the sources fresh, plant three leaks (a function test, a
class made per call, a ``unittest.TestCase`` test), then run the suite plain
and with ``--memwatch-leaks``, one run at a time, and print:

    suite | tests (measured) | plain s | plugin s | ratio | flagged true / false | red only under the plugin

Times are CPU seconds of the pytest process (user + system), which the other
work on a loaded machine disturbs less than wall time; the ratio is what the
issue's target is about (at most 4x each, 3x geomean).  Every flag that is not
a planted leak is run again alone under ``--memwatch-leaks``: it is counted as
true when it is flagged again there (its headline then says the growth went
on over 256 calls, printed in the closing note), false otherwise.

    python benchmarks/bench_pytest_suites.py [--only toolz,attrs] [--cache DIR] [--repeat N]

Needs network access to PyPI for the first run (sdists, test dependencies);
later runs reuse the cache.  Runs with the interpreter that runs it; memwatch
comes from this checkout's ``src`` (build it in place first).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "benchmarks" / ".suites-cache"


@dataclass
class Suite:
    name: str
    version: str
    tests: list[str]
    deps: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


SUITES = [
    Suite("toolz", "1.2.0", ["toolz/tests"]),
    Suite("boltons", "26.2.0", ["tests"]),
    Suite("attrs", "26.1.0", ["tests"], ["hypothesis", "pympler"],
          ["--ignore=tests/test_mypy.yml", "--ignore=tests/test_pyright.py"]),
    # test_tzfile.py reads zoneinfo tarballs fetched from the network.
    # Its conftest marks items no_cover, which pytest-cov registers (without
    # it, pytest's unknown-mark warning is an error there: no test runs);
    # test_zoneinfo.py imports attrs.
    Suite("python-dateutil", "4.0.0", ["tests"], ["freezegun", "hypothesis", "pytest-cov", "attrs"],
          ["--ignore=tests/test_tzfile.py"]),
    Suite("packaging", "26.4", ["tests"],
          ["pretend", "hypothesis", "tomli_w", "typing_extensions"]),
    Suite("more-itertools", "11.2.1", ["tests"]),
    Suite("idna", "3.20", ["tests"], ["hypothesis"]),
]

PLANTED = '''\
"""Leaks planted by memwatch's benchmark: each test keeps what it makes."""
import unittest

_KEEP = []


class _Planted:
    pass


def test_memwatch_planted_instance():
    _KEEP.append(_Planted())


def test_memwatch_planted_class():
    _KEEP.append(type("PlantedClass", (), {"n": len(_KEEP)}))


class MemwatchPlanted(unittest.TestCase):
    def test_memwatch_planted_testcase(self):
        _KEEP.append({"n": len(_KEEP)})
'''
PLANTED_FILE = "test_zz_memwatch_planted.py"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def prepare(suite: Suite, cache: Path) -> tuple[Path, Path]:
    """The venv's python and a fresh copy of the sources with the plants."""
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    stem = suite.name.replace("-", "_").lower()
    found = [p for p in sdists.glob("*.tar.gz")
             if p.name.lower().replace("-", "_").startswith(f"{stem}_{suite.version}")]
    if not found:
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
            f"{suite.name}=={suite.version}", "-d", str(sdists)])
        found = [p for p in sdists.glob("*.tar.gz")
                 if p.name.lower().replace("-", "_").startswith(f"{stem}_{suite.version}")]
    sdist = found[0]
    src = cache / "src" / f"{stem}-{suite.version}"
    if not src.exists():
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/")[0]
            tar.extractall(cache / "src", filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(cache / "src")
        (cache / "src" / top).rename(src)
    venv = cache / "venvs" / f"{stem}-{suite.version}-py{sys.version_info[0]}{sys.version_info[1]}"
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        sh([base, "-m", "venv", str(venv)])
        sh([str(python), "-m", "pip", "install", "-q", "pytest", "psutil", *suite.deps])
        sh([str(python), "-m", "pip", "install", "-q", "--no-deps", str(src)])
    work = cache / "work" / f"{stem}-{suite.version}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    (work / suite.tests[0] / PLANTED_FILE).write_text(PLANTED)
    return python, work


def run_pytest(python: Path, work: Path, suite: Suite, extra: list[str], xml: Path,
               timeout: float = 3600, paths: list[str] | None = None) -> tuple[float, float, str]:
    """(cpu seconds, wall seconds, stdout) of one pytest run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env.pop("CI", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--junitxml={xml}", "-o", "junit_family=xunit2", *suite.args, *extra,
           *(suite.tests if paths is None else paths)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.stdout


def outcomes(xml: Path) -> dict[str, str]:
    """test id -> passed / failed / skipped, from the JUnit XML."""
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            result[key] = "failed"
        elif "skipped" in kinds:
            result[key] = "skipped"
        else:
            result[key] = "passed"
    return result


def xml_key(nodeid: str) -> str:
    """The JUnit key of a pytest node id (path/to/test_x.py::Cls::test -> path.to.test_x.Cls::test)."""
    parts = nodeid.split("::")
    path = parts[0][:-3].replace("/", ".") if parts[0].endswith(".py") else parts[0]
    return ".".join([path, *parts[1:-1]]) + "::" + parts[-1]


def plugin_args(python: Path) -> list[str]:
    """``--memwatch-leaks``, with ``-p memwatch.pytest_plugin`` unless the
    suite's interpreter already finds memwatch's pytest11 entry point (a
    ``memwatch.egg-info`` in ``src`` from a pip build): loading it twice is
    pytest's "Plugin already registered under a different name"."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    probe = ("import importlib.metadata as m; "
             "print(any(e.value.split(':')[0] == 'memwatch.pytest_plugin' "
             "for e in m.entry_points(group='pytest11')))")
    found = subprocess.run([str(python), "-c", probe], env=env, capture_output=True,
                           text=True).stdout.strip() == "True"
    return ["--memwatch-leaks"] if found else ["-p", "memwatch.pytest_plugin", "--memwatch-leaks"]


def bench(suite: Suite, cache: Path, repeat: int = 1) -> dict:
    python, work = prepare(suite, cache)
    xml_plain, xml_plugin = work / "plain.xml", work / "plugin.xml"
    cpu_plain, wall_plain, out_plain = run_pytest(python, work, suite, [], xml_plain)
    plugin_opts = plugin_args(python)
    cpu_plugin, wall_plugin, out_plugin = run_pytest(python, work, suite, plugin_opts, xml_plugin)
    # Plain once more after each plugin run, alternating (the machine's load
    # drifts): the times are medians, plain's over repeat + 1 runs.
    plains, plugins = [(cpu_plain, wall_plain)], [(cpu_plugin, wall_plugin)]
    for k in range(repeat):
        if k:
            plugins.append(run_pytest(python, work, suite, plugin_opts,
                                      work / "plugin2.xml")[:2])
        plains.append(run_pytest(python, work, suite, [], work / "plain2.xml")[:2])
    cpu_plain, wall_plain = (statistics.median(t[i] for t in plains) for i in (0, 1))
    cpu_plugin, wall_plugin = (statistics.median(t[i] for t in plugins) for i in (0, 1))
    plain, plugin = outcomes(xml_plain), outcomes(xml_plugin)
    leaks = re.findall(r"^LEAK (\S+) - (.*)$", out_plugin, re.M)
    leaked = {xml_key(n) for n, _ in leaks}
    red_only = sorted(k for k, v in plugin.items()
                      if v == "failed" and plain.get(k) == "passed" and k not in leaked)
    counts = re.search(r"^memwatch: (\d+) of (\d+) tests measured(.*)$", out_plugin, re.M)
    true_flags, false_flags, evidence = [], [], []
    for nodeid, summary in leaks:
        if "memwatch_planted" in nodeid:
            true_flags.append(nodeid)
            continue
        # Alone, in a fresh interpreter: flagged again means the growth went
        # on over the confirmation calls with no other test around it.
        _, _, alone = run_pytest(python, work, suite, plugin_opts, work / "alone.xml",
                                 paths=[nodeid])
        head = re.search(r"leaks: .*", alone)
        if re.search(r"^LEAK ", alone, re.M):
            true_flags.append(nodeid)
            evidence.append(f"{suite.label} {nodeid}: {summary}; alone: "
                            f"{head.group(0) if head else 'flagged'}")
        else:
            false_flags.append(nodeid)
            evidence.append(f"{suite.label} {nodeid}: {summary}; NOT flagged alone")
    planted_missed = 3 - sum("memwatch_planted" in n for n in true_flags)
    return {
        "suite": suite.label, "tests": len(plain),
        "measured": counts.group(1) if counts else "?",
        "not_measured": counts.group(3).lstrip("; ") if counts else "",
        "plain": cpu_plain, "plugin": cpu_plugin,
        "wall_plain": wall_plain, "wall_plugin": wall_plugin,
        "ratio": cpu_plugin / cpu_plain if cpu_plain else float("nan"),
        "true": len(true_flags), "false": len(false_flags), "planted_missed": planted_missed,
        "red_only": red_only, "red_plain": sum(v == "failed" for v in plain.values()),
        "evidence": evidence, "plain_tail": out_plain.strip().splitlines()[-1:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated suite names")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--repeat", type=int, default=1,
                        help="plugin runs per suite, each followed by a plain one (medians)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    cache = Path(args.cache)
    rows = []
    load_before = os.getloadavg()
    for suite in SUITES:
        if only and suite.name not in only:
            continue
        print(f"... {suite.label}", file=sys.stderr, flush=True)
        rows.append(bench(suite, cache, max(1, args.repeat)))
        r = rows[-1]
        # A row as soon as a suite is done: the whole run takes long.
        print(f"    {r['suite']}: plain {r['plain']:.2f} s, plugin {r['plugin']:.2f} s, "
              f"{r['ratio']:.2f}x, flags {r['true']} true / {r['false']} false, "
              f"red only under the plugin {len(r['red_only'])}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"\nPython {sys.version.split()[0]}, CPU seconds of a pytest run (medians of "
          f"{max(1, args.repeat)} plugin and {max(1, args.repeat) + 1} plain runs, alternating; "
          f"machine shared with other work: load average {load_before[0]:.1f} at the "
          f"start, {load_after[0]:.1f} at the end, on {os.cpu_count()} CPUs)\n")
    print("| suite | tests (measured) | plain s | `--memwatch-leaks` s | ratio "
          "| flagged true / false | planted missed | red only under the plugin | red plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['suite']} | {r['tests']} ({r['measured']}) | {r['plain']:.2f} "
              f"| {r['plugin']:.2f} | {r['ratio']:.2f}x | {r['true']} / {r['false']} "
              f"| {r['planted_missed']} | {len(r['red_only'])} | {r['red_plain']} |")
    ratios = [r["ratio"] for r in rows if r["ratio"] == r["ratio"] and r["ratio"] > 0]
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\ngeomean ratio {geo:.2f}x over {len(ratios)} suites")
    print("\nNot measured:")
    for r in rows:
        print(f"  {r['suite']}: {r['not_measured'] or 'none'}")
    print("\nEvery flag that is not planted, with its evidence:")
    for r in rows:
        for line in r["evidence"]:
            print(f"  {line}")
    for r in rows:
        for key in r["red_only"]:
            print(f"  red only under the plugin: {r['suite']} {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
