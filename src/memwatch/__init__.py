"""memwatch: find memory leaks in long-running Python programs.

The public names are loaded on first use, so ``import memwatch`` costs
nothing (no C extension loaded, no GC callback installed) until you use it.
"""
# No `from __future__ import annotations` and no `typing` here: every global
# name of this module shows in dir(memwatch).
import importlib as _importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "census": "memwatch.typestats",
    "Census": "memwatch.typestats",
    "TypeStat": "memwatch.typestats",
    "TypeStatDiff": "memwatch.typestats",
    "type_name": "memwatch.typestats",
    "HeapDiff": "memwatch.heapdiff",
    "HeapDiffError": "memwatch.heapdiff",
    "format_size": "memwatch.formatting",
    "format_heapdiff": "memwatch.formatting",
    "format_comparison": "memwatch.formatting",
    # the HTTP API (issue 6)
    "serve": "memwatch.httpapi",
    "make_wsgi_app": "memwatch.httpapi",
    "make_asgi_app": "memwatch.httpapi",
    # the GC-driven tracker (issue 3)
    "on": "memwatch.tracker",
    "once": "memwatch.tracker",
    "off": "memwatch.tracker",
    "start": "memwatch.tracker",
    "stop": "memwatch.tracker",
    "configure": "memwatch.tracker",
    "gc": "memwatch.tracker",
    "tracker_info": "memwatch.tracker",
    "trace_gc": "memwatch.gctrace",
    # snapshots, retainer paths, dumps (issue 5)
    "write_snapshot": "memwatch.snapshot",
    "load_snapshot": "memwatch.snapshot",
    "SnapshotError": "memwatch.snapshot",
    "retainers": "memwatch.retainer_paths",
    "dump_on_signal": "memwatch.dumps",
    "dump_on_leak": "memwatch.dumps",
    # the sampling heap profiler (issue 11)
    "start_sampling": "memwatch.heapprofile",
    "stop_sampling": "memwatch.heapprofile",
    "is_sampling": "memwatch.heapprofile",
    "take_heap_profile": "memwatch.heapprofile",
    "sampling_info": "memwatch.heapprofile",
    "HeapProfile": "memwatch.heapprofile",
    "SamplingError": "memwatch.heapprofile",
}

# Submodules reachable as attributes without an import of their own
# (`memwatch.prometheus.register()` after `import memwatch`).
_SUBMODULES = {"prometheus": "memwatch.prometheus", "httpapi": "memwatch.httpapi"}

# Star-imports get everything but the tracker's generic verbs: `gc` would
# shadow the standard module, `start`/`stop` any local name; use memwatch.gc().
__all__ = sorted(set(_LAZY) - {"gc", "start", "stop"}) + ["__version__"]


def __getattr__(name):
    sub = _SUBMODULES.get(name)
    if sub is not None:
        return _importlib.import_module(sub)   # the import sets the attribute too
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memwatch' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    # The public names, not this module's machinery (nor submodules loaded so far).
    return sorted(set(_LAZY) | set(_SUBMODULES) | {"__version__"})


# MEMWATCH_TRACE_GC=1: node's --trace_gc, asked for explicitly by the environment.
if __import__("os").environ.get("MEMWATCH_TRACE_GC", "").strip().lower() not in (
        "", "0", "false", "no", "off"):
    _importlib.import_module("memwatch.gctrace")._from_environment()
