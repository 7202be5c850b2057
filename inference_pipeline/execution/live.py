"""Live sessions: the book's frames (``book-updates``) and its 4 s feature rows (``book-features``) off the topics,
merged into one stream of market events and decisions in the order a backtest of the same data sees them; and a
pair's closed candles off the ``features`` topic (`CandleFeed`), for the strategies that trade candles; and the pair
jobs' spread rows, with their legs' candles, for the pairs strategy (`PairRowFeed`).

The order is a backtest's: every frame stamped at or before a sample's time,
then the decision on that sample, then later frames. The two topics are read
independently, so `EventMerger` holds each side back until the other proves
it safe: a frame waits until a feature row at or after its time has arrived
(rows come in time order, so none can come before it any more), and a
decision waits until a frame after its time has arrived (the feature pipeline
makes the row of a sample on the first frame at or after it, and every frame
before that is on the topic before it). A finite run's end marker lets
everything out. Replayed from the topics, a session therefore gives the same
orders and fills as the backtest of the same file.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from coinflow.books import CONTROL_RESET, FRAME_SNAPSHOT, FRAME_UPDATE, frame_sides
from coinflow.quality import Rejects
from coinflow.schemas import CONTROL_END, invalid_candle_reason
from coinflow.trading.steps import printed
from inference_pipeline.execution.session import BookEvent, CandleEvent, DecisionEvent, MarketEvent

logger = logging.getLogger(__name__)


class EventMerger:
    """Releases market events and decisions of one book in backtest order (see the module docstring)."""

    def __init__(self) -> None:
        self._market: deque[MarketEvent] = deque()
        self._decisions: deque[DecisionEvent] = deque()
        self._latest_market_ms: int | None = None
        self._latest_decision_ms: int | None = None

    def market(self, event: MarketEvent) -> list[MarketEvent]:
        self._market.append(event)
        self._latest_market_ms = max(event.at_ms, self._latest_market_ms or event.at_ms)
        return self._release()

    def decision(self, event: DecisionEvent) -> list[MarketEvent]:
        self._decisions.append(event)
        self._latest_decision_ms = event.at_ms
        return self._release()

    def finish(self) -> list[MarketEvent]:
        """Everything still held, in order (the input has ended)."""
        return self._release(final=True)

    def _release(self, final: bool = False) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        while self._market or self._decisions:
            market = self._market[0] if self._market else None
            decision = self._decisions[0] if self._decisions else None
            if market is not None and (decision is None or market.at_ms <= decision.at_ms):
                # a frame goes once no decision at or before it can still come
                if (
                    not final
                    and decision is None
                    and (self._latest_decision_ms is None or self._latest_decision_ms < market.at_ms)
                ):
                    break
                out.append(self._market.popleft())
            else:
                assert decision is not None
                # a decision goes once every frame at or before it has come
                if not final and (self._latest_market_ms is None or self._latest_market_ms <= decision.at_ms):
                    break
                out.append(self._decisions.popleft())
        return out


def frame_event(record: Mapping[str, Any], rejects: Rejects) -> BookEvent | str | None:
    """A ``book-updates`` record as a book event (a reset: an empty snapshot, the book gone until the next one),
    ``"end"`` for an end marker, None for what the session does not need (ticks); bad frames are counted."""
    control = record.get("control")
    if control == CONTROL_END:
        return CONTROL_END
    if control == CONTROL_RESET:
        return BookEvent(str(record.get("product", "")), True, (), (), int(record["timestamp_ms"]))
    if control is not None:
        return None
    kind = record.get("kind")
    sides = frame_sides(record.get("bids"), record.get("asks"))
    if kind not in (FRAME_SNAPSHOT, FRAME_UPDATE) or isinstance(sides, str) or record.get("partial"):
        rejects.reject("unusable_frame" if isinstance(sides, str) or kind not in (FRAME_SNAPSHOT, FRAME_UPDATE)
                       else "partial_snapshot", str(record)[:200])  # fmt: skip
        return None
    return BookEvent(str(record["product"]), kind == FRAME_SNAPSHOT, sides[0], sides[1], int(record["timestamp_ms"]))


def decision_event(record: Mapping[str, Any], product: str, features: list[str]) -> DecisionEvent:
    """A ``book-features`` row as the decision on its sample (a feature without a value, null in JSON, is NaN, as
    in the offline store)."""
    values = {name: record.get(name) for name in features}
    return DecisionEvent(
        product, int(record["window_end_ms"]), {k: float("nan") if v is None else float(v) for k, v in values.items()}
    )


class LiveFeed:
    """One book's topics into a session: `on_frame` and `on_features` take the topics' records and hand the merged
    events to `deliver`; `on_end` is called once a finite input's end markers (one on each topic) have let
    everything out."""

    def __init__(
        self,
        book: str,
        features: list[str],
        deliver: Callable[[MarketEvent], None],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.book = book
        self.product = book.partition(":")[2]
        self.features = features
        self.deliver = deliver
        self.on_end = on_end
        self.merger = EventMerger()
        self.rejects = Rejects("trading_feed")
        self._ends: set[str] = set()

    @property
    def ended(self) -> bool:
        return self._ends == {"frames", "features"}

    def on_frame(self, record: Mapping[str, Any], key: str | None) -> None:
        if key != self.book or "frames" in self._ends:
            return
        event = frame_event(record, self.rejects)
        if event == CONTROL_END:
            self._end("frames")
        elif isinstance(event, BookEvent):
            self._deliver(self.merger.market(event))

    def on_features(self, record: Mapping[str, Any], key: str | None) -> None:
        if key != self.book or "features" in self._ends:
            return
        if record.get("control") == CONTROL_END:
            self._end("features")
        elif "window_end_ms" in record:
            self._deliver(self.merger.decision(decision_event(record, self.product, self.features)))

    def _end(self, side: str) -> None:
        """A finite input ends when both topics have brought its end marker: then everything held goes out."""
        self._ends.add(side)
        if self.ended:
            self._deliver(self.merger.finish())
            if self.on_end is not None:
                self.on_end()

    def _deliver(self, events: list[MarketEvent]) -> None:
        for event in events:
            self.deliver(event)


class CandleFeed:
    """One pair's closed candles into a session, from the ``features`` topic: the candle pipeline's row of each
    closed candle holds its OHLCV and its indicators (the price model's features), so one topic brings both and no
    merge is needed. Each row of the pair and `interval` becomes a `CandleEvent` at its window end (prices as the
    floats print, as a backtest reads them from the offline store), then the `DecisionEvent` on that row at the
    same millisecond. Rows of other pairs or intervals are ignored; a row that is no usable candle
    (`invalid_candle_reason`: missing or non-positive prices, a bad window, ...) or not after the last one (a
    duplicate, out of order) is counted in `rejects` and skipped. The candle pipeline keeps its end markers off
    this topic, so a session over it runs until stopped; an end marker of the pair (``{"control": "end", "pair":
    ...}``, which a replay may publish) ends a finite input."""

    def __init__(
        self,
        pair: str,
        interval: str,
        features: list[str],
        deliver: Callable[[MarketEvent], None],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.pair, self.interval, self.features = pair, interval, features
        self.deliver = deliver
        self.on_end = on_end
        self.rejects = Rejects("trading_candle_feed")
        self.ended = False
        self._last_ms: int | None = None

    def on_features(self, record: Mapping[str, Any], key: str | None = None) -> None:
        if self.ended:
            return
        if not isinstance(record, Mapping):
            self.rejects.reject("not_an_object", str(record)[:200])
            return
        if record.get("pair") != self.pair:
            return
        if record.get("control") == CONTROL_END:
            self.ended = True
            if self.on_end is not None:
                self.on_end()
            return
        if record.get("control") is not None:
            return
        reason = invalid_candle_reason(record)
        if reason is not None:
            self.rejects.reject(reason, record)
            return
        if record["interval"] != self.interval:
            return
        at_ms = record["window_end_ms"]
        if self._last_ms is not None and at_ms <= self._last_ms:
            self.rejects.reject("stale_candle", record)
            return
        self._last_ms = at_ms
        o, h, low, c = (printed(record[name]) for name in ("open", "high", "low", "close"))
        self.deliver(CandleEvent(self.pair, o, h, low, c, at_ms))
        self.deliver(decision_event(record, self.pair, self.features))


PAIR_ROW_FEATURES = ("z", "spread", "beta", "half_life")


def pair_row_events(
    record: Mapping[str, Any], legs: tuple[str, str]
) -> tuple[CandleEvent, CandleEvent, DecisionEvent] | str:
    """A pair job's row as its legs' candles as the job joined them (each at its own close time, the close as its
    whole range) and the pair's decision at y's close; or why it is no usable row."""
    at_ms, lag = record.get("window_end_ms"), record.get("x_lag_s")
    if not isinstance(at_ms, int) or not isinstance(lag, int | float) or not math.isfinite(lag) or lag < 0:
        return "bad_time"
    closes = [record.get("y_close"), record.get("x_close")]
    if not all(isinstance(c, int | float) and math.isfinite(c) and c > 0 for c in closes):
        return "bad_price"
    y, x = (printed(float(c)) for c in closes)  # type: ignore[arg-type]
    features = {name: math.nan if record.get(name) is None else float(record[name]) for name in PAIR_ROW_FEATURES}
    return (
        CandleEvent(legs[0], y, y, y, y, at_ms),
        CandleEvent(legs[1], x, x, x, x, at_ms - round(lag * 1000)),
        DecisionEvent(record["pair_id"], at_ms, features, legs),
    )


class PairRowFeed:
    """The pair jobs' rows (the ``pair-spread`` topic) of the configuration's pairs into a session: each row's legs'
    candles, then the pair's decision (`pair_row_events`). Rows of other pairs are ignored; an unusable row, or one
    not after the pair's last, is counted in `rejects` and skipped; an end marker (``{"control": "end"}``, which a
    replay may publish) ends a finite input."""

    def __init__(
        self,
        pairs: Mapping[str, tuple[str, str]],
        deliver: Callable[[MarketEvent], None],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.pairs = pairs
        self.deliver = deliver
        self.on_end = on_end
        self.rejects = Rejects("trading_pair_feed")
        self.ended = False
        self._last_ms: dict[str, int] = {}

    def on_row(self, record: Mapping[str, Any], key: str | None = None) -> None:
        if self.ended:
            return
        if not isinstance(record, Mapping):
            self.rejects.reject("not_an_object", str(record)[:200])
            return
        if record.get("control") == CONTROL_END:
            self.ended = True
            if self.on_end is not None:
                self.on_end()
            return
        pair = record.get("pair_id")
        if not isinstance(pair, str) or pair not in self.pairs:
            return
        events = pair_row_events(record, self.pairs[pair])
        if isinstance(events, str):
            self.rejects.reject(events, record)
            return
        last = self._last_ms.get(pair)
        if last is not None and events[2].at_ms <= last:
            self.rejects.reject("stale_row", record)
            return
        self._last_ms[pair] = events[2].at_ms
        for event in events:
            self.deliver(event)
