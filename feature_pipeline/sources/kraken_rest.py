"""Kraken REST trades backfill: a polite client, a resumable paginator and the Quix source."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
from tqdm import tqdm

from coinflow.quality import DEAD_LETTER_MAX_BYTES, Rejects
from coinflow.schemas import Control, Trade
from feature_pipeline.sources.base import RecordSource
from feature_pipeline.sources.kraken_protocol import (
    RATE_LIMIT_ERROR,
    RestTradesPage,
    parse_rest_trades,
    rest_pair,
)

logger = logging.getLogger(__name__)

TRADES_PATH = "/0/public/Trades"
_NS_PER_MS = 1_000_000
_DAY_MS = 86_400_000
# Answers that say "later", not "never".
_TRANSIENT_ERRORS = (RATE_LIMIT_ERROR, "EService:Unavailable", "EService:Busy", "EGeneral:Too many requests")


class KrakenApiError(RuntimeError):
    """Kraken refused a request for good (unknown pair, bad argument) or retries ran out."""


class KrakenRestClient:
    """Kraken's public Trades endpoint, at most one call per ``min_interval_s``.

    Rate-limit and service errors, HTTP 429/5xx, timeouts and connection errors
    are retried after ``backoff_initial_s``, doubling up to ``backoff_max_s``,
    for ``max_attempts`` calls in all; other API errors raise `KrakenApiError`
    at once. ``sleep`` does every wait (tests and stoppable sources pass their own).
    """

    def __init__(
        self,
        base_url: str = "https://api.kraken.com",
        *,
        min_interval_s: float = 1.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.min_interval_s = min_interval_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.calls = 0
        self._sleep = sleep
        self._last_call: float | None = None
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)

    def __enter__(self) -> KrakenRestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def trades(self, pair: str, since_ns: int | None = None) -> RestTradesPage:
        """The page of ``pair``'s trades after ``since_ns`` (Kraken returns up to 1000)."""
        params = {"pair": rest_pair(pair)}
        if since_ns is not None:
            params["since"] = str(since_ns)
        for attempt in range(1, self.max_attempts + 1):
            outcome = self._try(pair, params)
            if isinstance(outcome, RestTradesPage):
                return outcome
            if attempt == self.max_attempts:
                break
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
            logger.warning("Kraken Trades %s: %s; retrying in %.1f s", params["pair"], outcome, delay)
            self._sleep(delay)
        raise KrakenApiError(
            f"Kraken Trades for {pair} ({params['pair']}) failed {self.max_attempts} times; last: {outcome}"
        )

    def _try(self, pair: str, params: dict[str, str]) -> RestTradesPage | str:
        """One call: the page, or what went wrong if trying again may help."""
        self._wait_turn()
        try:
            response = self._http.get(TRADES_PATH, params=params)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            return f"{type(exc).__name__}: {exc}"
        if response.status_code == 429 or response.status_code >= 500:
            return f"HTTP {response.status_code}"
        if response.status_code >= 400:
            raise KrakenApiError(
                f"Kraken answered HTTP {response.status_code} for {pair} ({params['pair']}): {response.text[:200]}"
            )
        try:
            page = parse_rest_trades(response.content, pair)
        except ValueError as exc:
            return f"unreadable response ({exc})"
        if not page.errors:
            return page
        if all(error.startswith(_TRANSIENT_ERRORS) for error in page.errors):
            return ", ".join(page.errors)
        raise KrakenApiError(
            f"Kraken rejected the trades request for {pair} ({params['pair']}): {', '.join(page.errors)}"
        )

    def _wait_turn(self) -> None:
        if self._last_call is not None:
            wait = self._last_call + self.min_interval_s - time.monotonic()
            if wait > 0:
                self._sleep(wait)
        self._last_call = time.monotonic()
        self.calls += 1


def load_checkpoint(path: Path) -> dict[str, dict[str, int]]:
    """The backfill cursors by pair: ``{"BTC/USD": {"since_ns": ..., "last_trade_id": ...}}``."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable backfill checkpoint ({exc}); delete it to start over") from exc


def save_checkpoint(path: Path, pair: str, since_ns: int, last_trade_id: int) -> None:
    """Record a pair's cursor, atomically (temp file + rename)."""
    state = load_checkpoint(path)
    state[pair] = {"since_ns": since_ns, "last_trade_id": last_trade_id}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(temp, path)


def backfill_trades(
    client: KrakenRestClient,
    pair: str,
    start_ms: int,
    end_ms: int,
    checkpoint_path: Path | None,
    *,
    rejects: Rejects | None = None,
    progress: bool = True,
) -> Iterator[list[Trade]]:
    """``pair``'s trades with ``start_ms <= time < end_ms``, oldest first, one batch per page.

    Pages follow Kraken's ``last`` cursor. With a checkpoint file, a pair's
    cursor resumes from it and is saved after each batch has been consumed (the
    generator resumed), so a batch whose consumer failed is fetched again:
    at-least-once, with trade ids never repeated within one resumed run.
    Bad rows go to ``rejects``.
    """
    if rejects is None:
        rejects = Rejects("kraken_rest")
    since = start_ms * _NS_PER_MS - 1
    last_id = -1
    saved = load_checkpoint(checkpoint_path).get(pair) if checkpoint_path else None
    if saved and saved["since_ns"] > since:
        since, last_id = saved["since_ns"], saved["last_trade_id"]
        logger.info("Resuming the %s backfill from its checkpoint (trade id %d)", pair, last_id)
    end_ns = end_ms * _NS_PER_MS - 1
    if since >= end_ns:
        return

    def seconds_done() -> float:
        return max(0, min(end_ms, since // _NS_PER_MS) - start_ms) / 1000

    with tqdm(total=(end_ms - start_ms) / 1000, desc=f"{pair} backfill", unit="s", disable=not progress) as bar:
        bar.update(seconds_done())
        while True:
            page = client.trades(pair, since)
            for reason, row in page.rejects:
                rejects.reject(reason, row)
            batch: list[Trade] = []
            reached_end = False
            for trade in page.trades:
                if trade["timestamp_ms"] >= end_ms:
                    reached_end = True
                    break
                if trade["trade_id"] > last_id and trade["timestamp_ms"] >= start_ms:
                    batch.append(trade)
            next_since = since if page.last is None else page.last
            caught_up = not page.trades or next_since <= since
            if reached_end:
                since = end_ns
            elif not caught_up:
                since = next_since
            if batch:
                last_id = batch[-1]["trade_id"]
                yield batch
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, pair, since, last_id)
            bar.update(seconds_done() - bar.n)
            if reached_end or caught_up:
                return


class KrakenRestSource(RecordSource):
    """Backfills the last ``days`` of trades of several pairs from Kraken REST onto the trades topic.

    Trades are keyed by pair and stamped with the trade time; after each pair an
    ``end`` control record stamped ``last trade time + close_after_ms`` (the end
    of the range, now, when the pair had no new trades) closes its last windows
    and, carrying ``run_id``, tells the pipeline that the pair is complete.
    Progress is checkpointed per pair in ``checkpoint_path``; the producer is
    flushed before the cursor moves past a page. Rejected rows go to
    ``dead_letter_topic``.
    """

    def __init__(
        self,
        pairs: Sequence[str],
        days: float,
        checkpoint_path: Path,
        dead_letter_topic: str,
        *,
        close_after_ms: int,
        run_id: str,
        base_url: str = "https://api.kraken.com",
        min_interval_s: float = 1.0,
        progress: bool = True,
        transport: httpx.BaseTransport | None = None,
        name: str = "kraken-rest-trades",
        shutdown_timeout: float = 10.0,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        super().__init__(name, dead_letter_topic, shutdown_timeout, dead_letter_max_bytes)
        self.pairs = list(pairs)
        self.days = days
        self.checkpoint_path = Path(checkpoint_path)
        self.close_after_ms = close_after_ms
        self.run_id = run_id
        self.base_url = base_url
        self.min_interval_s = min_interval_s
        self.progress = progress
        self.transport = transport

    def run(self) -> None:
        rejects = Rejects("kraken_rest", forward=self.produce_dead_letter)
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - int(self.days * _DAY_MS)
        client = KrakenRestClient(
            self.base_url,
            min_interval_s=self.min_interval_s,
            transport=self.transport,
            sleep=self._sleep_while_running,
        )
        with client:
            for pair in self.pairs:
                end_marker_ms = end_ms
                for batch in backfill_trades(
                    client, pair, start_ms, end_ms, self.checkpoint_path, rejects=rejects, progress=self.progress
                ):
                    for trade in batch:
                        self.produce_record(pair, trade, trade["timestamp_ms"])
                    self.flush()
                    end_marker_ms = batch[-1]["timestamp_ms"] + self.close_after_ms
                    if not self.running:
                        break
                if not self.running:
                    logger.info("Kraken backfill stopped during %s", pair)
                    return
                end = Control(control="end", pair=pair, timestamp_ms=end_marker_ms, run_id=self.run_id)
                self.produce_record(pair, end, end["timestamp_ms"])
                logger.info("Kraken backfill of %s done", pair)
        logger.info("Kraken backfill finished; %s", rejects.summary())

    def _sleep_while_running(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
