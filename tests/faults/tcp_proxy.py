"""A loopback TCP proxy that a test can partition, to cut the API off its database for real.

The machine's PostgreSQL is shared by every test run, so a test cannot stop it; it puts this
proxy between the API and PostgreSQL instead and switches it between three modes:

- ``forward``: bytes flow both ways (a healthy network);
- ``blackhole``: a partition. Nothing flows on open connections (bytes already read are held,
  not dropped, so a connection that survives the partition resumes intact), and new
  connections are accepted but never reach the server: the client waits for an answer that
  does not come, which is what a dead route or a firewall dropping packets looks like;
- ``refuse``: the listener is closed and every open connection is aborted: the client gets
  "connection refused" or a reset at once, as when the server host is up but PostgreSQL is not.

Going back to ``forward`` heals everything: held bytes are delivered, the listener is bound
again on the same port.
"""

import asyncio
import contextlib
import socket
from typing import Literal

Mode = Literal["forward", "blackhole", "refuse"]

_CHUNK = 65536


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; see the module docstring for the modes."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = _unused_port()
        self.mode: Mode = "forward"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    async def start(self) -> "TcpProxy":
        """Listen (again) on the proxy's port."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def set_mode(self, mode: Mode) -> None:
        """Switch the network's behaviour (see the module docstring)."""
        if mode == "forward":
            await self.heal()
        else:
            self.cut(mode)

    def cut(self, mode: Literal["blackhole", "refuse"]) -> None:
        """Partition (``blackhole``) or refuse, at once. Synchronous, so that a test can cut the
        link from inside a database event hook, at an exact point of a request."""
        self.mode = mode
        self._flowing.clear()
        if mode == "refuse":
            self._close_listener()
            for writer in list(self._writers):
                writer.transport.abort()

    async def heal(self) -> None:
        """Back to ``forward``: held bytes flow, the listener is bound again."""
        if self._server is None:
            await self.start()
        self.mode = "forward"
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and end every connection."""
        self._close_listener()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            # In a blackhole the client's connection is accepted and then nothing happens.
            await self._flowing.wait()
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the connection ends; a cancelled handler ends quietly (proxy closed)
        finally:
            for end in (writer, upstream_writer):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()  # a partition holds the bytes, it does not drop them
                writer.write(data)
                await writer.drain()
        finally:
            # One direction ended: end the connection as a whole, as a real socket would.
            writer.transport.abort()
