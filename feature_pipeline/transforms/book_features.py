"""Order-book features sampled on a fixed clock, as pure code.

Every ``sample_ms`` (4 s) of exchange time, at the END of each window, a
product's book is sampled as it stood then (after every frame stamped before
the window end, before any stamped at or after it), so a row only holds what
was known at its timestamp:

- ``bid_share_00..19`` / ``ask_share_00..19``: the bids within 2 % below (the
  offers within 2 % above) the median price (mid of best bid and best offer),
  in 0.1 % buckets counted away from it, each bucket's share of the side's
  quantity within those 2 % (the 20 shares of a side sum to 1); averaged over
  the last 3 samples of the book (fewer while it is younger);
- ``mid_30s_0..9``: the median price at the last 10 boundaries of a 30 s clock
  at or before the row's time (``_0`` the latest): the last 5 minutes; NaN
  where the book was not known then;
- ``mid``, ``spread``, ``microprice``, ``imbalance`` (top N levels per side) at
  the sample time.

A book that is dropped (resync, disconnect) yields no rows until it is rebuilt,
and its averages start afresh.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from decimal import Decimal

from coinflow.books import OrderBook, imbalance, microprice
from feature_repo.names import ASK_SHARE_FEATURES, BID_SHARE_FEATURES, BOOK_ENTITY, MID_HISTORY_FEATURES

BUCKETS = len(BID_SHARE_FEATURES)
BUCKET_WIDTH = Decimal("0.001")
MID_EVERY_MS = 30_000
AVERAGED_SAMPLES = 3


def depth_shares(book: OrderBook, mid: Decimal) -> tuple[list[float], list[float]]:
    """Each side's quantity within ``BUCKETS`` x 0.1 % of ``mid``, per bucket, as shares of that side's total."""
    width = mid * BUCKET_WIDTH
    reach = width * BUCKETS
    bids = [Decimal(0)] * BUCKETS
    asks = [Decimal(0)] * BUCKETS
    for price, qty in book.bids_down_to(mid - reach):
        bucket = int((mid - price) / width)
        if bucket < BUCKETS:
            bids[bucket] += qty
    for price, qty in book.asks_up_to(mid + reach):
        bucket = int((price - mid) / width)
        if bucket < BUCKETS:
            asks[bucket] += qty
    return _shares(bids), _shares(asks)


def _shares(quantities: list[Decimal]) -> list[float]:
    total = sum(quantities)
    return [float(q / total) if total else 0.0 for q in quantities]


def boundaries(after_ms: int, until_ms: int, every_ms: int) -> Iterator[int]:
    """Multiples of ``every_ms`` in (after_ms, until_ms]."""
    first = (after_ms // every_ms + 1) * every_ms
    return iter(range(first, until_ms + 1, every_ms))


class BookSampler:
    """The feature clock of one book: call `advance` before applying each frame, `reset` when the book is dropped."""

    def __init__(self, key: str, sample_ms: int = 4000, imbalance_levels: int = 10) -> None:
        self.key = key
        self.sample_ms = sample_ms
        self.imbalance_levels = imbalance_levels
        self.clock_ms: int | None = None
        self._mids: deque[tuple[int, float]] = deque(maxlen=len(MID_HISTORY_FEATURES))
        self._shares: deque[tuple[list[float], list[float]]] = deque(maxlen=AVERAGED_SAMPLES)

    def advance(self, book: OrderBook | None, until_ms: int) -> list[dict]:
        """Close every boundary up to ``until_ms`` with the book as it is now; returns the feature rows due."""
        if self.clock_ms is None:
            self.clock_ms = until_ms
            return []
        if until_ms <= self.clock_ms:
            return []
        rows = []
        due = sorted(
            set(boundaries(self.clock_ms, until_ms, MID_EVERY_MS))
            | set(boundaries(self.clock_ms, until_ms, self.sample_ms))
        )
        mid = _mid(book)
        for boundary in due:
            if boundary % MID_EVERY_MS == 0:
                self._mids.append((boundary, float(mid) if mid is not None else math.nan))
            if boundary % self.sample_ms == 0 and book is not None and mid is not None:
                rows.append(self._sample(book, mid, boundary))
        self.clock_ms = until_ms
        return rows

    def reset(self) -> None:
        """The book is gone: averages start afresh with the next one."""
        self._shares.clear()

    def _sample(self, book: OrderBook, mid: Decimal, at_ms: int) -> dict:
        self._shares.append(depth_shares(book, mid))
        n = len(self._shares)
        bid_avg = [sum(s[0][i] for s in self._shares) / n for i in range(BUCKETS)]
        ask_avg = [sum(s[1][i] for s in self._shares) / n for i in range(BUCKETS)]
        mids = [m for _, m in reversed(self._mids)]
        mids += [math.nan] * (len(MID_HISTORY_FEATURES) - len(mids))
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None, "a book with a mid has both sides"
        row = {
            BOOK_ENTITY: self.key,
            "window_end_ms": at_ms,
            "mid": float(mid),
            "spread": float(ask[0] - bid[0]),
            "microprice": microprice(bid, ask),
            "imbalance": imbalance(book, self.imbalance_levels),
        }
        row.update(zip(BID_SHARE_FEATURES, bid_avg, strict=True))
        row.update(zip(ASK_SHARE_FEATURES, ask_avg, strict=True))
        row.update(zip(MID_HISTORY_FEATURES, mids, strict=True))
        return row


def _mid(book: OrderBook | None) -> Decimal | None:
    if book is None:
        return None
    bid, ask = book.best_bid(), book.best_ask()
    if bid is None or ask is None or bid[0] >= ask[0]:
        return None
    return (bid[0] + ask[0]) / 2
