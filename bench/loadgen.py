"""A small HTTP/1.1 load generator, run as its own process by bench/e2e.py.

Two modes:

- open loop (``--rate R``): request *i* is due at ``start + i / R`` whatever happened to the
  ones before it, and its latency is measured from that due time, not from when it was
  actually written. A server that stalls therefore shows the stall in every request that was
  due during it (no coordinated omission). Requests wait for a free keep-alive connection;
  the pool grows up to ``--connections``, and time spent waiting for one counts as latency.
- closed loop (``--concurrency C``): C workers, each sends its next request when the previous
  one is answered, for the whole duration; used to measure the highest throughput.

The client is raw asyncio (uvloop) over persistent connections: a request is one pre-built
byte string, a response is parsed just enough (status line, Content-Length, body), so the
generator costs a few tens of microseconds per request. It reports its own CPU time and how
late it wrote requests compared to their due time ("send lag"), so its overhead is visible.

Input: ``--spec FILE`` (JSON: ``{"host", "port", "requests": [{"method", "path",
"headers", "body"}]}``; requests are used round-robin). Output: one JSON object on stdout.
"""

import argparse
import asyncio
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

MAX_ERROR_BODY = 2048


@dataclass(slots=True)
class Results:
    """What one run measured; latencies in milliseconds."""

    latencies: list[float] = field(default_factory=list)
    """Of successful (2xx) requests."""
    errors: dict[str, int] = field(default_factory=dict)
    send_lag: list[float] = field(default_factory=list)
    sent: int = 0
    completed: int = 0
    connections: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class ClosedError(Exception):
    """The server closed the connection."""


def build_requests(spec: dict[str, Any]) -> list[bytes]:
    """Each request of the spec as the bytes that go on the wire."""
    wire: list[bytes] = []
    for item in spec["requests"]:
        body = item.get("body") or ""
        lines = [
            f"{item['method']} {item['path']} HTTP/1.1",
            f"Host: {spec['host']}:{spec['port']}",
            f"Content-Length: {len(body.encode())}",
        ]
        if body:
            lines.append("Content-Type: application/json")
        lines += [f"{name}: {value}" for name, value in item.get("headers", {}).items()]
        wire.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body.encode())
    return wire


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``; return (status, body)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head:
            raise ClosedError
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
                break
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def error_kind(status: int, body: bytes) -> str:
    """``"<status> <code>"`` from the API's error body, or just the status."""
    try:
        code = json.loads(body[:MAX_ERROR_BODY])["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return str(status)
    return f"{status} {code}"


class Pool:
    """Idle connections, grown on demand up to ``size``."""

    def __init__(self, host: str, port: int, size: int, results: Results) -> None:
        self._host = host
        self._port = port
        self._size = size
        self._opened = 0
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        self._results = results

    async def acquire(self) -> Connection:
        if self._idle.empty() and self._opened < self._size:
            self._opened += 1
            self._results.connections = self._opened
            try:
                return await Connection.open(self._host, self._port)
            except OSError:
                self._opened -= 1
                raise
        return await self._idle.get()

    def release(self, connection: Connection | None) -> None:
        if connection is None:
            self._opened -= 1  # broken: a new one may be opened in its place
        else:
            self._idle.put_nowait(connection)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


async def one_request(
    pool: Pool, request: bytes, due: float, timeout: float, results: Results
) -> None:
    """Send one request (waiting for a connection if need be); record its outcome."""
    connection: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            connection = await pool.acquire()
            results.send_lag.append((time.perf_counter() - due) * 1000)
            status, body = await connection.exchange(request)
    except TimeoutError:
        results.error("timeout")
        if connection is not None:
            connection.close()
        connection = None
    except (OSError, asyncio.IncompleteReadError, ClosedError, ValueError):
        results.error("connection")
        if connection is not None:
            connection.close()
        connection = None
    else:
        if 200 <= status < 300:
            results.latencies.append((time.perf_counter() - due) * 1000)
        else:
            results.error(error_kind(status, body))
    finally:
        results.completed += 1
        pool.release(connection)


async def open_loop(
    pool: Pool, wire: list[bytes], rate: float, duration: float, timeout: float, results: Results
) -> float:
    """Send at ``rate`` per second for ``duration`` seconds; return the elapsed time until
    the last answer."""
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one_request(pool, wire[i % len(wire)], due, timeout, results))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        results.sent += 1
    if tasks:
        await asyncio.wait(tasks)
    return time.perf_counter() - start


async def closed_loop(
    pool: Pool,
    wire: list[bytes],
    concurrency: int,
    duration: float,
    timeout: float,
    results: Results,
) -> float:
    """``concurrency`` workers back to back for ``duration`` seconds; return elapsed time."""
    start = time.perf_counter()
    stop = start + duration
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop:
            i = counter
            counter += 1
            results.sent += 1
            await one_request(pool, wire[i % len(wire)], time.perf_counter(), timeout, results)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def run(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by ``args`` and ``spec``; the measurements as JSON data."""
    wire = build_requests(spec)
    results = Results()
    pool = Pool(spec["host"], spec["port"], args.connections, results)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        if args.rate:
            elapsed = await open_loop(pool, wire, args.rate, args.duration, args.timeout, results)
        else:
            elapsed = await closed_loop(
                pool, wire, args.concurrency, args.duration, args.timeout, results
            )
    finally:
        pool.close()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "elapsed_s": elapsed,
        "sent": results.sent,
        "ok": len(results.latencies),
        "errors": results.errors,
        "latencies_ms": [round(v, 3) for v in results.latencies],
        "send_lag_ms": sorted(results.send_lag),
        "connections": results.connections,
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON file with host, port, requests")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, help="closed loop: concurrent workers")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--connections", type=int, default=256, help="keep-alive pool bound")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = parser.parse_args()
    if args.concurrency:
        args.connections = max(args.connections, args.concurrency)
    spec = json.loads(Path(args.spec).read_text())
    print(json.dumps(uvloop.run(run(args, spec))))


if __name__ == "__main__":
    main()
