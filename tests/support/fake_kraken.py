"""A fake Kraken ``Trades`` endpoint (an httpx.MockTransport) that pages like Kraken: trades strictly after
``since`` (ns), a page at a time, ``last`` = the last trade's time in ns; chosen calls can be answered with errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from coinflow.schemas import Trade

PAIR = "BTC/USD"  # served as Kraken's XBTUSD

Fault = Callable[[httpx.Request], httpx.Response]


class FakeKraken:
    """``GET /0/public/Trades`` over the given trades of XBTUSD; ``faults`` answer chosen calls."""

    def __init__(self, trades: list[Trade], page_size: int = 100) -> None:
        self.page_size = page_size
        self.requests: list[httpx.Request] = []
        self.faults: dict[int, Fault] = {}  # 1-based call number -> answer
        self.rows: list[tuple[int, list[Any]]] = []
        previous_ns = -1
        for t in trades:  # Kraken times are finer than ms: trades in one ms get distinct ns
            ns = max(t["timestamp_ms"] * 1_000_000, previous_ns + 1)
            previous_ns = ns
            side = "b" if t["side"] == "buy" else "s"
            self.rows.append((ns, [str(t["price"]), str(t["qty"]), ns / 1e9, side, "l", "", t["trade_id"]]))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def since_of_call(self, number: int) -> int:
        return int(self.requests[number - 1].url.params["since"])

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/0/public/Trades"
        fault = self.faults.get(len(self.requests))
        if fault is not None:
            return fault(request)
        if request.url.params["pair"] != "XBTUSD":
            return httpx.Response(200, json={"error": ["EQuery:Unknown asset pair"]})
        since = int(request.url.params.get("since", 0))
        page = [(ns, row) for ns, row in self.rows if ns > since][: self.page_size]
        last = page[-1][0] if page else since
        return httpx.Response(
            200, json={"error": [], "result": {"XXBTZUSD": [row for _, row in page], "last": str(last)}}
        )
