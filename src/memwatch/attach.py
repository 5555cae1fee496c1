"""``memwatch attach PID ...``: run memwatch inside a process that never imported it.

CPython 3.14 lets a process ask another one to run a Python file at its next
safe point (``sys.remote_exec``, PEP 768).  The caller writes a request into a
private directory (0700, made by ``tempfile.mkdtemp``), injects a small
bootstrap script, and waits for the target's answer: a JSON file created
0600 in that directory (and any snapshot written there), so nothing passes
through a place another user can read.  The target imports *its own*
memwatch (it must be installed in the target's environment); the caller
never sends code beyond the bootstrap.

Both sides need 3.14+: the caller for ``sys.remote_exec``, the target for the
protocol.  Errors say what to do: the target is older, ptrace is not
permitted, the process is gone, memwatch is not importable there, or the
target did not reach a safe point in time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from typing import Any

PROTOCOL = 1

# The bootstrap the target runs (in its __main__ namespace, hence one
# function that deletes itself).  It only reads the request, checks that the
# caller is still waiting, and hands over to the target's memwatch.
_BOOTSTRAP = '''\
def __memwatch_attach__(d={directory!r}):
    import json, os, sys, time
    def reply(obj):
        tmp = os.path.join(d, "result.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, os.path.join(d, "result.json"))
    try:
        with open(os.path.join(d, "request.json")) as f:
            req = json.load(f)
        if time.time() > req["deadline"]:
            return  # the caller has given up: do nothing late
        os.close(os.open(os.path.join(d, "started"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return  # the caller has removed its directory
    try:
        from memwatch import attach
    except BaseException as e:
        reply({{"ok": False, "kind": "import", "error": "%s: %s" % (type(e).__name__, e),
               "executable": sys.executable, "version": sys.version.split()[0]}})
        return
    reply(attach._serve_request(req, d))
try:
    __memwatch_attach__()
except BaseException:
    pass
finally:
    del __memwatch_attach__
'''


class AttachError(Exception):
    """Attaching failed; the message names the problem and the fix."""


# --------------------------------------------------------------------------
# Caller side
# --------------------------------------------------------------------------

def _target_python(pid: int) -> tuple[str | None, str]:
    """(\"3.X\" or None, executable) of a process, read from /proc."""
    exe = ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass
    version = None
    m = re.search(r"python(3\.\d+)", os.path.basename(exe))
    if m:
        version = m.group(1)
    else:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                m = re.search(r"libpython(3\.\d+)", f.read())
            if m:
                version = m.group(1)
        except OSError:
            pass
    return version, exe


def _remote_debug_disabled(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        if any(e.startswith(b"PYTHON_DISABLE_REMOTE_DEBUG=") and e != b"PYTHON_DISABLE_REMOTE_DEBUG="
               for e in env):
            return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        return b"disable_remote_debug" in cmdline or b"disable-remote-debug" in cmdline
    except OSError:
        return False


def _ptrace_hint() -> str:
    scope = None
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as f:
            scope = f.read().strip()
    except OSError:
        pass
    hint = ("run memwatch attach as the target's user with ptrace allowed, or as root "
            "(CAP_SYS_PTRACE; in a container: --cap-add=SYS_PTRACE)")
    if scope is not None:
        hint += (f"; /proc/sys/kernel/yama/ptrace_scope is {scope} (0: any process of yours, "
                 "1: only your descendants, 2: only root, 3: nobody)")
    return hint


def _check_caller() -> None:
    if not hasattr(sys, "remote_exec"):
        raise AttachError(
            "memwatch attach needs Python 3.14 or newer to run it (sys.remote_exec, PEP 768); "
            f"this is {sys.version.split()[0]}. Run it with the target's interpreter, "
            "e.g. python3.14 -m memwatch attach PID census")


def _check_target(pid: int) -> None:
    if pid <= 0:
        raise AttachError(f"not a process id: {pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise AttachError(f"no process {pid} (it has exited, or the id is wrong)") from None
    except PermissionError:
        raise AttachError(f"not permitted to attach to process {pid} (it belongs to another user): "
                          + _ptrace_hint()) from None
    version, exe = _target_python(pid)
    if version is not None and tuple(map(int, version.split("."))) < (3, 14):
        raise AttachError(f"process {pid} runs Python {version} ({exe}); memwatch attach needs "
                          "3.14 or newer in the target (sys.remote_exec, PEP 768). For an older "
                          "process, start it under `memwatch run` or call memwatch.serve() in it")


def _diagnose(pid: int, exc: BaseException) -> AttachError:
    if isinstance(exc, ProcessLookupError):
        return AttachError(f"process {pid} is gone")
    if isinstance(exc, PermissionError):
        why = ""
        if _looks_non_dumpable(pid):
            why = ("it is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or changed its user "
                   "ids), so only a caller with CAP_SYS_PTRACE may read its memory; ")
        return AttachError(f"not permitted to attach to process {pid} (ptrace): " + why + _ptrace_hint())
    version, exe = _target_python(pid)
    here = "%d.%d" % sys.version_info[:2]
    if version is None:
        return AttachError(f"could not attach to process {pid} ({exe or 'unknown executable'}): {exc}; "
                           "is it a CPython 3.14+ process?")
    if version != here:
        return AttachError(f"process {pid} runs Python {version}, this memwatch runs on {here}: "
                           f"run python{version} -m memwatch attach ... ({exc})")
    if _remote_debug_disabled(pid):
        return AttachError(f"process {pid} has remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG "
                           "or -X disable_remote_debug): restart it without that to attach")
    return AttachError(f"could not attach to process {pid} (Python {version}, {exe}): {exc}")


def _looks_non_dumpable(pid: int) -> bool:
    """True when we may signal ``pid`` (same user) but the kernel shows its
    /proc entries as root's: Linux does that for a non-dumpable process."""
    if os.geteuid() == 0:
        return False
    try:
        os.kill(pid, 0)
        return os.stat(f"/proc/{pid}/status").st_uid == 0
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) accepts signals but runs nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remote_call(pid: int, action: str, *, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
    """Run ``action`` (census, snapshot, retainers, start, stop, serve) in process ``pid``.

    Returns the target's answer (a dict; ``snapshot`` answers include the
    path of the file, still in the private directory: see :func:`attach_command`).
    :raises AttachError: with the reason and the fix."""
    _check_caller()
    _check_target(pid)
    if timeout <= 0:
        raise AttachError("--timeout must be positive")
    directory = tempfile.mkdtemp(prefix="memwatch-attach-")   # 0700, ours
    keep = False
    try:
        try:
            st = os.stat(f"/proc/{pid}")
            if os.geteuid() == 0 and st.st_uid != 0:
                # root attaching to a service account: the target must be able
                # to read the request and write its answer; root reads anyway.
                os.chown(directory, st.st_uid, st.st_gid)
        except OSError:
            pass
        request = {"protocol": PROTOCOL, "action": action, "params": params,
                   "deadline": time.time() + timeout}
        with open(os.path.join(directory, "request.json"), "w", encoding="utf-8") as f:
            json.dump(request, f)
        script = os.path.join(directory, "bootstrap.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(_BOOTSTRAP.format(directory=directory))
        try:
            sys.remote_exec(pid, script)  # type: ignore[attr-defined]
        except BaseException as exc:  # noqa: BLE001 - every failure gets a reason
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _diagnose(pid, exc) from exc
        result_path = os.path.join(directory, "result.json")
        deadline = time.monotonic() + timeout
        while not os.path.exists(result_path):
            if not _alive(pid):
                raise AttachError(f"process {pid} exited before answering")
            if time.monotonic() > deadline:
                if os.path.exists(os.path.join(directory, "started")):
                    raise AttachError(f"process {pid} started the {action} but did not finish within "
                                      f"{timeout:g}s (a big heap takes longer: raise --timeout)")
                raise AttachError(f"process {pid} did not run the request within {timeout:g}s: Python "
                                  "runs injected code at its next safe point, in its main thread; a main "
                                  "thread busy in one long C call (or blocked in one) delays it. "
                                  "Raise --timeout or retry")
            time.sleep(0.02)
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if not result.get("ok"):
            if result.get("kind") == "import":
                raise AttachError(
                    f"memwatch is not importable in process {pid} ({result.get('error')}; its Python: "
                    f"{result.get('executable')} {result.get('version')}): install memwatch into that "
                    "environment (pip install memwatch) and retry; no restart is needed")
            raise AttachError(f"{action} failed in process {pid}: {result.get('error')}")
        if action == "snapshot":
            keep = True
            result["_directory"] = directory
        return result
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------
# Target side (runs in the attached process, at a safe point)
# --------------------------------------------------------------------------

# What `start` and `serve` leave running in the target, for `stop`.
_running: dict[str, Any] = {}


def _find_type(name: str) -> type | None:
    """The class whose memwatch name is ``name`` (no heap walk: subclasses of object)."""
    from memwatch.typestats import type_name
    stack: list[type] = [object]
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        try:
            if type_name(t) == name:
                return t
            stack.extend(type.__subclasses__(t))
        except Exception:  # noqa: BLE001 - an odd metaclass: skip it
            continue
    return None


def _serve_request(req: dict, directory: str) -> dict[str, Any]:
    try:
        if req.get("protocol") != PROTOCOL:
            return {"ok": False, "kind": "protocol",
                    "error": f"memwatch in the target speaks attach protocol {PROTOCOL}, the caller "
                             f"{req.get('protocol')}: use the same memwatch version on both sides"}
        return _dispatch(req["action"], req.get("params") or {}, directory)
    except BaseException as exc:  # noqa: BLE001 - never raise into the target's code
        return {"ok": False, "kind": "exception", "error": f"{type(exc).__name__}: {exc}"}


def _dispatch(action: str, p: dict, directory: str) -> dict[str, Any]:
    import memwatch
    if action == "census":
        c = memwatch.census(collect=bool(p.get("collect")))
        limit = int(p.get("limit", 20))
        return {"ok": True, "text": c.format(limit), "census": c.to_dict(limit)}
    if action == "snapshot":
        path = os.path.join(directory, "snapshot.heapsnapshot")
        info = memwatch.write_snapshot(path, include_strings=bool(p.get("include_strings")))
        return {"ok": True, "path": path, "info": {k: v for k, v in info.items() if k != "path"}}
    if action == "retainers":
        cls = _find_type(p["type"])
        if cls is None:
            return {"ok": False, "kind": "usage",
                    "error": f"no class named {p['type']!r} (names as memwatch prints them: "
                             "module.Qualname, builtins bare, e.g. dict)"}
        paths = memwatch.retainers(cls, int(p.get("limit", 5)))
        return {"ok": True, "paths": [x.to_dict() for x in paths]}
    if action == "start":
        if "eventlog" in _running:
            return {"ok": True, "already": True, "jsonl": _running["eventlog_path"]}
        from memwatch.runner import EventLog
        path = p["jsonl"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8")
        log = EventLog(jsonl=stream, print_stats=False)
        log.record("start", {"timestamp": _utcnow(), "pid": os.getpid(), "attached": True,
                             "python": sys.version.split()[0]})
        log.start()
        _running.update(eventlog=log, eventlog_path=path, eventlog_stream=stream)
        return {"ok": True, "jsonl": path}
    if action == "serve":
        if "server" in _running:
            return {"ok": True, "already": True, "url": _running["server"].url}
        server = memwatch.serve(int(p.get("port", 0)))
        _running["server"] = server
        return {"ok": True, "url": server.url, "port": server.port}
    if action == "stop":
        stopped = []
        log = _running.pop("eventlog", None)
        if log is not None:
            log.record("stop", {"timestamp": _utcnow()})
            log.close()
            _running.pop("eventlog_stream").close()
            stopped.append("tracker (" + _running.pop("eventlog_path") + ")")
        server = _running.pop("server", None)
        if server is not None:
            server.close()
            stopped.append("HTTP API (" + server.url + ")")
        return {"ok": True, "stopped": stopped}
    return {"ok": False, "kind": "usage", "error": f"unknown action {action!r}"}


def _utcnow() -> Any:
    import datetime as _dt
    return _dt.datetime.now(_dt.timezone.utc)


# --------------------------------------------------------------------------
# Command line (registered by memwatch.cli)
# --------------------------------------------------------------------------

def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "attach", help="run memwatch inside a running Python 3.14+ process (PEP 768)",
        description="Run memwatch inside a running CPython 3.14+ process that never imported it, "
        "without restarting it (sys.remote_exec). memwatch must be installed in the target's "
        "environment; results come back through a private 0600 file.")
    p.add_argument("pid", type=int)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the target (default 60)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("census", help="objects by type, in the target")
    c.add_argument("-n", "--limit", type=int, default=20)
    c.add_argument("--collect", action="store_true", help="run a full collection first")
    c.add_argument("--json", action="store_true", help="print JSON")
    s = sub.add_parser("snapshot", help="write the target's heap to FILE (.heapsnapshot)")
    s.add_argument("file")
    s.add_argument("--include-strings", action="store_true")
    r = sub.add_parser("retainers", help="shortest paths from the roots to instances of TYPE")
    r.add_argument("type")
    r.add_argument("-n", "--limit", type=int, default=5)
    st = sub.add_parser("start", help="start the tracker in the target, events as JSON lines")
    st.add_argument("--jsonl", required=True, help="file the target appends events to")
    sv = sub.add_parser("serve", help="start the HTTP API in the target (loopback)")
    sv.add_argument("--port", type=int, default=0)
    sub.add_parser("stop", help="stop what start/serve started in the target")
    p.set_defaults(func=attach_command)


def attach_command(args: Any) -> int:
    try:
        return _attach_command(args)
    except AttachError as e:
        print(f"memwatch attach: error: {e}", file=sys.stderr)
        return 2


def _attach_command(args: Any) -> int:
    pid, action, timeout = args.pid, args.action, args.timeout
    if action == "census":
        res = remote_call(pid, "census", timeout=timeout, limit=args.limit, collect=args.collect)
        print(json.dumps(res["census"], indent=2) if args.json else res["text"])
    elif action == "snapshot":
        dest = os.path.abspath(args.file)
        if not os.path.isdir(os.path.dirname(dest)):
            raise AttachError(f"no such directory: {os.path.dirname(dest)}")
        res = remote_call(pid, "snapshot", timeout=timeout, include_strings=args.include_strings)
        try:
            # The file's place is ours to say, never the target's answer: a
            # target may be another (less trusted) user than the caller.
            src = os.path.join(res["_directory"], "snapshot.heapsnapshot")
            st = os.lstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise AttachError(f"process {pid} left something other than a snapshot file")
            shutil.move(src, dest)
            os.chmod(dest, 0o600)
            if os.stat(dest).st_uid != os.getuid():   # written by a service account for root
                os.chown(dest, os.getuid(), os.getgid())
        finally:
            shutil.rmtree(res["_directory"], ignore_errors=True)
        info = res.get("info", {})
        print(f"wrote {dest}: {info.get('nodes', '?')} objects from process {pid}")
    elif action == "retainers":
        res = remote_call(pid, "retainers", timeout=timeout, type=args.type, limit=args.limit)
        if not res["paths"]:
            print(f"no instance of {args.type} is reachable from the roots in process {pid}")
            return 1
        for path in res["paths"]:
            print(path["path"])
    elif action == "start":
        res = remote_call(pid, "start", timeout=timeout, jsonl=os.path.abspath(args.jsonl))
        print(("already running: " if res.get("already") else "tracker started in process "
               f"{pid}: ") + f"events in {res['jsonl']}")
    elif action == "serve":
        res = remote_call(pid, "serve", timeout=timeout, port=args.port)
        print(("already serving: " if res.get("already") else f"HTTP API in process {pid}: ")
              + res["url"])
    else:
        res = remote_call(pid, "stop", timeout=timeout)
        print("stopped: " + (", ".join(res["stopped"]) or "nothing was running"))
    return 0
