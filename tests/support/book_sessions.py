"""The recorded Coinbase session's own view of its book: the ticker's best bid and ask, to check a rebuilt book."""

from __future__ import annotations

import gzip
import json

import pandas as pd

from coinflow.times import rfc3339_to_ms
from tests.support.paths import COINBASE_SESSION

TOLERANCE_MS = 250


def recorded_tickers() -> pd.DataFrame:
    """Best bid and ask of every ticker message of the recorded Coinbase session, with its time."""
    rows = []
    with gzip.open(COINBASE_SESSION, "rt") as lines:
        for line in lines:
            entry = json.loads(line)
            message = json.loads(entry["data"]) if entry["t"] == "recv" else {}
            if message.get("channel") != "ticker":
                continue
            ts = rfc3339_to_ms(message["timestamp"])
            for event in message["events"]:
                for ticker in event["tickers"]:
                    rows.append({"ts": ts, "bid": float(ticker["best_bid"]), "ask": float(ticker["best_ask"])})
    return pd.DataFrame(rows)


def agreement(states: pd.DataFrame, tickers: pd.DataFrame) -> float:
    """Share of ticker messages whose best bid and ask the rebuilt book showed within +-250 ms (or just before)."""
    states = states.sort_values("timestamp_ms")
    hits = 0
    for ticker in tickers.itertuples():
        near = states[(states.timestamp_ms - ticker.ts).abs() <= TOLERANCE_MS]
        before = states[states.timestamp_ms <= ticker.ts].tail(1)
        both = pd.concat([near, before])
        hits += bool(((both.best_bid == ticker.bid) & (both.best_ask == ticker.ask)).any())
    return hits / len(tickers)
