"""A level-2 order book, the book-state record and the wire form of book frames, as pure code.

Shared by the feature pipeline (which builds books from the exchanges' frames
and publishes book states) and the inference pipeline's paper venue (which
fills orders against books built from the same frames): the ``book-updates``
and ``book`` topics' records are a contract between the pipelines.

Prices and quantities are exact ``decimal.Decimal`` values (no float keys:
``0.1 + 0.2`` must not open a new level). Each side is a
``sortedcontainers.SortedDict`` keyed by price, so an update is O(log n), the
best level is O(log n) and the top N levels are read by walking the sorted
keys, never by copying the book. A quantity of zero removes the level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Final, Literal, NotRequired, TypedDict

from sortedcontainers import SortedDict

BookSide = Literal["bid", "ask"]
Level = tuple[Decimal, Decimal]


class OrderBook:
    """Bids and asks of one (exchange, product); ``depth`` truncates each side after every update (None: keep all)."""

    __slots__ = ("asks", "bids", "depth")

    def __init__(self, depth: int | None = None) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.depth = depth

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def set_level(self, side: BookSide, price: Decimal, qty: Decimal) -> None:
        """Set one level's quantity (zero removes it); quantities are validated by the parsers."""
        levels = self.bids if side == "bid" else self.asks
        if qty:
            levels[price] = qty
        else:
            levels.pop(price, None)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> int:
        """Apply one frame's level changes in order, then truncate to ``depth``; returns the changes applied."""
        n = 0
        for side, changes in (("bid", bids), ("ask", asks)):
            levels = self.bids if side == "bid" else self.asks
            for price, qty in changes:
                if qty:
                    levels[price] = qty
                else:
                    levels.pop(price, None)
                n += 1
        if self.depth is not None:
            self.truncate(self.depth)
        return n

    def truncate(self, depth: int) -> None:
        """Drop levels beyond ``depth`` per side (exchanges send no deletes for levels that fall out of scope)."""
        while len(self.bids) > depth:
            self.bids.popitem(0)
        while len(self.asks) > depth:
            self.asks.popitem(-1)

    def best_bid(self) -> Level | None:
        return self.bids.peekitem(-1) if self.bids else None

    def best_ask(self) -> Level | None:
        return self.asks.peekitem(0) if self.asks else None

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a book that must not be emitted)."""
        return bool(self.bids and self.asks) and self.bids.peekitem(-1)[0] >= self.asks.peekitem(0)[0]

    def top_bids(self, n: int) -> Iterator[Level]:
        """The best ``n`` bids, best first."""
        bids = self.bids
        return ((price, bids[price]) for price in islice(reversed(bids), n))

    def top_asks(self, n: int) -> Iterator[Level]:
        """The best ``n`` asks, best first."""
        asks = self.asks
        return ((price, asks[price]) for price in islice(asks, n))

    def bids_down_to(self, floor: Decimal) -> Iterator[Level]:
        """Bids at or above ``floor``, best first."""
        bids = self.bids
        return ((price, bids[price]) for price in bids.irange(minimum=floor, reverse=True))

    def asks_up_to(self, ceiling: Decimal) -> Iterator[Level]:
        """Asks at or below ``ceiling``, best first."""
        asks = self.asks
        return ((price, asks[price]) for price in asks.irange(maximum=ceiling))


class BookState(TypedDict):
    """Top of one book after one frame: what the ``book`` topic carries.

    ``sequence_num`` is the exchange's sequence number of the frame (Coinbase),
    ``checksum_ok`` whether the exchange's checksum of the frame matched the
    book (Kraken; None where the exchange sends none). ``timestamp_ms`` is the
    frame's exchange time.
    """

    exchange: str
    product: str
    best_bid: float
    best_ask: float
    best_bid_qty: float
    best_ask_qty: float
    mid: float
    spread: float
    microprice: float
    imbalance: float
    levels: int
    sequence_num: int | None
    checksum_ok: bool | None
    timestamp_ms: int


def microprice(bid: Level, ask: Level) -> float:
    """The quantity-weighted mid: nearer the side with less quantity (the one more likely to be taken)."""
    (bid_px, bid_qty), (ask_px, ask_qty) = bid, ask
    return float((bid_px * ask_qty + ask_px * bid_qty) / (bid_qty + ask_qty))


def imbalance(book: OrderBook, levels: int) -> float:
    """(bid qty - ask qty) / (bid qty + ask qty) over the top ``levels`` of each side, in [-1, 1]."""
    bid_qty = sum(qty for _, qty in book.top_bids(levels))
    ask_qty = sum(qty for _, qty in book.top_asks(levels))
    total = bid_qty + ask_qty
    return float((bid_qty - ask_qty) / total) if total else 0.0


def book_state(
    book: OrderBook,
    exchange: str,
    product: str,
    timestamp_ms: int,
    imbalance_levels: int,
    sequence_num: int | None = None,
    checksum_ok: bool | None = None,
) -> BookState | None:
    """The book-state record of a two-sided, uncrossed book; None for a one-sided or crossed one."""
    bid, ask = book.best_bid(), book.best_ask()
    if bid is None or ask is None or bid[0] >= ask[0]:
        return None
    return BookState(
        exchange=exchange,
        product=product,
        best_bid=float(bid[0]),
        best_ask=float(ask[0]),
        best_bid_qty=float(bid[1]),
        best_ask_qty=float(ask[1]),
        mid=float((bid[0] + ask[0]) / 2),
        spread=float(ask[0] - bid[0]),
        microprice=microprice(bid, ask),
        imbalance=imbalance(book, imbalance_levels),
        levels=len(book),
        sequence_num=sequence_num,
        checksum_ok=checksum_ok,
        timestamp_ms=timestamp_ms,
    )


# --- the wire form of book frames (book-updates topic) ----------------------

FRAME_SNAPSHOT: Final = "snapshot"
FRAME_UPDATE: Final = "update"
CONTROL_RESET: Final = "reset"


class BookFrame(TypedDict):
    """One exchange frame's changes to one book, as the sources put it on the book-updates topic.

    Levels are ``[price, qty]`` decimal strings, kept exact end to end. A
    ``snapshot`` replaces the book, an ``update`` changes it; both have passed
    the source's integrity checks (sequence, checksum, not crossed).
    """

    exchange: str
    product: str
    kind: Literal["snapshot", "update"]
    bids: list[list[str]]
    asks: list[list[str]]
    sequence_num: int | None
    checksum_ok: bool | None
    timestamp_ms: int
    partial: NotRequired[bool]  # on each chunk but the last of a snapshot split across messages: not whole yet


def to_level(price: object, qty: object) -> Level | str:
    """An exact (price, qty) level from decimal strings (or Decimals, ints), or the reason it is not one.

    Floats are refused: they have already lost the exchange's exact digits.
    """
    try:
        px = price if isinstance(price, Decimal) else Decimal(_decimal_text(price))
        q = qty if isinstance(qty, Decimal) else Decimal(_decimal_text(qty))
    except (ArithmeticError, TypeError, ValueError):
        return "not_a_decimal"
    if not px.is_finite() or not q.is_finite():
        return "not_a_decimal"
    if px <= 0:
        return "non_positive_price"
    if q < 0:
        return "negative_qty"
    return px, q


def _decimal_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"not a decimal: {value!r}")
    return str(value)


def wire_levels(levels: Iterable[Level]) -> list[list[str]]:
    """Levels as exact decimal strings for the wire (``format(d, "f")``: never exponent notation)."""
    return [[format(price, "f"), format(qty, "f")] for price, qty in levels]


def frame_levels(levels: object) -> list[Level] | str:
    """Wire levels back to exact levels, or the reason they are unusable (one bad level spoils the frame)."""
    if not isinstance(levels, list):
        return "malformed_levels"
    out: list[Level] = []
    for entry in levels:
        if not isinstance(entry, list) or len(entry) != 2:
            return "malformed_levels"
        level = to_level(entry[0], entry[1])
        if isinstance(level, str):
            return level
        out.append(level)
    return out


def frame_sides(bids: object, asks: object) -> tuple[list[Level], list[Level]] | str:
    """Both sides of a frame as exact levels (`frame_levels`), or the reason they are unusable (the bids' first)."""
    bid_levels, ask_levels = frame_levels(bids), frame_levels(asks)
    if isinstance(bid_levels, str):
        return bid_levels
    if isinstance(ask_levels, str):
        return ask_levels
    return bid_levels, ask_levels


def book_key(exchange: str, product: str) -> str:
    """The message key and feature-store entity of one book: ``coinbase:ETH-USD``, ``kraken:BTC/USD``."""
    return f"{exchange}:{product}"


def book_state_schema():
    """The Arrow schema of book-state records (for files of them)."""
    import pyarrow as pa

    floats = ("best_bid", "best_ask", "best_bid_qty", "best_ask_qty", "mid", "spread", "microprice", "imbalance")
    return pa.schema(
        [pa.field("exchange", pa.string()), pa.field("product", pa.string())]
        + [pa.field(name, pa.float64()) for name in floats]
        + [
            pa.field("levels", pa.int64()),
            pa.field("sequence_num", pa.int64()),
            pa.field("checksum_ok", pa.bool_()),
            pa.field("timestamp_ms", pa.int64()),
        ]
    )
