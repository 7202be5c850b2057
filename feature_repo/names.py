"""Names of the feature views and features: the one place they are spelled.

Kept free of Feast imports so pure transforms can use them cheaply;
definitions.py builds the Feast objects from them.
"""

OHLCV_FEATURES = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
INDICATOR_FEATURES = (
    "sma_14",
    "ema_14",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr_14",
    "obv",
    "log_return",
    "realized_vol_30",
)
ENTITY = "pair"
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created"


def ohlcv_view(interval: str) -> str:
    return f"ohlcv_{interval}"


def indicators_view(interval: str) -> str:
    return f"indicators_{interval}"


def regression_service(interval: str) -> str:
    return f"price_regression_{interval}"


# Sequence models served online: per pair, the last N candle rows as one list per feature, oldest first.
CANDLE_FEATURES = OHLCV_FEATURES + INDICATOR_FEATURES


def window_view(interval: str) -> str:
    return f"candle_windows_{interval}"


def window_feature(name: str) -> str:
    return f"{name}_window"


# Order books: one entity per (exchange, product), spelled "<exchange>:<product>" (coinbase:ETH-USD).
BOOK_ENTITY = "product"
ORDERBOOK_VIEW = "orderbook_4s"
ORDERBOOK_SERVICE = "orderbook_deep_4s"
BID_SHARE_FEATURES = tuple(f"bid_share_{i:02d}" for i in range(20))
ASK_SHARE_FEATURES = tuple(f"ask_share_{i:02d}" for i in range(20))
MID_HISTORY_FEATURES = tuple(f"mid_30s_{i}" for i in range(10))
BOOK_TOP_FEATURES = ("mid", "spread", "microprice", "imbalance")
ORDERBOOK_FEATURES = BOOK_TOP_FEATURES + BID_SHARE_FEATURES + ASK_SHARE_FEATURES + MID_HISTORY_FEATURES

# The universe of tickers (pairs trading): per-ticker features of each candle, one view per interval.
UNIVERSE_FEATURES = ("close", "log_return", "volatility", "hurst", "hurst_se")


def universe_view(interval: str) -> str:
    return f"universe_{interval}"


# Pair jobs (pairs trading): per candidate pair, its spread at each candle of its y leg.
PAIR_ENTITY = "pair_id"  # y first: ETH-USDT__BTC-USDT (coinflow.pairs.pair_id)
PAIR_SPREAD_FEATURES = ("y_close", "x_close", "x_lag_s", "beta", "spread", "z", "half_life")


def pair_spread_view(interval: str) -> str:
    return f"pair_spread_{interval}"
