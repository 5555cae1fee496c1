"""The ``memwatch`` command (also ``python -m memwatch``).

Subcommands live in the modules that own them.  To add one, append a
``(name, module)`` pair to ``COMMANDS``; the module provides
``add_parser(subparsers)``, which adds its subparser(s) and sets ``func``
(called with the parsed arguments, returning the exit status).  A module
listed under several names has ``add_parser`` called once.

Errors a user can cause (a missing, truncated or corrupt file, a bad
argument) print one line on stderr and exit with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# (subcommand, module providing add_parser(subparsers))
COMMANDS: list[tuple[str, str]] = [
    ("summary", "memwatch.snapshot"),
    ("diff", "memwatch.snapshot"),
    ("retainers", "memwatch.retainer_paths"),
    ("run", "memwatch.runner"),
    ("report", "memwatch.report"),
    ("attach", "memwatch.attach"),
]


def build_parser() -> argparse.ArgumentParser:
    from memwatch import __version__
    parser = argparse.ArgumentParser(
        prog="memwatch", description="Find memory leaks in long-running Python programs.")
    parser.add_argument("--version", action="version", version=f"memwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    done: set[str] = set()
    for _name, module in COMMANDS:
        if module not in done:
            done.add(module)
            importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from memwatch.snapshot import SnapshotError
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except SnapshotError as e:
        print(f"memwatch: error: {e}", file=sys.stderr)
    except BrokenPipeError:
        # `memwatch summary FILE | head`: the reader left; not an error.
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:
            pass
        return 0
    except MemoryError:
        print("memwatch: error: out of memory", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"memwatch: error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("memwatch: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
