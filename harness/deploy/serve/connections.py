"""Connections that cannot hold the server: a deadline for each request's head, a cap on
open connections, and a cap on header size.

uvicorn (0.54) closes idle keep-alive connections but sets no deadline on a request head
that never finishes, nor on a bare connect, and its httptools parser takes headers of
any size: 1,500 slow sockets held 1,517 file descriptors, and a 64 MB header was read.
So the server speaks through uvicorn's own protocol classes, extended here: a
connection whose request head has not arrived within ``header_timeout_s`` of its first
byte (or of the connect) is closed; a connection beyond ``max_connections`` is closed at
once; a head over ``MAX_HEADER_BYTES`` is a 400. The body's own deadline is the upload
reader's (:mod:`.uploads`), where a 408 can still be answered.

The protocol is uvicorn's httptools one (httptools is a dependency of the harness):
its parser's callbacks see every part of the head, so the cap counts the head itself,
however it arrives.
"""
from __future__ import annotations

import asyncio

__all__ = ["guarded_protocol", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 32 * 1024   # request line and headers; browsers send a few KB


class HeadTooLarge(Exception):
    """Raised from a parser callback: the parser turns it into a 400 and a closed connection."""


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """An ``http=`` protocol class for ``uvicorn.run`` with these limits."""
    class Guarded(_httptools_protocol()):
        header_timeout = header_timeout_s
        connection_limit = max_connections

    return Guarded


class _Deadlines:
    """What both parsers' protocols get: the connection cap and the head's deadline.
    ``_head_arrived`` is called by each parser's own hook when a request head is complete."""

    header_timeout: float
    connection_limit: int

    def connection_made(self, transport) -> None:
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        super().connection_made(transport)
        if len(self.connections) > self.connection_limit:
            # Refused before any byte is read: a flood of sockets costs one descriptor each for a moment only.
            self.logger.warning("closed a connection: %d are open, the limit is %d",
                                len(self.connections), self.connection_limit)
            transport.close()
            return
        self._await_head()

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _await_head(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_late)

    def _head_arrived(self) -> None:
        self._head_bytes = 0
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._await_head()   # from a request's first byte (after keep-alive) to its last header
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        self._head_arrived()
        super().connection_lost(exc)


def _httptools_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(_Deadlines, HttpToolsProtocol):
        def _count(self, *parts: bytes) -> None:
            self._head_bytes += sum(len(p) for p in parts)
            if self._head_bytes > MAX_HEADER_BYTES:
                raise HeadTooLarge(f"request head over {MAX_HEADER_BYTES:,} bytes")

        def on_url(self, url: bytes) -> None:
            self._count(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(name, value, b": \r\n")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_arrived()
            super().on_headers_complete()

    return Protocol
