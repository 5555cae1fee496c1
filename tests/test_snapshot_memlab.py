"""A real consumer that no one here wrote: memlab's heap parser reads our file.

Needs node and ``@memlab/heap-analysis`` installed by ``tests/memlab/install.sh``
(or in the directory named by ``MEMWATCH_MEMLAB_DIR``); skipped otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memwatch.snapshot import load_snapshot

MEMLAB_DIR = Path(os.environ.get("MEMWATCH_MEMLAB_DIR", Path(__file__).parent / "memlab"))
CHECK_JS = Path(__file__).parent / "memlab" / "check.js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None
    or not (MEMLAB_DIR / "node_modules" / "@memlab" / "heap-analysis").is_dir(),
    reason="node or memlab not installed (run: bash tests/memlab/install.sh)")

SCENARIO = r"""
import gc, json, os, sys
import memwatch
from memwatch import _core, _graph

class Holder:
    pass
class LeakedSession:
    def __init__(self):
        self.payload = bytearray(4096)
for cls in (Holder, LeakedSession):
    cls.__module__ = "app"
HANDLERS = {"CACHE": [None, None, None, Holder()]}
HANDLERS["CACHE"][3].items = [LeakedSession()]
del cls

gc.collect()
gc.disable()
raw = _core.walk()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
info = _graph.write_heapsnapshot(fd)
os.close(fd)
counts = {}
for name, count, _size in raw.rows():
    counts[name] = counts.get(name, 0) + count
counts["memwatch._core.RawCensus"] = counts.get("memwatch._core.RawCensus", 0) + 1
gc.enable()
(path,) = memwatch.retainers(LeakedSession, limit=1, collect=False)
print(json.dumps({"nodes": info["nodes"], "census_total": raw.total_count, "counts": counts,
                  "path": str(path), "size": sys.getsizeof(HANDLERS["CACHE"][3].items[0])}))
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    d = tmp_path_factory.mktemp("memlab")
    script = d / "scenario.py"
    script.write_text(SCENARIO)
    snap = d / "leak.heapsnapshot"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, str(script), str(snap)], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    ours = json.loads(out.stdout)
    env = dict(os.environ, NODE_PATH=str(MEMLAB_DIR / "node_modules"))
    proc = subprocess.run(["node", str(CHECK_JS), str(snap), "app.LeakedSession"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    return snap, ours, theirs


def test_memlab_counts_match_the_census(scenario):
    _snap, ours, theirs = scenario
    assert ours["nodes"] == ours["census_total"] + 1      # + the RawCensus
    assert theirs["nodes"] == ours["nodes"]
    assert theirs["by_name"] == ours["counts"]


def test_memlab_shortest_path_matches_ours(scenario):
    snap_path, ours, theirs = scenario
    snap = load_snapshot(snap_path)
    hops = []
    for hop in theirs["path"][1:]:
        hops.append(((hop["id"] - 1) // 2, hop["edge_type"], hop["edge"]))
    theirs_str = snap.format_path(hops)
    assert theirs_str == ours["path"]
    # Attributes: inline (3.11+) or in the instance's __dict__ (3.10).
    attr = "app.Holder.items" if sys.version_info >= (3, 11) else "app.Holder -> dict 'items'"
    assert ours["path"] == ("__main__ -> dict 'HANDLERS' -> dict 'CACHE' -> list[3] "
                            f"-> {attr} -> list[0] -> app.LeakedSession")
    (file_hops,) = snap.retainer_paths("app.LeakedSession", limit=1)
    assert [h[0] for h in file_hops] == [h[0] for h in hops]
    # memlab's retained size of the session includes its payload.
    assert theirs["retained"] >= ours["size"] + 4096


DEVTOOLS_JS = Path(__file__).parent / "memlab" / "devtools.mjs"


def test_devtools_summary_view_matches_the_census(scenario):
    """Chrome DevTools' own heap snapshot code (heap-snapshot-toolkit) builds
    its Summary view from our file: every object, grouped by our type names."""
    if not (MEMLAB_DIR / "node_modules" / "heap-snapshot-toolkit").is_dir():
        pytest.skip("heap-snapshot-toolkit not installed (run: bash tests/memlab/install.sh)")
    snap_path, ours, _theirs = scenario
    proc = subprocess.run(["node", str(DEVTOOLS_JS), str(snap_path)], capture_output=True,
                          text=True, timeout=300, cwd=str(MEMLAB_DIR))
    assert proc.returncode == 0, proc.stderr[-2000:]
    devtools = json.loads(proc.stdout.strip().splitlines()[-1])
    assert devtools["total"] == ours["nodes"]
    assert devtools["by_name"] == ours["counts"]
    snap = load_snapshot(snap_path)
    assert devtools["self_size"] == {k: s for k, (_c, s) in snap.type_counts().items()}
