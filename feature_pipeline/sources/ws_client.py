"""The reconnect loop shared by the exchange WebSocket clients.

A client connects, runs one session (subscribe, read frames) until the
connection ends, and reconnects after a full-jitter exponential delay that
starts at ``reconnect_initial_s``, doubles up to ``reconnect_max_s`` and is
reset by the subclass once a connection has proved good (an ack or data).
A frame that fails to be handled all the same (a bug, a record the broker
refuses) is a counted reject, never the end of the stream. Use from one event
loop: `run` until `stop`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from coinflow.quality import Rejects

logger = logging.getLogger(__name__)

# What ends one connection and calls for the next; anything else is a bug and propagates.
CONNECTION_ERRORS = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake)


def backoff_delay(attempt: int, initial_s: float, max_s: float, draw: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: ``draw() * min(max_s, initial_s * 2**attempt)``."""
    return draw() * min(max_s, initial_s * 2**attempt)


@dataclass
class ConnectionStats:
    """``connects`` counts opened connections, ``reconnects`` those after the first; ``delays`` every delay drawn."""

    connects: int = 0
    reconnects: int = 0
    silences: int = 0
    failed_frames: int = 0
    delays: list[float] = field(default_factory=list)


Stats = TypeVar("Stats", bound=ConnectionStats)


class ReconnectingClient(Generic[Stats]):
    """Base of the exchange clients: subclasses implement `_session` and `_dispatch`, and call
    `_connection_proved_good`; their sessions hand each frame to `_handle`. ``stats`` is the client's own kind of
    `ConnectionStats`."""

    name = "WebSocket"

    def __init__(
        self,
        url: str,
        stats: Stats,
        rejects: Rejects,
        *,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.stats = stats
        self._rejects = rejects
        self._initial_s = reconnect_initial_s
        self._max_s = reconnect_max_s
        self._silence_s = silence_timeout_s
        self._open_timeout_s = open_timeout_s
        self._draw = draw
        self._attempt = 0
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """Ask `run` to close the connection and return."""
        self._stopped.set()

    async def _session(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def _dispatch(self, frame: str | bytes) -> None:
        """Act on one frame (parse it, pass its records on, reject its bad parts)."""
        raise NotImplementedError

    def _handle(self, frame: str | bytes) -> None:
        """`_dispatch` one frame; should it fail, the frame is rejected (the first failure logged in full)."""
        try:
            self._dispatch(frame)
        except Exception:
            self.stats.failed_frames += 1
            if self.stats.failed_frames == 1:
                logger.exception("%s frame from %s could not be handled; rejected", self.name, self.url)
            self._rejects.reject("unhandled_frame", frame)

    def _connection_ended(self) -> None:
        """Called after every connection, however it ended."""

    def _connection_proved_good(self) -> None:
        self._attempt = 0

    async def run(self) -> None:
        """Connect and run sessions, reconnecting until `stop` is called (a session may call it too)."""
        while not self._stopped.is_set():
            try:
                async with connect(self.url, open_timeout=self._open_timeout_s, close_timeout=1.0, max_size=None) as ws:
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        self.stats.reconnects += 1
                    logger.info("Connected to %s (connection %d)", self.url, self.stats.connects)
                    await self._until_stopped(self._session(ws))
            except CONNECTION_ERRORS as exc:
                logger.warning("%s connection to %s ended: %r", self.name, self.url, exc)
            finally:
                self._connection_ended()
            if self._stopped.is_set():
                break
            delay = backoff_delay(self._attempt, self._initial_s, self._max_s, self._draw)
            self._attempt += 1
            self.stats.delays.append(delay)
            logger.info("Reconnecting to %s in %.2f s", self.url, delay)
            await self._until_stopped(asyncio.sleep(delay))

    async def _until_stopped(self, work: Awaitable[None]) -> None:
        """Await ``work`` unless `stop` comes first (then cancel it); its errors propagate."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopped):
                pending.cancel()
            await asyncio.gather(stopped, return_exceptions=True)
        if task.done() and not task.cancelled():
            task.result()
        else:
            await asyncio.gather(task, return_exceptions=True)

    async def _frames(self, ws: ClientConnection):
        """The connection's frames; ends (counting a silence) after ``silence_timeout_s`` without one."""
        while True:
            try:
                async with asyncio.timeout(self._silence_s):
                    frame = await ws.recv()
            except TimeoutError:
                self.stats.silences += 1
                logger.warning("No frame from %s for %.1f s; reconnecting", self.url, self._silence_s)
                return
            yield frame
