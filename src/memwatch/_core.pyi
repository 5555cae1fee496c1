"""Type stubs for the C heap walk (memwatch._core, written in Cython)."""
from typing import Any


_SELF_CHECK_MISMATCHES: list[tuple[str, int, int]]

class RawCensus:
    """The C-side result of one heap walk: per-type totals, and optionally the
    sorted (address, type) identity records that HeapDiff compares."""

    total_count: int
    total_size: int
    sizeof_errors: int
    elapsed_ns: int
    overhead_bytes: int
    tracked_only: bool
    recorded: bool
    objects: list[object] | None
    @property
    def nrecords(self) -> int: ...
    @property
    def record_bytes(self) -> int: ...
    @property
    def names(self) -> list[str]: ...
    def rows(self) -> list[tuple[str, int, int]]: ...
    def record_ids(self) -> list[int]: ...

def walk(tracked_only: bool = False, record: bool = False, keep_objects: bool = False,
         sizes: bool = True) -> RawCensus:
    """Count every object on the heap by type (sizes equal sys.getsizeof;
    all 0 with ``sizes=False``)."""

def type_name(tp: type) -> str:
    """``'dict'`` for builtins, ``'package.module.Qual.Name'`` otherwise."""

def identity_diff(before: RawCensus, after: RawCensus) -> tuple[dict[str, int], dict[str, int]]:
    """``(freed, allocated)`` counts by type name between two recorded walks."""

def release_records(census: RawCensus) -> None:
    """Free a recorded walk's identity records."""

def inline_size(obj: object) -> int | None:
    """Test harness: the size the walk computes without sys.getsizeof."""

def start_block_counter() -> bool:
    """Start counting blocks handed out less blocks freed (True: hooked now)."""

def live_blocks() -> int | None:
    """The block count (None: the counter is not running or lost its hooks)."""

def stop_block_counter() -> bool:
    """Take the counting hooks out (False: another hook is on top of them)."""

def fill_tuple_free_lists() -> None:
    """Leave CPython's tuple free lists full (2000 of each size 1-20)."""

def sorted_addresses(objects: list[Any]) -> Any:
    """The objects' addresses, sorted, as an array('Q') (for new_objects)."""

def new_objects(objects: list[Any], types: tuple[type, ...] | None, addresses: Any) -> list[Any]:
    """Objects (of these types; any type for None) whose address is not in
    the sorted array('Q')."""

def trim_free_memory() -> bool:
    """glibc's malloc_trim(0); False where there is none."""

def gc_head_size() -> int: ...
def _self_check() -> list[tuple[str, int, int]]: ...
def _after_fork_in_child() -> bool:
    """at-fork hook: re-enable a GC a walk had off when the process forked."""
def _fail_allocation_after(n: int) -> None:
    """Test harness: make the allocation after the next n ones fail (-1 disarms)."""
