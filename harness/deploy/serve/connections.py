"""Connections that cannot hold the server: a deadline for each request's headers, a cap
on open connections, and a cap on header size.

uvicorn (0.54) closes idle keep-alive connections but sets no deadline on headers that
never finish, nor on a bare connect, and its default httptools parser takes headers of
any size: 1,500 slow sockets held 1,517 file descriptors, and a 64 MB header was read. So
the server speaks HTTP/1.1 through h11 (whose parser refuses an unfinished request head
over ``MAX_HEADER_BYTES``), in a protocol that closes a connection whose request head has
not arrived within ``header_timeout_s`` of its first byte (or of the connect), and that
closes at once any connection beyond ``max_connections``. The body's own deadline is the
upload reader's (:mod:`.uploads`), where a 408 can still be answered.
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 32 * 1024   # request line and headers; browsers send a few KB


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """An ``http=`` protocol class for ``uvicorn.run`` with these limits."""

    class Guarded(_Guarded):
        header_timeout = header_timeout_s
        connection_limit = max_connections

    return Guarded


class _Guarded(H11Protocol):
    header_timeout: float
    connection_limit: int

    def connection_made(self, transport) -> None:
        self._head_deadline: asyncio.TimerHandle | None = None
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
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self._between_requests() and not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._between_requests():
            self._await_head()   # from a request's first byte (after keep-alive) to its last header
        super().data_received(data)
        if self.cycle is not before:
            self._head_arrived()

    def connection_lost(self, exc) -> None:
        self._head_arrived()
        super().connection_lost(exc)
