"""The Coinbase Advanced Trade gateway: a `Venue` over the exchange's REST API (orders, fills, balances).

Every request is signed by a fresh CDP JWT that names its method, host and
path (`coinflow.coinbase_auth`). What the exchange answers becomes order
events through the pure functions here (`order_body`, `create_event`,
`fill_of`, `status_event`, `order_settled`, `balances_of`, `retry_delay`);
`CoinbaseGateway` only sends the requests and keeps which order is which:

- `submit` creates the order. Success is an ``accepted`` event (the exchange's
  order id kept); a refusal (a documented failure reason such as
  INSUFFICIENT_FUND, INVALID_LIMIT_PRICE_POST_ONLY or INVALID_PRODUCT_ID, or a
  400, 401, 403, 404 or 422 answer) is ``rejected`` with the reason. A 429 is retried after its
  Retry-After, a bounded number of times. A timeout, a lost connection, a 5xx,
  a 429 past the retries or an answer that cannot be read give no event:
  whether the exchange has the order is unknown, so nothing is assumed (the
  order stays ``new``) until `reconcile_unknown` asks the exchange for it by
  its client order id.
- `advance` polls the status of each order it follows and the fills of those
  orders: each fill once (by its id), then the order's end (cancelled,
  expired) once all its fills are in; a filled order ends by its fills.
- `cancel` asks for a cancel; the ``cancelled`` event comes from `advance`,
  after the fills before it.

Prices and quantities go on the wire as plain decimal strings and are read
back from strings, never through a float. Credentials never reach a log or an
error message: the JWT travels in a header only, and text from exceptions and
the exchange is redacted.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from coinflow.coinbase_auth import cdp_jwt, cdp_signing_key, rest_uri
from coinflow.redact import redact
from coinflow.settings import Settings
from coinflow.times import ms_to_rfc3339, rfc3339_to_ms
from coinflow.trading.orders import (
    EventKind,
    Fill,
    Liquidity,
    OrderEvent,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
    request_problem,
    split_product,
)

logger = logging.getLogger(__name__)

VENUE = "coinbase"
API = "/api/v3/brokerage"
ORDERS_PATH = f"{API}/orders"
CANCEL_PATH = f"{API}/orders/batch_cancel"
ORDER_LIST_PATH = f"{API}/orders/historical/batch"
FILLS_PATH = f"{API}/orders/historical/fills"
ACCOUNTS_PATH = f"{API}/accounts"
PAGE_LIMIT = 100
MAX_PAGES = 50  # a listing longer than this (or one whose cursor never ends) is an error, not a hang
CLOCK_SLACK_MS = 300_000  # how far before its sending an unknown order is looked for (the exchange's clock may differ)
# Answers in which the exchange refused the request: no order was made.
REFUSED = frozenset({400, 401, 403, 404, 422})
TERMINAL_STATUSES = frozenset({"FILLED", "CANCELLED", "EXPIRED", "FAILED"})
NEVER_RECEIVED = "the exchange has no order with this client order id: the request never reached it"
_SIDES = {Side.BUY: "BUY", Side.SELL: "SELL"}
_WIRE_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}
# UNKNOWN_LIQUIDITY_INDICATOR is booked as taker: the fee charged (the commission) is exact either way.
_LIQUIDITY = {"MAKER": Liquidity.MAKER, "TAKER": Liquidity.TAKER, "UNKNOWN_LIQUIDITY_INDICATOR": Liquidity.TAKER}
_REASON_CHARS = 300


class GatewayError(RuntimeError):
    """A request whose outcome is unknown: a timeout, a lost connection, a rate limit past the retries, an error
    answer to a query, or an answer that cannot be read."""


@dataclass(frozen=True)
class Balance:
    """One asset of the account: what is free to trade and what open orders hold."""

    available: Decimal
    hold: Decimal

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


# --- the wire, as pure functions ---------------------------------------------------------------------------------


def wire_decimal(value: Decimal) -> str:
    """A decimal as the exchange reads it: plain digits, no exponent (``1E-8`` -> ``0.00000001``)."""
    return format(value, "f")


def read_decimal(value: object) -> Decimal:
    """A finite decimal the exchange wrote as a string; a ValueError for anything else (a JSON number, junk)."""
    if not isinstance(value, str):
        raise ValueError(f"not a decimal string: {value!r:.40}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r:.40}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite decimal: {value!r:.40}")
    return number


def product_id(product: str) -> str:
    """Coinbase's id of a product: ``BTC-USD`` (from ``BTC-USD`` or ``BTC/USD``)."""
    return "-".join(split_product(product))


def order_body(request: OrderRequest) -> dict[str, Any]:
    """The create-order body of a well-formed request (see `orders.request_problem`): a market order is
    market_market_ioc, a limit order limit_limit_gtc, limit_limit_gtd (gtt) or sor_limit_ioc (ioc); sizes in the
    base asset."""
    size = wire_decimal(request.quantity)
    configuration: dict[str, dict[str, Any]]
    if request.type == OrderType.MARKET:
        configuration = {"market_market_ioc": {"base_size": size}}
    else:
        assert request.limit_price is not None, "a limit order has a limit price"
        limit = {"base_size": size, "limit_price": wire_decimal(request.limit_price)}
        if request.time_in_force == TimeInForce.IOC:
            configuration = {"sor_limit_ioc": limit}
        elif request.time_in_force == TimeInForce.GTT:
            assert request.expire_ms is not None, "a gtt order has an expiry"
            end = ms_to_rfc3339(request.expire_ms)
            configuration = {"limit_limit_gtd": {**limit, "end_time": end, "post_only": request.post_only}}
        else:
            configuration = {"limit_limit_gtc": {**limit, "post_only": request.post_only}}
    return {
        "client_order_id": request.client_order_id,
        "product_id": product_id(request.product),
        "side": _SIDES[request.side],
        "order_configuration": configuration,
    }


def _reason(*parts: object) -> str:
    text = ": ".join(str(p) for p in parts if p not in (None, ""))
    return redact(text)[:_REASON_CHARS]


def failure_reason(payload: Mapping[str, Any]) -> str:
    """Why a create-order answer with ``success: false`` says the order failed: the most specific code of its
    ``error_response`` (UNKNOWN_* only when there is no other) and its message."""
    error = payload.get("error_response")
    error = error if isinstance(error, dict) else {}
    given = [error.get(k) for k in ("error", "new_order_failure_reason", "preview_failure_reason")]
    codes: list[str] = [c for c in [*given, payload.get("failure_reason")] if isinstance(c, str) and c]
    code = next((c for c in codes if not c.startswith("UNKNOWN_")), codes[0] if codes else "UNKNOWN_FAILURE_REASON")
    message = error.get("message") or error.get("error_details")
    return _reason(code, message if isinstance(message, str) else None)


def error_reason(status_code: int, payload: Any) -> str:
    """An error answer in words: ``HTTP 400 INVALID_ARGUMENT: <message>`` (the body's text when it is not the
    error form)."""
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("error_details")
        code = payload.get("error")
        return _reason(
            f"HTTP {status_code}" + (f" {code}" if isinstance(code, str) and code else ""),
            message if isinstance(message, str) else None,
        )
    return _reason(f"HTTP {status_code}", payload.strip() if isinstance(payload, str) else None)


def create_event(client_order_id: str, status_code: int, payload: Any, now_ms: int) -> OrderEvent | None:
    """The event a create-order answer makes: accepted (with the exchange's order id) or rejected (with why); None
    when the answer does not settle whether the exchange has the order (a 429, a 5xx, an unreadable body)."""
    if status_code == 200 and isinstance(payload, dict):
        if payload.get("success") is True:
            success = payload.get("success_response")
            order_id = success.get("order_id") if isinstance(success, dict) else None
            if isinstance(order_id, str) and order_id:
                return OrderEvent(client_order_id, EventKind.ACCEPTED, now_ms, venue_order_id=order_id)
            return None
        if payload.get("success") is False:
            return OrderEvent(client_order_id, EventKind.REJECTED, now_ms, reason=failure_reason(payload))
        return None
    if status_code in REFUSED:
        return OrderEvent(client_order_id, EventKind.REJECTED, now_ms, reason=error_reason(status_code, payload))
    return None


def cancel_failure(status_code: int, payload: Any, order_id: str) -> str | None:
    """Why a batch_cancel answer did not cancel `order_id` (None: the cancel was accepted)."""
    if status_code != 200 or not isinstance(payload, dict):
        return error_reason(status_code, payload)
    for result in payload.get("results") or []:
        if isinstance(result, dict) and result.get("order_id") == order_id:
            return None if result.get("success") is True else _reason(result.get("failure_reason") or "not cancelled")
    return "the answer does not name the order"


def fill_of(entry: Mapping[str, Any], request: OrderRequest, venue: str, local_ms: int) -> Fill:
    """A fill of `request` from a fills listing entry: its id (entry_id, else trade_id), price, size, fee (the
    commission, in the quote asset), liquidity and exchange time (trade_time); a ValueError when the entry is not
    a plain fill in the base asset."""
    fill_id = entry.get("entry_id") or entry.get("trade_id")
    if not isinstance(fill_id, str) or not fill_id:
        raise ValueError("a fill without entry_id or trade_id")
    if entry.get("trade_type", "FILL") != "FILL":
        raise ValueError(f"fill {fill_id} is a {entry.get('trade_type')!r:.20}, not a FILL")
    if entry.get("size_in_quote") is True:
        raise ValueError(f"fill {fill_id} is sized in the quote asset")
    indicator, wire_side = entry.get("liquidity_indicator"), entry.get("side")
    liquidity = _LIQUIDITY.get(indicator) if isinstance(indicator, str) else None
    side = _WIRE_SIDES.get(wire_side) if isinstance(wire_side, str) else None
    if liquidity is None or side is None:
        raise ValueError(f"fill {fill_id}: liquidity {indicator!r:.30}, side {wire_side!r:.10}")
    wire_product = entry.get("product_id")
    if not isinstance(wire_product, str):
        raise ValueError(f"fill {fill_id} without a product")
    return Fill(
        fill_id=fill_id,
        client_order_id=request.client_order_id,
        venue=venue,
        product=request.product if wire_product == product_id(request.product) else wire_product,
        side=side,
        price=read_decimal(entry.get("price")),
        quantity=read_decimal(entry.get("size")),
        fee=read_decimal(entry.get("commission")),
        liquidity=liquidity,
        exchange_ms=rfc3339_to_ms(entry.get("trade_time")),
        local_ms=local_ms,
    )


def order_settled(record: Mapping[str, Any], reported: Decimal) -> bool:
    """Whether an order record is over and every fill it counts (filled_size) has been reported."""
    return record.get("status") in TERMINAL_STATUSES and read_decimal(record.get("filled_size")) <= reported


def status_event(client_order_id: str, record: Mapping[str, Any], accepted: bool, now_ms: int) -> OrderEvent | None:
    """The event of an order record's end: cancelled, expired, or (failed) rejected, or cancelled when the order
    had been accepted; None while it is live, and for a filled order (its fills fill it)."""
    status = record.get("status")
    venue_order_id = record.get("order_id") if isinstance(record.get("order_id"), str) else None
    if status == "CANCELLED":
        reason = _reason("cancelled on the exchange", record.get("cancel_message"))
        return OrderEvent(client_order_id, EventKind.CANCELLED, now_ms, venue_order_id, reason)
    if status == "EXPIRED":
        return OrderEvent(client_order_id, EventKind.EXPIRED, now_ms, venue_order_id, "good-till-time passed")
    if status == "FAILED":
        kind = EventKind.CANCELLED if accepted else EventKind.REJECTED
        return OrderEvent(client_order_id, kind, now_ms, venue_order_id, failed_reason(record))
    return None


def failed_reason(record: Mapping[str, Any]) -> str:
    """Why the exchange says an order failed."""
    return _reason("failed on the exchange", record.get("reject_reason"), record.get("reject_message"))


def balances_of(accounts: Iterable[Any]) -> dict[str, Balance]:
    """Available and held balance per asset of an accounts listing (accounts of one currency added up); a
    ValueError when an account cannot be read."""
    out: dict[str, Balance] = {}
    for account in accounts:
        if not isinstance(account, dict) or not isinstance(account.get("currency"), str):
            raise ValueError("an account without its currency")
        available, hold = (account.get(k) for k in ("available_balance", "hold"))
        if not isinstance(available, dict) or not isinstance(hold, dict):
            raise ValueError(f"account {account['currency']}: no available_balance and hold")
        before = out.get(account["currency"], Balance(Decimal(0), Decimal(0)))
        out[account["currency"]] = Balance(
            before.available + read_decimal(available.get("value")), before.hold + read_decimal(hold.get("value"))
        )
    return out


def retry_delay(retry_after: str | None, attempt: int, backoff_s: float) -> float:
    """Seconds to wait before retrying a 429: its Retry-After (seconds) when it has one, else `backoff_s`
    doubled per attempt made."""
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return backoff_s * 2**attempt


def _payload(response: httpx.Response) -> Any:
    """The JSON of an answer (numbers as Decimal, never float), or its text when it is not JSON."""
    try:
        return json.loads(response.content, parse_float=Decimal)
    except (ValueError, RecursionError):
        return response.text


# --- the gateway -------------------------------------------------------------------------------------------------


class CdpAuth(httpx.Auth):
    """Signs every request (each retry too) with a fresh 2-minute CDP JWT whose ``uri`` names its method, host and
    path."""

    def __init__(self, key_name: str, private_key_pem: str, clock: Callable[[], float]) -> None:
        self._key_name = key_name
        self._private_key_pem = private_key_pem
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        uri = rest_uri(request.method, request.url.netloc.decode("ascii"), request.url.path)
        token = cdp_jwt(self._key_name, self._private_key_pem, int(self._clock()), uri=uri)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@dataclass
class _Followed:
    """An order the exchange has: its id there, and the fills reported so far."""

    request: OrderRequest
    venue_order_id: str
    reported: Decimal = Decimal(0)
    fill_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Unknown:
    """An order whose create request had no clear answer."""

    request: OrderRequest
    sent_ms: int


class CoinbaseGateway:
    """Orders on Coinbase Advanced Trade through its REST API (see the module docstring).

    ``settle_ms``: how long after sending an order without a clear answer the exchange's not knowing it means it
    never got it. ``poll_interval_s``: the least time between two polls of the exchange by `advance` (a session
    advances its venue on every market event). 429s are retried ``max_retries`` times, after Retry-After (else ``backoff_s`` doubling), unless
    the wait would pass ``max_wait_s``. ``clock`` (Unix seconds) dates the JWTs; ``sleep`` waits out 429s.
    """

    def __init__(
        self,
        base_url: str,
        key_name: str,
        private_key_pem: str,
        *,
        timeout_s: float = 5.0,
        name: str = VENUE,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 10.0,
        settle_ms: int = 60_000,
        poll_interval_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        cdp_signing_key(private_key_pem)  # a bad key is one clear error here, not a failed first order
        self.name = name
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.settle_ms = settle_ms
        self.poll_interval_s = poll_interval_s
        self._polled_at: float | None = None
        self.counts: Counter[str] = Counter()
        self._sleep = sleep
        # trust_env=False: no proxy or .netrc from the environment decides where signed requests go.
        self._client = httpx.Client(
            base_url=base_url,
            timeout=timeout_s,
            auth=CdpAuth(key_name, private_key_pem, clock),
            trust_env=False,
            headers={"Accept": "application/json"},
        )
        self._events: list[OrderEvent] = []
        self._followed: dict[str, _Followed] = {}
        self._unknown: dict[str, _Unknown] = {}
        self._cancel_wanted: set[str] = set()
        self._submitted: set[str] = set()
        self._logged: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> CoinbaseGateway:
        """The gateway of the configured REST URL, CDP key and request timeout (`options` as the constructor's)."""
        exchanges = settings.exchanges
        if exchanges.coinbase_api_key is None or exchanges.coinbase_api_secret is None:
            raise ValueError(
                "trading on Coinbase needs a CDP API key: set COINFLOW_COINBASE_API_KEY and COINFLOW_COINBASE_API_SECRET"
            )
        return cls(
            exchanges.coinbase_rest_url,
            exchanges.coinbase_api_key.get_secret_value(),
            exchanges.coinbase_api_secret.get_secret_value(),
            timeout_s=settings.trading.gateway_timeout_s,
            **{"poll_interval_s": settings.trading.gateway_poll_interval_s, **options},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CoinbaseGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the Venue ---------------------------------------------------------------------------------------------

    def submit(self, request: OrderRequest, now_ms: int) -> None:
        """Send an order; its accepted or rejected event comes with the next `advance`, none while its fate is
        unknown (see `reconcile_unknown`). A client order id sent before is the same order: not sent again."""
        name = request.client_order_id
        if name in self._submitted:
            return
        self._submitted.add(name)
        problem = request_problem(request)
        if problem is not None:
            self._events.append(OrderEvent(name, EventKind.REJECTED, now_ms, reason=problem))
            return
        try:
            response = self._request("POST", ORDERS_PATH, body=order_body(request))
        except GatewayError as exc:
            self._lost(request, now_ms, str(exc))
            return
        payload = _payload(response)
        event = create_event(name, response.status_code, payload, now_ms)
        if event is None:
            self._lost(request, now_ms, error_reason(response.status_code, payload))
            return
        if event.venue_order_id is not None:
            self._followed[name] = _Followed(request, event.venue_order_id)
        self._events.append(event)

    def cancel(self, client_order_id: str, now_ms: int) -> None:
        """Ask the exchange to cancel an order (its end comes from `advance`); an order of unknown fate is
        cancelled once `reconcile_unknown` finds it."""
        followed = self._followed.get(client_order_id)
        if followed is not None:
            self._send_cancel(client_order_id, followed)
        elif client_order_id in self._unknown:
            self._cancel_wanted.add(client_order_id)

    def advance(self, now_ms: int) -> list[OrderEvent]:
        """The events since the last call, in order: orders accepted or rejected, new fills (each once, oldest
        first), then the orders that ended. An order whose status cannot be had this time is asked again next
        time."""
        events, self._events = self._events, []
        polled = time.monotonic()
        if self._polled_at is not None and polled - self._polled_at < self.poll_interval_s:
            return events
        self._polled_at = polled
        records: dict[str, Mapping[str, Any]] = {}
        for name, followed in self._followed.items():
            try:
                records[name] = self._order(followed.venue_order_id)
            except GatewayError as exc:
                self._problem("status_unavailable", f"the status of {name} is unavailable now: {exc}")
        return events + self._follow(list(self._followed), records, now_ms)

    def open_orders(self) -> list[str]:
        """Client order ids of the orders the exchange lists as open, and of those whose end this gateway has not
        yet reported or whose fate is unknown, so that none is taken for gone before the exchange tells its end.
        Raises GatewayError when the exchange cannot be asked (an empty list would be a claim)."""
        records = self._pages(ORDER_LIST_PATH, {"order_status": "OPEN", "limit": PAGE_LIMIT}, "orders")
        listed = {
            r["client_order_id"] for r in records if isinstance(r, dict) and isinstance(r.get("client_order_id"), str)
        }
        return sorted(listed | set(self._followed) | set(self._unknown))

    # --- beyond the Venue --------------------------------------------------------------------------------------

    def reconcile_unknown(self, now_ms: int) -> list[OrderEvent]:
        """Settle the orders whose sending had no clear answer by asking the exchange for them by client order id.
        One it has is accepted (rejected if it failed there), then its fills and end follow as in `advance`; one it
        does not have ``settle_ms`` after its sending never reached it, and is rejected saying so. Nothing changes
        while the exchange cannot be asked."""
        if not self._unknown:
            return []
        since = min(u.sent_ms for u in self._unknown.values()) - CLOCK_SLACK_MS
        try:
            listed = self._pages(ORDER_LIST_PATH, {"start_date": ms_to_rfc3339(since), "limit": PAGE_LIMIT}, "orders")
        except GatewayError as exc:
            self._problem("reconcile_unavailable", f"unknown orders stay unknown: {exc}")
            return []
        found = {r.get("client_order_id"): r for r in listed if isinstance(r, dict)}
        events: list[OrderEvent] = []
        adopted: dict[str, Mapping[str, Any]] = {}
        for name, unknown in list(self._unknown.items()):
            record = found.get(name)
            venue_order_id = record.get("order_id") if record is not None else None
            if record is None:
                if now_ms - unknown.sent_ms >= self.settle_ms:
                    del self._unknown[name]
                    events.append(OrderEvent(name, EventKind.REJECTED, now_ms, reason=NEVER_RECEIVED))
            elif not isinstance(venue_order_id, str) or not venue_order_id:
                self._problem("bad_order_record", f"the exchange's record of {name} has no order id")
            elif record.get("status") == "FAILED":
                del self._unknown[name]
                events.append(OrderEvent(name, EventKind.REJECTED, now_ms, venue_order_id, failed_reason(record)))
            else:
                del self._unknown[name]
                self._followed[name] = _Followed(unknown.request, venue_order_id)
                events.append(OrderEvent(name, EventKind.ACCEPTED, now_ms, venue_order_id=venue_order_id))
                adopted[name] = record
        events += self._follow(list(adopted), adopted, now_ms)
        for name in sorted(adopted.keys() & self._cancel_wanted & self._followed.keys()):
            self._send_cancel(name, self._followed[name])
        self._cancel_wanted &= self._unknown.keys()
        return events

    def adopt(
        self, request: OrderRequest, venue_order_id: str | None, sent_ms: int, fill_ids: Iterable[str], filled: Decimal
    ) -> None:
        """Follow an order a previous process sent (after a restart, from the trading database): by its exchange
        id, with the fills (and quantity) already recorded; without one, its fate is unknown until
        `reconcile_unknown`."""
        name = request.client_order_id
        self._submitted.add(name)
        if venue_order_id is None:
            self._unknown[name] = _Unknown(request, sent_ms)
            return
        self._followed[name] = _Followed(request, venue_order_id, filled, set(fill_ids))

    def unknown_orders(self) -> list[str]:
        """Client order ids of the orders whose fate is unknown (see `reconcile_unknown`)."""
        return sorted(self._unknown)

    def balances(self) -> dict[str, Balance]:
        """The account's balances per asset (available and on hold); raises GatewayError when they cannot be had."""
        accounts = self._pages(ACCOUNTS_PATH, {"limit": PAGE_LIMIT}, "accounts")
        try:
            return balances_of(accounts)
        except ValueError as exc:
            raise GatewayError(f"GET {ACCOUNTS_PATH}: {exc}") from None

    # --- inside ------------------------------------------------------------------------------------------------

    def _follow(self, names: list[str], records: Mapping[str, Mapping[str, Any]], now_ms: int) -> list[OrderEvent]:
        """New fills of the named followed orders, then the ends of those whose record is over and fully
        reported (the records were read before the fills, so no fill of an ended order can be missed)."""
        followed = {self._followed[n].venue_order_id: self._followed[n] for n in names if n in self._followed}
        if not followed:
            return []
        try:
            entries = self._pages(FILLS_PATH, {"order_ids": sorted(followed), "limit": PAGE_LIMIT}, "fills")
        except GatewayError as exc:
            self._problem("fills_unavailable", f"fills are unavailable now: {exc}")
            return []
        fills: list[tuple[Fill, str]] = []
        for entry in entries:
            owner = followed.get(str(entry.get("order_id"))) if isinstance(entry, dict) else None
            if owner is None:
                continue
            try:
                fill = fill_of(entry, owner.request, self.name, now_ms)
            except ValueError as exc:
                self._problem("bad_fill", f"a fill of {owner.request.client_order_id} cannot be read: {exc}")
                continue
            if fill.fill_id in owner.fill_ids:
                self.counts["duplicate_fill"] += 1
                continue
            owner.fill_ids.add(fill.fill_id)
            owner.reported += fill.quantity
            fills.append((fill, owner.venue_order_id))
        fills.sort(key=lambda pair: (pair[0].exchange_ms, pair[0].fill_id))
        events = [OrderEvent(f.client_order_id, EventKind.FILL, now_ms, venue_id, fill=f) for f, venue_id in fills]
        for name in names:
            record = records.get(name)
            if record is None or name not in self._followed:
                continue
            try:
                settled = order_settled(record, self._followed[name].reported)
            except ValueError as exc:
                self._problem("bad_order_record", f"the exchange's record of {name} cannot be read: {exc}")
                continue
            if settled:
                del self._followed[name]
                end = status_event(name, record, accepted=True, now_ms=now_ms)
                if end is not None:
                    events.append(end)
        return events

    def _send_cancel(self, name: str, followed: _Followed) -> None:
        try:
            response = self._request("POST", CANCEL_PATH, body={"order_ids": [followed.venue_order_id]})
        except GatewayError as exc:
            self._problem("cancel_unsent", f"the cancel of {name} may not have reached the exchange: {exc}")
            return
        failure = cancel_failure(response.status_code, _payload(response), followed.venue_order_id)
        if failure is not None:
            self.counts["cancel_refused"] += 1
            logger.info("the exchange did not cancel %s: %s", name, failure)

    def _order(self, venue_order_id: str) -> Mapping[str, Any]:
        record = self._get(f"{API}/orders/historical/{venue_order_id}", {}).get("order")
        if not isinstance(record, dict):
            raise GatewayError(f"the answer about order {venue_order_id} has no order")
        return record

    def _lost(self, request: OrderRequest, now_ms: int, why: str) -> None:
        self._unknown[request.client_order_id] = _Unknown(request, now_ms)
        self.counts["unknown_order"] += 1
        logger.warning(
            "order %s: %s; its state is unknown until reconcile_unknown asks the exchange",
            request.client_order_id,
            redact(why),
        )

    def _problem(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("%s (logged once; counted)", redact(detail))

    def _pages(self, path: str, params: Mapping[str, Any], key: str) -> list[Any]:
        """Every item under `key` of a cursor-paged listing."""
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self._get(path, {**params, "cursor": cursor} if cursor else params)
            batch = page.get(key)
            if not isinstance(batch, list):
                raise GatewayError(f"GET {path}: the answer has no {key}")
            items.extend(batch)
            cursor = page.get("cursor")
            if not batch or not isinstance(cursor, str) or not cursor or page.get("has_next") is False:
                return items
        raise GatewayError(f"GET {path}: more than {MAX_PAGES} pages")

    def _get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        response = self._request("GET", path, params=params)
        payload = _payload(response)
        if response.status_code != 200:
            raise GatewayError(f"GET {path}: {error_reason(response.status_code, payload)}")
        if not isinstance(payload, dict):
            raise GatewayError(f"GET {path}: the answer is not a JSON object")
        return payload

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        """One request, a 429 retried (see the class docstring); the answer, or GatewayError when none came."""
        attempt = 0
        while True:
            try:
                response = self._client.request(method, path, params=params, json=body)
            except httpx.TransportError as exc:
                raise GatewayError(f"{method} {path}: {type(exc).__name__} {redact(exc)}".strip()) from None
            if response.status_code != 429 or attempt >= self.max_retries:
                return response
            delay = retry_delay(response.headers.get("Retry-After"), attempt, self.backoff_s)
            if delay > self.max_wait_s:
                return response
            self.counts["rate_limited"] += 1
            self._sleep(delay)
            attempt += 1
