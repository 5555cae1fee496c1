"""Point 8: the standalone HTTP server against bad and slow clients (loopback
only, bounded): 400 on a bad Content-Length, 408 / close on idle time, no
thread per connection, and the status route answering under 2000 slow clients."""
import json
import resource
import socket
import threading
import time

from memwatch.httpapi import MemwatchState, serve


def exchange(port, raw, timeout=30.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head else None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body
    finally:
        s.close()


STATUS = b"GET /ah/memoryProfile/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

with serve(0, state=MemwatchState(), idle_timeout=1.0, head_timeout=1.0) as srv:
    # Bad Content-Length values: an answer (400), never a dropped connection.
    for bad in (b"abc", b"-5", b"1e3", b"12, 13", b" ", b"99999999999999999999"):
        status, body = exchange(srv.port, b"POST /ah/gc HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                + bad + b"\r\n\r\n")
        assert status == 400, (bad, status, body)
        assert "Content-Length" in json.loads(body)["error"] or "too large" in json.loads(body)["error"]
    status, _ = exchange(srv.port, b"NONSENSE\r\n\r\n")
    assert status == 400, status
    assert exchange(srv.port, STATUS)[0] == 200

    # A head that never completes gets a 408 and is closed; an idle
    # keep-alive connection is closed.
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    slow.sendall(b"GET /ah/memoryProfile/status HTTP/1.1\r\nHost: x\r\n")
    answer = slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert slow.recv(65536) in (b"",), "closed after the 408"
    slow.close()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    assert idle.recv(1) == b"", "an idle connection is closed"
    idle.close()

# 2000 slow clients (fewer if the descriptor limit is low: each costs two).
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 2000 * 2 + 200
if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = want
n_slow = max(50, min(2000, (soft - 200) // 2))
with serve(0, state=MemwatchState(), max_connections=4096, head_timeout=120,
           idle_timeout=120) as srv:
    threads_before = threading.active_count()
    clients = []
    for i in range(n_slow):
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        c.sendall(b"GET /ah/memoryProfile/status HTTP/1.1\r\nHost: x\r\n")   # never finished
        clients.append(c)
    time.sleep(0.5)
    threads_during = threading.active_count()
    assert threads_during <= threads_before + 2, (threads_before, threads_during)
    t0 = time.monotonic()
    for _ in range(5):
        assert exchange(srv.port, STATUS)[0] == 200
    under_load = (time.monotonic() - t0) / 5
    for c in clients:
        c.close()
    t0 = time.monotonic()
    for _ in range(5):
        assert exchange(srv.port, STATUS)[0] == 200
    after_close = (time.monotonic() - t0) / 5
# With more clients than max_connections, the longest idle are dropped and a
# new client still gets its answer.
with serve(0, state=MemwatchState(), max_connections=20) as srv:
    clients = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(60)]
    time.sleep(0.3)
    assert exchange(srv.port, STATUS)[0] == 200
    for c in clients:
        c.close()
print(f"slow_clients={n_slow} status_s={under_load:.4f} after_close_s={after_close:.4f}", "ok")
