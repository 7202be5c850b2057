"""The trading database: append-only tables of orders, order events, fills, the ledger and controls (SQLAlchemy 2).

SQLite (a file, the default) or PostgreSQL, by URL. Nothing is ever updated
or deleted: an order's state, a position, a balance and the kill switch are
all folded from the rows in the order they were written, so a restart that
reads them back has exactly what the process had. Decimals are stored as
their exact text (SQLite has no exact numeric type). A fill is written in one
transaction with its order event and its ledger entries, and the fills'
primary key (venue, fill id) makes a fill reported twice a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from coinflow.trading.accounting import EntryKind, LedgerEntry, fill_entries
from coinflow.trading.orders import (
    EventKind,
    Fill,
    Liquidity,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)


class DecimalText(sa.TypeDecorator[Decimal]):
    """An exact Decimal kept as its plain text (never exponent notation, never a float)."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = sa.MetaData()
NAME = sa.String(128)

orders_table = sa.Table(
    "orders",
    metadata,
    sa.Column("client_order_id", NAME, primary_key=True),
    sa.Column("venue", NAME, nullable=False),
    sa.Column("product", NAME, nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("type", sa.String(8), nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("limit_price", DecimalText),
    sa.Column("time_in_force", sa.String(8), nullable=False),
    sa.Column("post_only", sa.Boolean, nullable=False),
    sa.Column("expire_ms", sa.BigInteger),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("strategy", NAME, nullable=False),
)
events_table = sa.Table(
    "order_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", NAME, sa.ForeignKey("orders.client_order_id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("venue_order_id", NAME),
    sa.Column("reason", sa.Text),
    sa.Column("fill_venue", NAME),
    sa.Column("fill_id", NAME),
)
fills_table = sa.Table(
    "fills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue", NAME, nullable=False),
    sa.Column("fill_id", NAME, nullable=False),
    sa.Column("client_order_id", NAME, sa.ForeignKey("orders.client_order_id"), nullable=False),
    sa.Column("product", NAME, nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("price", DecimalText, nullable=False),
    sa.Column("quantity", DecimalText, nullable=False),
    sa.Column("fee", DecimalText, nullable=False),
    sa.Column("liquidity", sa.String(8), nullable=False),
    sa.Column("exchange_ms", sa.BigInteger, nullable=False),
    sa.Column("local_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("venue", "fill_id"),
)
ledger_table = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue", NAME, nullable=False),
    sa.Column("asset", sa.String(32), nullable=False),
    sa.Column("amount", DecimalText, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ref", NAME, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)
# What the account asked of the venue, in order: orders sent and cancels asked for (a restart replays them).
requests_table = sa.Table(
    "venue_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("client_order_id", NAME, sa.ForeignKey("orders.client_order_id"), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)
controls_table = sa.Table(
    "controls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Control:
    """A switch or mark set at a time (the kill switch, the equity a day opened with)."""

    name: str
    value: str
    reason: str | None
    at_ms: int


@dataclass(frozen=True)
class VenueRequest:
    """An order handed to the venue (``send``), held back (``hold``) or a cancel asked for (``cancel``), at a time."""

    kind: str
    client_order_id: str
    at_ms: int


@dataclass(frozen=True)
class Recorded:
    """Everything in the database, in the order it was written."""

    requests: list[OrderRequest]
    events: list[OrderEvent]
    fills: list[Fill]
    ledger: list[LedgerEntry]
    controls: list[Control]
    venue_requests: list[VenueRequest]


def _request_row(request: OrderRequest) -> dict[str, Any]:
    return {
        "client_order_id": request.client_order_id,
        "venue": request.venue,
        "product": request.product,
        "side": str(request.side),
        "type": str(request.type),
        "quantity": request.quantity,
        "limit_price": request.limit_price,
        "time_in_force": str(request.time_in_force),
        "post_only": request.post_only,
        "expire_ms": request.expire_ms,
        "created_ms": request.created_ms,
        "strategy": request.strategy,
    }


def _request(row: Any) -> OrderRequest:
    return OrderRequest(
        client_order_id=row.client_order_id,
        venue=row.venue,
        product=row.product,
        side=Side(row.side),
        type=OrderType(row.type),
        quantity=row.quantity,
        limit_price=row.limit_price,
        time_in_force=TimeInForce(row.time_in_force),
        post_only=row.post_only,
        expire_ms=row.expire_ms,
        created_ms=row.created_ms,
        strategy=row.strategy,
    )


def _fill(row: Any) -> Fill:
    return Fill(
        fill_id=row.fill_id,
        client_order_id=row.client_order_id,
        venue=row.venue,
        product=row.product,
        side=Side(row.side),
        price=row.price,
        quantity=row.quantity,
        fee=row.fee,
        liquidity=Liquidity(row.liquidity),
        exchange_ms=row.exchange_ms,
        local_ms=row.local_ms,
    )


def _entry_row(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "venue": entry.venue,
        "asset": entry.asset,
        "amount": entry.amount,
        "kind": str(entry.kind),
        "ref": entry.ref,
        "at_ms": entry.at_ms,
    }


def connect(url: str) -> Engine:
    """An engine for the trading database, its tables created when missing (SQLite in WAL mode, so a reader such
    as `positions` never blocks the trading process)."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

    metadata.create_all(engine)
    return engine


class TradingStore:
    """Appends to and reads back the trading database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_order(self, request: OrderRequest, at_ms: int, kind: str = "send") -> bool:
        """Record a new order and its sending (``send``) before it is sent, or an order held back until other
        orders' cancels are confirmed (``hold``); False when its client order id is already there (the same
        order)."""
        with self.engine.begin() as connection:
            exists = connection.execute(
                sa.select(orders_table.c.client_order_id).where(
                    orders_table.c.client_order_id == request.client_order_id
                )
            ).first()
            if exists:
                return False
            connection.execute(orders_table.insert(), _request_row(request))
            connection.execute(
                requests_table.insert(), {"kind": kind, "client_order_id": request.client_order_id, "at_ms": at_ms}
            )
        return True

    def add_request(self, kind: str, client_order_id: str, at_ms: int) -> None:
        """Record a request to the venue (``send`` of a held order, ``cancel``) before it is made."""
        with self.engine.begin() as connection:
            connection.execute(
                requests_table.insert(), {"kind": kind, "client_order_id": client_order_id, "at_ms": at_ms}
            )

    def record(self, events: Iterable[OrderEvent]) -> list[OrderEvent]:
        """Append order events in one transaction (each fill with its fill row and ledger entries); returns those
        written, without fills that were already recorded."""
        written = []
        with self.engine.begin() as connection:
            for event in events:
                fill = event.fill
                if fill is not None:
                    if self._has_fill(connection, fill):
                        continue
                    connection.execute(fills_table.insert(), _fill_row(fill))
                    connection.execute(ledger_table.insert(), [_entry_row(e) for e in fill_entries(fill)])
                connection.execute(
                    events_table.insert(),
                    {
                        "client_order_id": event.client_order_id,
                        "kind": str(event.kind),
                        "at_ms": event.at_ms,
                        "venue_order_id": event.venue_order_id,
                        "reason": event.reason,
                        "fill_venue": fill.venue if fill else None,
                        "fill_id": fill.fill_id if fill else None,
                    },
                )
                written.append(event)
        return written

    @staticmethod
    def _has_fill(connection: Connection, fill: Fill) -> bool:
        found = connection.execute(
            sa.select(fills_table.c.fill_id).where(
                (fills_table.c.venue == fill.venue) & (fills_table.c.fill_id == fill.fill_id)
            )
        ).first()
        return found is not None

    def deposit(self, entries: Iterable[LedgerEntry]) -> None:
        """Append ledger entries that are not fills (deposits)."""
        rows = [_entry_row(e) for e in entries]
        with self.engine.begin() as connection:
            connection.execute(ledger_table.insert(), rows)

    def set_control(self, control: Control) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                controls_table.insert(),
                {"name": control.name, "value": control.value, "reason": control.reason, "at_ms": control.at_ms},
            )

    def controls(self) -> list[Control]:
        """Every control, in the order set (another process, such as `kill-switch`, may have added some)."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(controls_table).order_by(controls_table.c.id))
            return [Control(r.name, r.value, r.reason, r.at_ms) for r in rows]

    def load(self) -> Recorded:
        """Every row, in the order written."""
        with self.engine.connect() as connection:
            requests = [
                _request(r)
                for r in connection.execute(
                    sa.select(orders_table).order_by(orders_table.c.created_ms, orders_table.c.client_order_id)
                )
            ]
            fills = {
                (r.venue, r.fill_id): _fill(r)
                for r in connection.execute(sa.select(fills_table).order_by(fills_table.c.id))
            }
            events = [
                OrderEvent(
                    client_order_id=r.client_order_id,
                    kind=EventKind(r.kind),
                    at_ms=r.at_ms,
                    venue_order_id=r.venue_order_id,
                    reason=r.reason,
                    fill=fills[(r.fill_venue, r.fill_id)] if r.fill_id is not None else None,
                )
                for r in connection.execute(sa.select(events_table).order_by(events_table.c.id))
            ]
            ledger = [
                LedgerEntry(r.venue, r.asset, r.amount, EntryKind(r.kind), r.ref, r.at_ms)
                for r in connection.execute(sa.select(ledger_table).order_by(ledger_table.c.id))
            ]
            venue_requests = [
                VenueRequest(r.kind, r.client_order_id, r.at_ms)
                for r in connection.execute(sa.select(requests_table).order_by(requests_table.c.id))
            ]
        return Recorded(requests, events, list(fills.values()), ledger, self.controls(), venue_requests)


def _fill_row(fill: Fill) -> dict[str, Any]:
    return {
        "venue": fill.venue,
        "fill_id": fill.fill_id,
        "client_order_id": fill.client_order_id,
        "product": fill.product,
        "side": str(fill.side),
        "price": fill.price,
        "quantity": fill.quantity,
        "fee": fill.fee,
        "liquidity": str(fill.liquidity),
        "exchange_ms": fill.exchange_ms,
        "local_ms": fill.local_ms,
    }
