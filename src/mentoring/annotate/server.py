"""uvicorn's h11 protocol with a request-header timeout (uvicorn has none of its own).

A client that opens a connection and sends its request headers slowly, or never finishes them
(slowloris), holds a connection for as long as it likes under plain uvicorn: its keep-alive
timer only runs between requests. Here the headers of each request must be complete within
``timeout_s`` of the connection (or of the previous response); else the connection is closed.

Example:
    >>> uvicorn.run(app, http=header_timeout_protocol(10.0))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("mentoring.annotate")


def header_timeout_protocol(timeout_s: float) -> type[H11Protocol]:
    """An :class:`H11Protocol` that drops a client whose request headers take over
    ``timeout_s`` seconds."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.warning("dropped %s: request headers not complete in %g s", self.client,
                            timeout_s)  # fmt: skip
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()  # a client that connects and sends nothing is dropped too

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # from the first byte of a request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
