"""A local Coinbase Advanced Trade REST server for the trading gateway's tests (a Starlette app; serve it with
`tests.support.ports.running`).

It answers the endpoints the gateway uses in their documented shapes: create
order (market_market_ioc, sor_limit_ioc, limit_limit_gtc, limit_limit_gtd),
batch_cancel, the order listing, one order, the fills listing and the
accounts, with cursor pages. It is strict: a body or query that does not
have the documented shape is a 400 in Coinbase's error form, and every
request must carry a valid CDP JWT (ES256 under the test key's public key,
``iss`` cdp, ``sub`` and ``kid`` the key name, ``nbf``/``exp`` around now and
at most two minutes apart, ``uri`` the request's own method, host and path),
or it is a 401. Its exchange keeps balances (an order holds what it may
spend; INSUFFICIENT_FUND when they do not cover it), knows its products
(INVALID_PRODUCT_ID otherwise) and a best bid and offer per product (a
post-only order that would cross is INVALID_LIMIT_PRICE_POST_ONLY; market,
IOC and crossing limit orders fill at once as takers). The test makes resting
orders fill (`fill`), moves the clock past a good-till-date order's end
(`clock`), and injects faults: a rate limit (429 with Retry-After past N
requests in a window), slow answers (`delay_next`, the order received or
not), every fill listed twice (`duplicate_fills`) and a fills listing that
lags behind the orders (`hide_fills`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coinflow.times import ms_to_rfc3339, rfc3339_to_ms
from coinflow.trading.fees import COINBASE_FEES, FeeSchedule
from coinflow.trading.orders import Liquidity

API = "/api/v3/brokerage"
ORDERS = f"{API}/orders"
_GRPC_CODES = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "RESOURCE_EXHAUSTED": 8}
_STATUSES = {"PENDING", "OPEN", "FILLED", "CANCELLED", "EXPIRED", "FAILED", "UNKNOWN_ORDER_STATUS", "QUEUED",
             "CANCEL_QUEUED"}  # fmt: skip
_TOP_LEVEL = {"client_order_id", "product_id", "side", "order_configuration", "self_trade_prevention_id",
              "leverage", "margin_type", "retail_portfolio_id", "preview_id"}  # fmt: skip
# Each configuration's required and optional fields.
_CONFIGURATIONS = {
    "market_market_ioc": ({"base_size"}, set()),
    "sor_limit_ioc": ({"base_size", "limit_price"}, set()),
    "limit_limit_gtc": ({"base_size", "limit_price"}, {"post_only"}),
    "limit_limit_gtd": ({"base_size", "limit_price", "end_time"}, {"post_only"}),
}
_TIME_IN_FORCE = {
    "market_market_ioc": "IMMEDIATE_OR_CANCEL",
    "sor_limit_ioc": "IMMEDIATE_OR_CANCEL",
    "limit_limit_gtc": "GOOD_UNTIL_CANCELLED",
    "limit_limit_gtd": "GOOD_UNTIL_DATE_TIME",
}
_LIST_ORDERS_PARAMS = {"order_ids", "product_ids", "order_status", "limit", "start_date", "end_date", "order_types",
                       "order_side", "cursor", "product_type", "order_placement_source", "contract_expiry_type",
                       "asset_filters", "retail_portfolio_id", "time_in_forces", "sort_by"}  # fmt: skip
_LIST_FILLS_PARAMS = {"order_ids", "trade_ids", "product_ids", "start_sequence_timestamp", "end_sequence_timestamp",
                      "retail_portfolio_id", "limit", "cursor", "sort_by"}  # fmt: skip
_ACCOUNTS_PARAMS = {"limit", "cursor", "retail_portfolio_id"}


class BadRequest(Exception):
    """A request that does not have the documented shape (answered 400 INVALID_ARGUMENT)."""


@dataclass
class MockOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str
    configuration: dict[str, dict[str, Any]]
    base_size: Decimal
    limit_price: Decimal | None
    end_ms: int | None
    created_ms: int
    reserve_asset: str
    reserved: Decimal  # what the order holds now, in reserve_asset
    reserve_per_unit: Decimal
    status: str = "OPEN"
    filled_size: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    total_fees: Decimal = Decimal(0)
    fills: int = 0
    last_fill_ms: int | None = None
    cancel_message: str = ""

    @property
    def kind(self) -> str:
        return next(iter(self.configuration))

    @property
    def remaining(self) -> Decimal:
        return self.base_size - self.filled_size


@dataclass(frozen=True)
class MockFill:
    entry_id: str
    trade_id: str
    order_id: str
    product_id: str
    side: str
    price: Decimal
    size: Decimal
    commission: Decimal
    liquidity: str
    trade_ms: int


@dataclass(frozen=True)
class Seen:
    """One request the server got: what it was, the uri its JWT claimed (None: no readable JWT), the answer."""

    method: str
    path: str
    query: str
    uri: str | None
    status: int


@dataclass
class _Delay:
    method: str
    path: str
    seconds: float
    received: bool


@dataclass
class Account:
    available: Decimal
    hold: Decimal = Decimal(0)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


def _text(value: Decimal) -> str:
    return format(value, "f")


def _decimal(value: object, name: str) -> Decimal:
    """A positive decimal given as a string, as the API documents its sizes and prices."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BadRequest(f"{name} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise BadRequest(f"{name} must be positive")
    return number


def _rfc3339_ms(value: object, name: str) -> int:
    try:
        return rfc3339_to_ms(value)
    except ValueError:
        raise BadRequest(f"{name} must be an RFC 3339 time with its offset") from None


def _error(status: int, error: str, message: str) -> JSONResponse:
    """Coinbase's error form (a gRPC status as JSON)."""
    body = {"error": error, "code": _GRPC_CODES.get(error, 2), "message": message, "error_details": message,
            "details": []}  # fmt: skip
    return JSONResponse(body, status)


def _create_failure(error: str, preview: str, message: str) -> JSONResponse:
    """A create-order answer for an order the exchange refused (HTTP 200, ``success: false``)."""
    return JSONResponse(
        {
            "success": False,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": "",
            "error_response": {
                "error": error,
                "message": message,
                "error_details": "",
                "preview_failure_reason": preview,
                "new_order_failure_reason": error,
            },
        }
    )


class CoinbaseTradingMock:
    """The exchange's state and its HTTP face (``app``); see the module docstring."""

    def __init__(
        self,
        key_name: str,
        public_key: Any,
        *,
        quotes: Mapping[str, tuple[str, str]] | None = None,
        balances: Mapping[str, str] | None = None,
        fees: FeeSchedule = COINBASE_FEES,
        page_size: int = 100,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        self.key_name = key_name
        self.public_key = public_key
        self.quotes = {p: (Decimal(b), Decimal(a)) for p, (b, a) in (quotes or {"BTC-USD": ("50000", "50010")}).items()}
        self.accounts = {asset: Account(Decimal(v)) for asset, v in (balances or {"USD": "10000"}).items()}
        self.fees = fees
        self.page_size = page_size
        self.rate_limit = rate_limit  # (requests, window in s): more in the window are answered 429
        self.clock: Callable[[], float] = time.time
        self.duplicate_fills = False
        self.hide_fills = False  # the fills listing lags: it shows none while the orders already count them
        self.orders: dict[str, MockOrder] = {}
        self.fills: list[MockFill] = []
        self.seen: list[Seen] = []
        self._delays: list[_Delay] = []
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        routes = [
            Route(ORDERS, self._guarded(self._create), methods=["POST"]),
            Route(f"{ORDERS}/batch_cancel", self._guarded(self._cancel), methods=["POST"]),
            Route(f"{ORDERS}/historical/batch", self._guarded(self._list_orders), methods=["GET"]),
            Route(f"{ORDERS}/historical/fills", self._guarded(self._list_fills), methods=["GET"]),
            Route(f"{ORDERS}/historical/{{order_id}}", self._guarded(self._get_order), methods=["GET"]),
            Route(f"{API}/accounts", self._guarded(self._accounts), methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    # --- what a test does -------------------------------------------------------------------------------------

    def delay_next(self, seconds: float, *, received: bool, method: str = "POST", path: str = ORDERS) -> None:
        """Answer the next `method` `path` request after `seconds`: having done what it asked (``received``), or
        having dropped it (the request never reached the exchange)."""
        with self._lock:
            self._delays.append(_Delay(method, path, seconds, received))

    def fill(self, client_order_id: str, price: str, size: str, liquidity: str = "MAKER") -> MockFill:
        """Fill (part of) a resting order at `price`, as the market reaching it would."""
        with self._lock:
            order = self._by_client(client_order_id)
            assert order is not None and order.status == "OPEN", f"{client_order_id} is not open"
            price_d, size_d = Decimal(price), Decimal(size)
            assert size_d <= order.remaining, "more than the order has left"
            if order.limit_price is not None:
                beyond = price_d > order.limit_price if order.side == "BUY" else price_d < order.limit_price
                assert not beyond, "beyond the order's limit"
            return self._execute(order, price_d, size_d, liquidity)

    def order_of(self, client_order_id: str) -> MockOrder | None:
        with self._lock:
            return self._by_client(client_order_id)

    # --- the exchange -----------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    def _by_client(self, client_order_id: str) -> MockOrder | None:
        return next((o for o in self.orders.values() if o.client_order_id == client_order_id), None)

    def _account(self, asset: str) -> Account:
        return self.accounts.setdefault(asset, Account(Decimal(0)))

    def _expire_due(self) -> None:
        now_ms = self._now_ms()
        for order in self.orders.values():
            if order.status == "OPEN" and order.end_ms is not None and order.end_ms <= now_ms:
                order.status = "EXPIRED"
                self._release(order)

    def _release(self, order: MockOrder) -> None:
        account = self._account(order.reserve_asset)
        account.hold -= order.reserved
        account.available += order.reserved
        order.reserved = Decimal(0)

    def _execute(self, order: MockOrder, price: Decimal, size: Decimal, liquidity: str) -> MockFill:
        base, quote = order.product_id.split("-")
        notional = price * size
        commission = self.fees.fee(notional, Liquidity.MAKER if liquidity == "MAKER" else Liquidity.TAKER)
        released = min(order.reserve_per_unit * size, order.reserved)
        order.reserved -= released
        reserve = self._account(order.reserve_asset)
        reserve.hold -= released
        if order.side == "BUY":
            reserve.available += released - notional - commission
            self._account(base).available += size
        else:
            reserve.available += released - size
            self._account(quote).available += notional - commission
        now_ms = self._now_ms()
        fill = MockFill(str(uuid.uuid4()), str(next(self._ids)), order.order_id, order.product_id, order.side, price,
                        size, commission, liquidity, now_ms)  # fmt: skip
        self.fills.append(fill)
        order.filled_size += size
        order.filled_value += notional
        order.total_fees += commission
        order.fills += 1
        order.last_fill_ms = now_ms
        if order.remaining == 0:
            order.status = "FILLED"
            self._release(order)
        return fill

    def _order_record(self, order: MockOrder) -> dict[str, Any]:
        average = order.filled_value / order.filled_size if order.filled_size else Decimal(0)
        return {
            "order_id": order.order_id,
            "product_id": order.product_id,
            "user_id": "mock-user",
            "order_configuration": order.configuration,
            "side": order.side,
            "client_order_id": order.client_order_id,
            "status": order.status,
            "time_in_force": _TIME_IN_FORCE[order.kind],
            "created_time": ms_to_rfc3339(order.created_ms),
            "completion_percentage": _text(order.filled_size / order.base_size * 100),
            "filled_size": _text(order.filled_size),
            "average_filled_price": _text(average),
            "fee": "",
            "number_of_fills": str(order.fills),
            "filled_value": _text(order.filled_value),
            "pending_cancel": False,
            "size_in_quote": False,
            "total_fees": _text(order.total_fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": _text(order.filled_value + order.total_fees),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": "MARKET" if order.kind == "market_market_ioc" else "LIMIT",
            "reject_reason": "",
            "settled": order.status in ("FILLED", "CANCELLED", "EXPIRED"),
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": order.cancel_message,
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": _text(order.reserved),
            "is_liquidation": False,
            "last_fill_time": ms_to_rfc3339(order.last_fill_ms) if order.last_fill_ms is not None else None,
        }

    def _fill_entry(self, fill: MockFill) -> dict[str, Any]:
        return {
            "entry_id": fill.entry_id,
            "trade_id": fill.trade_id,
            "order_id": fill.order_id,
            "trade_time": ms_to_rfc3339(fill.trade_ms),
            "trade_type": "FILL",
            "price": _text(fill.price),
            "size": _text(fill.size),
            "commission": _text(fill.commission),
            "product_id": fill.product_id,
            "sequence_timestamp": ms_to_rfc3339(fill.trade_ms),
            "liquidity_indicator": fill.liquidity,
            "size_in_quote": False,
            "user_id": "mock-user",
            "side": fill.side,
            "retail_portfolio_id": "mock-portfolio",
        }

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _guarded(self, handler: Callable[[_Call], Response]) -> Callable[[Request], Awaitable[Response]]:
        """The checks every endpoint makes first: the JWT, then the rate limit; then the injected delays."""

        async def endpoint(request: Request) -> Response:
            uri, response = self._authorize(request)
            if response is None:
                response = await self._answer(request, handler)
            with self._lock:
                self.seen.append(Seen(request.method, request.url.path, request.url.query, uri, response.status_code))
            return response

        return endpoint

    async def _answer(self, request: Request, handler: Callable[[_Call], Response]) -> Response:
        with self._lock:
            limited = self._rate_limited()
            delay = next((d for d in self._delays if (d.method, d.path) == (request.method, request.url.path)), None)
            if delay is not None:
                self._delays.remove(delay)
        if limited is not None:
            return limited
        if delay is not None and not delay.received:
            await asyncio.sleep(delay.seconds)
            return _error(504, "DEADLINE_EXCEEDED", "the request was lost")
        body = await request.body()
        with self._lock:
            try:
                self._expire_due()
                response = handler(_Call(request, body))
            except BadRequest as exc:
                response = _error(400, "INVALID_ARGUMENT", str(exc))
        if delay is not None:
            await asyncio.sleep(delay.seconds)
        return response

    def _rate_limited(self) -> Response | None:
        if self.rate_limit is None:
            return None
        most, window_s = self.rate_limit
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - window_s:
            self._recent.popleft()
        if len(self._recent) >= most:
            wait = max(1, math.ceil(self._recent[0] + window_s - now))
            response = _error(429, "RESOURCE_EXHAUSTED", "Too many requests")
            response.headers["Retry-After"] = str(wait)
            return response
        self._recent.append(now)
        return None

    def _authorize(self, request: Request) -> tuple[str | None, Response | None]:
        """The JWT's uri claim, and None when the JWT is good, else the 401 (Coinbase answers it in plain text)."""
        refused = PlainTextResponse("Unauthorized", 401)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return None, refused
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                issuer="cdp",
                options={"require": ["iss", "sub", "nbf", "exp", "uri"]},
            )
        except jwt.PyJWTError:
            return None, refused
        uri = claims["uri"] if isinstance(claims["uri"], str) else None
        expected = f"{request.method} {request.headers.get('host')}{request.url.path}"
        good = (
            claims["sub"] == self.key_name
            and header.get("kid") == self.key_name
            and header.get("nonce")
            and isinstance(claims["nbf"], int)
            and isinstance(claims["exp"], int)
            and 0 < claims["exp"] - claims["nbf"] <= 120
            and uri == expected
        )
        return uri, None if good else refused

    # --- endpoints (called with the lock held) -----------------------------------------------------------------

    def _create(self, call: _Call) -> Response:
        body = call.json()
        if not isinstance(body, dict):
            raise BadRequest("the body must be an object")
        if unknown := set(body) - _TOP_LEVEL:
            raise BadRequest(f"unknown fields {sorted(unknown)}")
        client_order_id, product, side = body.get("client_order_id"), body.get("product_id"), body.get("side")
        if not isinstance(client_order_id, str) or not client_order_id:
            raise BadRequest("client_order_id is required")
        if not isinstance(product, str) or not product:
            raise BadRequest("product_id is required")
        if side not in ("BUY", "SELL"):
            raise BadRequest("side must be BUY or SELL")
        configuration = body.get("order_configuration")
        if not isinstance(configuration, dict) or len(configuration) != 1:
            raise BadRequest("order_configuration must hold exactly one configuration")
        (kind, fields), = configuration.items()  # fmt: skip
        if kind not in _CONFIGURATIONS or not isinstance(fields, dict):
            raise BadRequest(f"unsupported order configuration {kind!r}")
        required, optional = _CONFIGURATIONS[kind]
        if missing := required - set(fields):
            raise BadRequest(f"{kind}: missing {sorted(missing)}")
        if unknown := set(fields) - required - optional:
            raise BadRequest(f"{kind}: unknown fields {sorted(unknown)}")
        size = _decimal(fields["base_size"], "base_size")
        limit = _decimal(fields["limit_price"], "limit_price") if "limit_price" in fields else None
        post_only = fields.get("post_only", False)
        if not isinstance(post_only, bool):
            raise BadRequest("post_only must be a boolean")
        end_ms = _rfc3339_ms(fields["end_time"], "end_time") if "end_time" in fields else None
        if end_ms is not None and end_ms <= self._now_ms():
            raise BadRequest("end_time must be in the future")

        known = self._by_client(client_order_id)
        if known is not None:  # a client order id names one order: the one it made
            return self._created(known)
        if product not in self.quotes:
            return _create_failure("INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID", "Invalid product_id")
        bid, ask = self.quotes[product]
        best = ask if side == "BUY" else bid
        crosses = limit is None or (limit >= ask if side == "BUY" else limit <= bid)
        if post_only and crosses:
            return _create_failure(
                "INVALID_LIMIT_PRICE_POST_ONLY", "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY", "Post only order would cross"
            )
        base, quote = product.split("-")
        if side == "BUY":
            per_unit = (limit if limit is not None else ask) * (1 + self.fees.taker)
            asset = quote
        else:
            per_unit, asset = Decimal(1), base
        need = per_unit * size
        account = self._account(asset)
        if account.available < need:
            return _create_failure(
                "INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND", "Insufficient balance in source account"
            )
        account.available -= need
        account.hold += need
        order = MockOrder(str(uuid.uuid4()), client_order_id, product, side, configuration, size, limit, end_ms,
                          self._now_ms(), asset, need, per_unit)  # fmt: skip
        self.orders[order.order_id] = order
        if crosses:  # at the best price on the other side, which is at or within the limit
            self._execute(order, best, size, "TAKER")
        elif kind in ("market_market_ioc", "sor_limit_ioc"):
            order.status = "CANCELLED"
            order.cancel_message = "IOC order not filled"
            self._release(order)
        return self._created(order)

    def _created(self, order: MockOrder) -> Response:
        return JSONResponse(
            {
                "success": True,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order.order_id,
                "success_response": {
                    "order_id": order.order_id,
                    "product_id": order.product_id,
                    "side": order.side,
                    "client_order_id": order.client_order_id,
                },
                "order_configuration": order.configuration,
            }
        )

    def _cancel(self, call: _Call) -> Response:
        body = call.json()
        if not isinstance(body, dict) or set(body) != {"order_ids"} or not isinstance(body["order_ids"], list):
            raise BadRequest("the body must be {order_ids: [...]}")
        ids = body["order_ids"]
        if not ids:
            raise BadRequest("order_ids is empty")
        if not all(isinstance(i, str) and i for i in ids):
            raise BadRequest("order_ids must be strings")
        results = []
        for order_id in ids:
            order = self.orders.get(order_id)
            if order is None:
                results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": order_id})
            elif order.status != "OPEN":
                results.append({"success": False, "failure_reason": "COMMANDER_REJECTED_CANCEL_ORDER",
                                "order_id": order_id})  # fmt: skip
            else:
                order.status = "CANCELLED"
                order.cancel_message = "User requested cancel"
                self._release(order)
                results.append(
                    {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": order_id}
                )
        return JSONResponse({"results": results})

    def _list_orders(self, call: _Call) -> Response:
        call.only(_LIST_ORDERS_PARAMS)
        statuses = call.many("order_status")
        if bad := set(statuses) - _STATUSES:
            raise BadRequest(f"unknown order_status {sorted(bad)}")
        if "OPEN" in statuses and len(statuses) > 1:
            raise BadRequest("OPEN cannot be combined with other order statuses")
        ids, products = set(call.many("order_ids")), set(call.many("product_ids"))
        start = _rfc3339_ms(call.one("start_date"), "start_date") if call.one("start_date") is not None else None
        chosen = [
            o
            for o in sorted(self.orders.values(), key=lambda o: o.created_ms, reverse=True)
            if (not statuses or o.status in statuses)
            and (not ids or o.order_id in ids)
            and (not products or o.product_id in products)
            and (start is None or o.created_ms >= start)
        ]
        page, cursor = call.page(chosen, self.page_size)
        return JSONResponse(
            {
                "orders": [self._order_record(o) for o in page],
                "sequence": "0",
                "has_next": bool(cursor),
                "cursor": cursor,
            }
        )

    def _get_order(self, call: _Call) -> Response:
        call.only({"client_order_id", "user_native_currency"})
        order = self.orders.get(call.request.path_params["order_id"])
        if order is None:
            return _error(404, "NOT_FOUND", "order with this orderID was not found")
        return JSONResponse({"order": self._order_record(order)})

    def _list_fills(self, call: _Call) -> Response:
        call.only(_LIST_FILLS_PARAMS)
        ids, products = set(call.many("order_ids")), set(call.many("product_ids"))
        chosen = [
            f
            for f in reversed(self.fills)  # newest first
            if (not ids or f.order_id in ids) and (not products or f.product_id in products)
        ]
        if self.duplicate_fills:
            chosen = [f for f in chosen for _ in range(2)]
        if self.hide_fills:
            chosen = []
        page, cursor = call.page(chosen, self.page_size)
        return JSONResponse({"fills": [self._fill_entry(f) for f in page], "cursor": cursor})

    def _accounts(self, call: _Call) -> Response:
        call.only(_ACCOUNTS_PARAMS)
        page, cursor = call.page(sorted(self.accounts.items()), self.page_size)
        accounts = [
            {
                "uuid": account.uuid,
                "name": f"{asset} Wallet",
                "currency": asset,
                "available_balance": {"value": _text(account.available), "currency": asset},
                "default": True,
                "active": True,
                "created_at": "2024-01-01T00:00:00.000Z",
                "updated_at": "2024-01-01T00:00:00.000Z",
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_FIAT" if asset == "USD" else "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": _text(account.hold), "currency": asset},
                "retail_portfolio_id": "mock-portfolio",
            }
            for asset, account in page
        ]
        return JSONResponse({"accounts": accounts, "has_next": bool(cursor), "cursor": cursor, "size": len(accounts)})


@dataclass(frozen=True)
class _Call:
    """A request and its body, read strictly."""

    request: Request
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise BadRequest("the body is not JSON") from None

    def only(self, allowed: Iterable[str]) -> None:
        if unknown := set(self.request.query_params) - set(allowed):
            raise BadRequest(f"unknown query parameters {sorted(unknown)}")

    def many(self, name: str) -> list[str]:
        return self.request.query_params.getlist(name)

    def one(self, name: str) -> str | None:
        values = self.many(name)
        if len(values) > 1:
            raise BadRequest(f"{name} given more than once")
        return values[0] if values else None

    def page(self, items: list[Any], page_size: int) -> tuple[list[Any], str]:
        """One page of `items` (at most ``limit`` and `page_size`) from the ``cursor``, and the next cursor ("" at
        the end)."""
        limit, cursor = self.one("limit"), self.one("cursor")
        if limit is not None and not (limit.isdigit() and int(limit) > 0):
            raise BadRequest("limit must be a positive integer")
        if cursor is not None and not cursor.isdigit():
            raise BadRequest("bad cursor")
        start = int(cursor) if cursor else 0
        size = min(page_size, int(limit)) if limit else page_size
        end = start + size
        return items[start:end], str(end) if end < len(items) else ""
