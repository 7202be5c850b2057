"""Feast definitions: the pair entity, push sources, feature views and feature services.

Feature view and feature names are the public contract between the feature
pipeline (which pushes rows), training (which reads them point in time) and
serving (which reads them online). Every row's timestamp is the moment the
value became known: a candle's window END, never its start.

The offline store is Parquet under ``data/offline/<view>/<PAIR>/<YYYY-MM-DD>.parquet``
inside this repository (written idempotently by the pipeline's sink).
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64
from feast.value_type import ValueType

from feature_repo.names import (
    BOOK_ENTITY,
    CANDLE_FEATURES,
    CREATED_TIMESTAMP,
    ENTITY,
    EVENT_TIMESTAMP,
    INDICATOR_FEATURES,
    OHLCV_FEATURES,
    ORDERBOOK_FEATURES,
    ORDERBOOK_SERVICE,
    ORDERBOOK_VIEW,
    PAIR_ENTITY,
    PAIR_SPREAD_FEATURES,
    UNIVERSE_FEATURES,
    indicators_view,
    ohlcv_view,
    pair_spread_view,
    regression_service,
    universe_view,
    window_feature,
    window_view,
)

OFFLINE_ROOT = Path(__file__).resolve().parent / "data" / "offline"

pair = Entity(
    name=ENTITY,
    join_keys=[ENTITY],
    value_type=ValueType.STRING,
    description="A traded pair in the exchange-neutral form BASE/QUOTE, e.g. BTC/USD.",
)


def _push_source(view: str) -> PushSource:
    batch = FileSource(
        name=f"{view}_parquet",
        path=str(OFFLINE_ROOT / view / "*" / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
    )
    return PushSource(name=f"{view}_push", batch_source=batch)


def _views(interval: str) -> tuple[FeatureView, FeatureView]:
    ohlcv = FeatureView(
        name=ohlcv_view(interval),
        entities=[pair],
        ttl=timedelta(hours=6),
        schema=[Field(name=name, dtype=Int64 if name == "trade_count" else Float64) for name in OHLCV_FEATURES],
        source=_push_source(ohlcv_view(interval)),
        online=True,
        description=f"OHLCV candles of {interval}, stamped at the window end.",
    )
    indicators = FeatureView(
        name=indicators_view(interval),
        entities=[pair],
        ttl=timedelta(hours=6),
        schema=[Field(name=name, dtype=Float64) for name in INDICATOR_FEATURES],
        source=_push_source(indicators_view(interval)),
        online=True,
        description=f"Technical indicators over {interval} candles (TA-Lib definitions), stamped at the window end.",
    )
    return ohlcv, indicators


ohlcv_1m, indicators_1m = _views("1m")
ohlcv_5m, indicators_5m = _views("5m")


def _windows(interval: str) -> FeatureView:
    return FeatureView(
        name=window_view(interval),
        entities=[pair],
        ttl=timedelta(hours=6),
        schema=[Field(name=window_feature(name), dtype=Array(Float64)) for name in CANDLE_FEATURES],
        source=_push_source(window_view(interval)),
        online=True,
        description=f"Online only: the last COINFLOW_ONLINE_WINDOW_LENGTH {interval} candles with their indicators, "
        "one list per feature, oldest first, stamped at the latest candle's window end (the input "
        "window of the sequence models; training builds its windows from the offline views).",
    )


candle_windows_1m = _windows("1m")
candle_windows_5m = _windows("5m")

price_regression_1m = FeatureService(
    name=regression_service("1m"),
    features=[ohlcv_1m, indicators_1m],
    description="Price models on 1-minute candles: the tabular ones (baselines, Lasso, XGBoost) read a row, the "
    "sequence models (LSTM/GRU) a window of rows (online: the candle_windows_1m view).",
)
price_regression_5m = FeatureService(
    name=regression_service("5m"),
    features=[ohlcv_5m, indicators_5m],
    description="Tabular price models on 5-minute candles.",
)

product = Entity(
    name=BOOK_ENTITY,
    join_keys=[BOOK_ENTITY],
    value_type=ValueType.STRING,
    description="One order book: exchange and the exchange's product id, e.g. coinbase:ETH-USD, kraken:BTC/USD.",
)

orderbook_4s = FeatureView(
    name=ORDERBOOK_VIEW,
    entities=[product],
    ttl=timedelta(minutes=10),
    schema=[Field(name=name, dtype=Float64) for name in ORDERBOOK_FEATURES],
    source=_push_source(ORDERBOOK_VIEW),
    online=True,
    description="L2 order-book features every 4 s (depth shares in 0.1 % buckets within 2 % of the mid, "
    "averaged over 3 samples; the mid every 30 s over 5 minutes; spread, microprice, imbalance), "
    "stamped at the end of each 4 s window.",
)
orderbook_deep_4s = FeatureService(
    name=ORDERBOOK_SERVICE,
    features=[orderbook_4s],
    description="Deep order-book models (CNN/LSTM over depth snapshots) on 4-second samples.",
)


def _universe(interval: str) -> FeatureView:
    return FeatureView(
        name=universe_view(interval),
        entities=[pair],
        ttl=timedelta(hours=6),
        schema=[Field(name=name, dtype=Float64) for name in UNIVERSE_FEATURES],
        source=_push_source(universe_view(interval)),
        online=True,
        description=f"Per-ticker features of the universe over {interval} candles, stamped at the candle's close: "
        "the close, its log return, the rolling volatility (sample std of COINFLOW_UNIVERSE_VOLATILITY_WINDOW log "
        "returns) and the Hurst exponent by DFA-1 over COINFLOW_UNIVERSE_HURST_WINDOW log returns with its "
        "standard error (NaN until the windows are full, and for a constant window).",
    )


universe_1m = _universe("1m")
universe_5m = _universe("5m")

pair_id = Entity(
    name=PAIR_ENTITY,
    join_keys=[PAIR_ENTITY],
    value_type=ValueType.STRING,
    description="A candidate pair of the universe, y first: ETH-USDT__BTC-USDT is y = ETH/USDT, x = BTC/USDT.",
)

pair_spread_1m = FeatureView(
    name=pair_spread_view("1m"),
    entities=[pair_id],
    ttl=timedelta(hours=6),
    schema=[Field(name=name, dtype=Float64) for name in PAIR_SPREAD_FEATURES],
    source=_push_source(pair_spread_view("1m")),
    online=True,
    description="Per candidate pair, at each 1-minute candle of its y leg (stamped at that candle's close): both "
    "closes, how old x's candle is (x_lag_s; x's latest at or before y's), the Kalman hedge ratio of log y on "
    "log x known before the candle, the spread and its z-score, and the half-life over the last "
    "COINFLOW_PAIR_JOBS_HALF_LIFE_WINDOW spreads (NaN while the job warms up).",
)
