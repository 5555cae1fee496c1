"""Build script for memwatch's C extensions (Cython)."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# MEMWATCH_DEBUG=1 builds with assertions and without optimisation, for valgrind/gdb runs.
debug = os.environ.get("MEMWATCH_DEBUG") == "1"
compile_args = ["-O0", "-g", "-UNDEBUG"] if debug and os.name != "nt" else []

extensions = [
    Extension(
        "memwatch._core",
        ["src/memwatch/_core.pyx"],
        include_dirs=["src/memwatch"],
        extra_compile_args=compile_args,
    ),
    # The tracker's GC callbacks in C and its "right after the collection" pending call.
    Extension(
        "memwatch._gchook",
        ["src/memwatch/_gchook.pyx"],
        extra_compile_args=compile_args,
    ),
    Extension(
        "memwatch._graph",
        ["src/memwatch/_graph.pyx"],
        include_dirs=["src/memwatch"],
        extra_compile_args=compile_args,
    ),
    # The sampling heap profiler's PEP 445 allocator hooks (issue 11).
    Extension(
        "memwatch._sampler",
        ["src/memwatch/_sampler.pyx"],
        include_dirs=["src/memwatch"],
        extra_compile_args=compile_args,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
