"""Running the service with uvicorn, with slow and stalled clients dropped in bounded time.

uvicorn (0.54, h11) never times out a connection that is still sending its request: one that
sends its headers a byte at a time, half a body, or nothing at all stays open for good, holding
a file descriptor. :class:`BoundedH11Protocol` adds two deadlines to uvicorn's h11 protocol:

- ``header_timeout_s``: from the connection's first byte of a request (or from its opening)
  until the request's headers are complete;
- ``body_timeout_s``: from then until the whole body has arrived.

A client that misses one gets ``408`` (when no answer has started) and the connection is closed.
Between requests uvicorn's own keep-alive timeout (``keep_alive_timeout_s``) closes idle
connections, and ``max_connections`` (uvicorn's ``limit_concurrency``) answers 503 to requests
beyond that many open connections or requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from finalmlp.serve.settings import ServeSettings


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read deadlines (class attributes)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_phase: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:  # part of a request's headers
            if self._read_phase != "headers":
                self._arm("headers")
        elif state is h11.SEND_BODY:
            if self._read_phase != "body":
                self._arm("body")
        else:  # the request is complete (or the connection is done): the app has it
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # between requests: uvicorn's keep-alive timeout
        super().on_response_complete()

    def _arm(self, phase: str) -> None:
        self._disarm()
        seconds = self.header_timeout_s if phase == "headers" else self.body_timeout_s
        self._read_phase = phase
        self._read_timer = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = None
        self._read_phase = None

    def _expired(self, phase: str) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        seconds = self.header_timeout_s if phase == "headers" else self.body_timeout_s
        answering = self.cycle is not None and self.cycle.response_started
        if phase == "headers" or not answering:
            message = f"request {phase} not received within {seconds:g} s"
            body = json.dumps({"detail": {"message": message}}).encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        self.transport.close()


def protocol_class(settings: ServeSettings) -> type[BoundedH11Protocol]:
    """A BoundedH11Protocol with the settings' deadlines."""
    return type(
        "ServeH11Protocol",
        (BoundedH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
        },
    )


def uvicorn_config(app: Any, host: str, port: int, settings: ServeSettings) -> uvicorn.Config:
    """uvicorn's config for the service: bounded reads, keep-alive and connections."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(settings),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
        log_level="warning",
        access_log=False,
    )


def serve_forever(app: Any, host: str, port: int, settings: ServeSettings) -> None:
    """Run the app until interrupted (the CLI's ``finalmlp serve``)."""
    uvicorn.Server(uvicorn_config(app, host, port, settings)).run()


@contextmanager
def serve_in_thread(
    app: Any, settings: ServeSettings, host: str = "127.0.0.1", start_timeout_s: float = 20.0
) -> Iterator[int]:
    """Serve the app from a background thread on a free port, yielded, until the block ends
    (a real socket in the same process: the hostile-client tests and fuzz run use it).

    Raises:
        RuntimeError: the server did not start within ``start_timeout_s``.
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(app, host, port, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            raise RuntimeError(f"the server on {host}:{port} did not start")
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
