"""The one settings tree of the project, in sections.

Every CLI builds `Settings()` once at start-up and passes it (or one of its
sections) down; nothing else reads the environment. Each setting keeps the
one flat environment variable it always had (``COINFLOW_DEEP_HIDDEN_SIZE``
sets ``settings.deep.hidden_size``): a section's variables are its prefix
plus the field's name, unless the field names its own (``env``). The ones the
wider ecosystem already names (``KAFKA_BROKER_ADDRESS``, ``REDIS_URL``,
``MLFLOW_TRACKING_URI``) are also read under those names. Keyword arguments
take the same names without ``COINFLOW_`` (``Settings(redis_url=...)``), and
`Settings.override` copies a tree with some of them changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

import feature_repo
from coinflow.quality import DEAD_LETTER_MAX_BYTES
from coinflow.redis_store import RedisType, parse_redis_url
from coinflow.schemas import INTERVALS_SECONDS

PREFIX = "COINFLOW_"


def comma_items(text: str | None) -> list[str]:
    """The items of a comma-separated value (a variable or a command's option), trimmed, empty ones dropped."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def split_commas(value: object) -> object:
    """A list setting from the environment: ``a,b`` (`comma_items`) or a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text.startswith("[") else comma_items(text)
    return value


# The one type of every list setting: comma-separated in the environment, a list in Python.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
PositiveIntList = Annotated[list[Annotated[int, Field(ge=1)]], NoDecode, BeforeValidator(split_commas)]


def env(*names: str) -> dict[str, Any]:
    """A field's own variable names (without ``COINFLOW_``; a name starting with ``=`` is taken as it is)."""
    return {"env": names}


class Section(BaseModel):
    """A group of settings; `env_prefix` + the field's name (upper case) is its variable, after ``COINFLOW_``."""

    model_config = ConfigDict(extra="forbid")
    env_prefix: ClassVar[str] = ""

    @classmethod
    def env_names(cls, name: str) -> tuple[str, ...]:
        """The variables that set field `name`, first one first (``COINFLOW_...`` before an ecosystem name)."""
        extra = cls.model_fields[name].json_schema_extra
        own = cast(tuple[str, ...], extra.get("env", ())) if isinstance(extra, dict) else ()
        names = own or (f"{cls.env_prefix}{name}".upper(),)
        return tuple(n[1:] if n.startswith("=") else PREFIX + n for n in names)


class Services(Section):
    """The local services: broker, Redis, MLflow, where the project keeps its state, logs and metrics."""

    kafka_broker_address: str | None = Field(
        default=None,
        description="Kafka/Redpanda bootstrap servers; unset starts the embedded Tansu broker.",
        json_schema_extra=env("KAFKA_BROKER_ADDRESS", "=KAFKA_BROKER_ADDRESS"),
    )
    embedded_broker_port: int = Field(
        default=19092, description="Port of the embedded broker when no broker is configured."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis online store; started locally when it does not answer.",
        json_schema_extra=env("REDIS_URL", "=REDIS_URL"),
    )
    redis_type: RedisType = Field(
        default="redis",
        description="redis: REDIS_URL is one server. redis_cluster: a Redis Cluster, REDIS_URL naming one or more of "
        "its nodes (redis://[:password@]host1:port1,host2:port2,...; database 0 only); it is never started locally.",
    )
    run_dir: Path = Field(
        default=Path(".coinflow"),
        description="Where the project keeps pid files, logs, broker data and stream state.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server; unset starts (or reuses) the project's own on 127.0.0.1:<mlflow_port>.",
        json_schema_extra=env("MLFLOW_TRACKING_URI", "=MLFLOW_TRACKING_URI"),
    )
    mlflow_port: int = Field(
        default=5000,
        description="Port of the project's MLflow server (by default SQLite + artifacts under run_dir/mlflow).",
    )
    mlflow_auth_username: str = Field(
        default="admin", description="Admin user of the project's MLflow server when basic auth is on."
    )
    mlflow_auth_password: SecretStr | None = Field(
        default=None,
        description="Set: the project's MLflow server runs MLflow's basic-auth app with this admin password (fixed "
        "when its user store is first created) and the project's clients log in with it. Unset: no auth.",
    )
    mlflow_backend_store_uri: str | None = Field(
        default=None,
        description="Backend store of the project's MLflow server, an SQLAlchemy URL such as "
        "postgresql://user:password@host:5432/mlflow (the database must exist); unset: SQLite under run_dir/mlflow.",
    )
    mlflow_artifacts_destination: str | None = Field(
        default=None,
        description="Where the project's MLflow server keeps the artifacts it proxies (a path, file:///..., or a URI "
        "of an MLflow artifact store such as s3://bucket/path with its client installed); unset: run_dir/mlflow.",
    )
    broker_wait_s: float = Field(
        default=30.0,
        gt=0.0,
        description="How long a finite command (replay-trades, backfill-ohlcv, backfill-rest, replay-session) waits "
        "for a broker that went away before it fails; live commands wait until it is back.",
    )
    metrics_port: int = Field(default=9108, description="Prometheus metrics port of long-running commands (0: off).")
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _redis_url_fits_type(self) -> Services:
        """REDIS_URL must be an address of COINFLOW_REDIS_TYPE (a clear error at start-up, not at the first write)."""
        parse_redis_url(self.redis_url, self.redis_type)
        return self

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"


class Feast(Section):
    """The Feast repository and its registry (the stores themselves are in feature_store.yaml)."""

    env_prefix: ClassVar[str] = "FEAST_"

    repo_path: Path = Field(
        default_factory=lambda: Path(feature_repo.__file__).parent,
        description="The Feast repository (feature_store.yaml and definitions).",
        json_schema_extra=env("FEATURE_REPO_PATH"),
    )
    project: str = Field(default="coinflow", description="Feast project name.")
    registry_file: Path | None = Field(
        default=None,
        description="Feast registry file; defaults to <feature repo>/data/registry.db.",
        json_schema_extra=env("FEAST_REGISTRY_PATH"),
    )
    offline_store: Literal["yaml", "spark"] = Field(
        default="yaml",
        description="yaml: the offline store of feature_store.yaml (the DuckDB ASOF store); spark: Feast's Spark "
        "offline store over the same Parquet files (needs the spark extra: pip install -e '.[spark]').",
    )
    spark_master: str = Field(
        default="local[2]", description="Spark master of the spark offline store (local[N]: in-process, N cores)."
    )

    @property
    def registry_path(self) -> Path:
        return self.registry_file or self.repo_path / "data" / "registry.db"


class Topics(Section):
    """The names of the topics the pipelines meet on, and how the project creates them."""

    trades: str = Field(default="trades", json_schema_extra=env("TRADES_TOPIC"))
    candles: str = Field(default="candles", json_schema_extra=env("CANDLES_TOPIC"))
    features: str = Field(default="features", json_schema_extra=env("FEATURES_TOPIC"))
    dead_letters: str = Field(default="dead-letters", json_schema_extra=env("DEAD_LETTER_TOPIC"))
    book_updates: str = Field(
        default="book-updates",
        description="Normalised book frames from the sources.",
        json_schema_extra=env("BOOK_UPDATES_TOPIC"),
    )
    book: str = Field(
        default="book", description="Book-state records, one per book update.", json_schema_extra=env("BOOK_TOPIC")
    )
    book_features: str = Field(
        default="book-features",
        description="The 4 s order-book feature rows, as the feature store gets them (live trading decides on them).",
        json_schema_extra=env("BOOK_FEATURES_TOPIC"),
    )
    orders: str = Field(
        default="orders",
        description="Every order event of the execution service.",
        json_schema_extra=env("ORDERS_TOPIC"),
    )
    fills: str = Field(
        default="fills", description="Every fill the execution service recorded.", json_schema_extra=env("FILLS_TOPIC")
    )
    predictions: str = Field(
        default="predictions",
        description="Streaming predictions, one per pair, candle and horizon.",
        json_schema_extra=env("PREDICTIONS_TOPIC"),
    )
    partitions: int = Field(
        default=1, description="Partitions of topics the project creates.", json_schema_extra=env("TOPIC_PARTITIONS")
    )
    retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000,
        description="Retention of topics the project creates.",
        json_schema_extra=env("TOPIC_RETENTION_MS"),
    )


class Stream(Section):
    """Stream processing: windows, clocks, checkpoints, the sink, sources' buffers and dead letters."""

    consumer_group: str = "feature-pipeline"
    candle_interval: Literal["1m", "5m"] = Field(
        default="1m", description="Candle window length (a feature view per interval exists)."
    )
    window_grace_ms: int = Field(default=250, description="How late a trade may arrive and still join its candle.")
    max_future_ms: int = Field(
        default=60_000,
        description="Trades and candles (from any source, files included) stamped further than this ahead of the "
        "clock are rejected.",
    )
    tick_interval_s: float = Field(
        default=1.0, description="Live sources emit a clock tick per pair this often, closing quiet windows."
    )
    commit_interval_s: float = Field(
        default=0.2, description="Quix checkpoint interval; the feature-store sink flushes on it."
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = "at-least-once"
    sink_retries: int = Field(default=5, description="Attempts of a feature-store write before giving up.")
    online_window_length: int = Field(
        default=60,
        ge=1,
        description="Candles per pair the feature pipeline keeps online as the input window of sequence models "
        "(at least the COINFLOW_DEEP_SEQUENCE_LENGTH of the models served).",
    )
    dead_letter_max_bytes: int = Field(
        default=DEAD_LETTER_MAX_BYTES,
        ge=1024,
        description="Largest dead-letter record (JSON); a longer raw input is cut, its original length kept "
        "(keep it below the broker's message size limit, 1 MB by default).",
    )
    source_buffer_messages: int = Field(
        default=100_000,
        ge=1000,
        description="Records a source keeps while the broker is unreachable (librdkafka's queue); once full, "
        "newer records are dropped and counted (coinflow_source_dropped_total).",
    )

    @property
    def candle_seconds(self) -> int:
        return INTERVALS_SECONDS[self.candle_interval]

    @property
    def candle_close_after_ms(self) -> int:
        """How long after a pair's last trade its last candle can be closed: the window plus the grace."""
        return self.candle_seconds * 1000 + self.window_grace_ms


class Exchanges(Section):
    """The exchanges' endpoints, the pairs and products streamed, and how sources reconnect."""

    pairs: CommaList = Field(default_factory=lambda: ["BTC/USD", "ETH/USD"])
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    kraken_rest_url: str = "https://api.kraken.com"
    kraken_book_depth: int = Field(
        default=25, description="Depth of the Kraken v2 book subscription (levels per side: 10, 25, 100, 500 or 1000)."
    )
    rest_min_interval_s: float = Field(
        default=1.0, description="Least time between Kraken REST calls (public rate limit)."
    )
    coinbase_ws_url: str = Field(
        default="wss://advanced-trade-ws.coinbase.com", description="Coinbase Advanced Trade market-data WebSocket."
    )
    coinbase_rest_url: str = Field(
        default="https://api.coinbase.com",
        description="Coinbase Advanced Trade REST API (orders, fills, accounts) of the trading gateway.",
    )
    coinbase_products: CommaList = Field(
        default_factory=lambda: ["BTC-USD", "ETH-USD"],
        description="Coinbase products whose books and trades are streamed.",
    )
    coinbase_api_key: SecretStr | None = Field(
        default=None, description="Optional CDP API key name; public market data needs none."
    )
    coinbase_api_secret: SecretStr | None = Field(
        default=None, description="Private key (PEM, EC) of the optional CDP API key; signs a JWT per subscription."
    )
    reconnect_initial_s: float = Field(default=0.5, description="First reconnect delay.")
    reconnect_max_s: float = Field(default=30.0, description="Largest reconnect delay.")

    @field_validator("kraken_book_depth")
    @classmethod
    def _kraken_depth(cls, value: int) -> int:
        if value not in (10, 25, 100, 500, 1000):
            raise ValueError("Kraken v2 book depth must be 10, 25, 100, 500 or 1000")
        return value


class Books(Section):
    """The order-book pipeline: its consumer group and how book features are sampled."""

    env_prefix: ClassVar[str] = "BOOK_"

    consumer_group: str = "book-pipeline"
    sample_ms: int = Field(
        default=4000, description="Order-book features are sampled at the end of each window this long."
    )
    imbalance_levels: int = Field(default=10, description="Levels per side in the book imbalance.")


def universe_pairs(value: object) -> object:
    """The universe: a comma list (or JSON list) of pairs, or the path of a file of one pair a line (blank lines
    and ``#`` comments skipped), read here, once at start-up."""
    if isinstance(value, str) and "," not in value and Path(value.strip()).expanduser().is_file():
        lines = Path(value.strip()).expanduser().read_text(encoding="utf-8").splitlines()
        return [pair for line in lines if (pair := line.split("#", 1)[0].strip())]
    return split_commas(value)


def _is_pair(text: str) -> bool:
    base, slash, quote = text.partition("/")
    return bool(slash) and base.isalnum() and quote.isalnum() and text.isupper()


class Universe(Section):
    """The universe of tickers and its per-ticker features (log return, rolling volatility, Hurst exponent)."""

    env_prefix: ClassVar[str] = "UNIVERSE_"

    pairs: Annotated[list[str], NoDecode, BeforeValidator(universe_pairs)] = Field(
        default_factory=list,
        description="The universe: pairs BASE/QUOTE, comma-separated, or the path of a file of one pair a line "
        "(unset or empty: every file backfill-universe is given).",
        json_schema_extra=env("UNIVERSE"),
    )
    consumer_group: str = "universe-pipeline"
    candles_topic: str = Field(
        default="universe-candles",
        description="Candles the universe features are computed from (backfill-universe writes its files there; "
        "the candle pipeline's candles topic works too).",
    )
    volatility_window: int = Field(
        default=60, ge=2, description="Rolling volatility: the sample standard deviation of this many log returns."
    )
    hurst_window: int = Field(
        default=256,
        ge=64,
        description="Rolling Hurst exponent (DFA-1) over this many log returns (at least 64: two octaves of scales).",
    )
    max_gap_intervals: int = Field(
        default=5,
        ge=0,
        description="Missing candles up to this many in a row count as unchanged prices (zero log returns); a "
        "longer gap restarts the ticker's windows.",
    )

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        bad = [pair for pair in value if not _is_pair(pair)]
        if bad:
            raise ValueError(f"not pairs BASE/QUOTE (nor a file of them): {', '.join(bad)}")
        return value


class Training(Section):
    """The price models' training: pairs, horizon, splits, data checks, tuning and the promotion gate."""

    pairs: CommaList = Field(
        default_factory=lambda: ["BTC/USDC"],
        description="Pairs `make train` trains (the bundled 1-minute history is backfilled as BTC/USDC).",
        json_schema_extra=env("TRAINING_PAIRS"),
    )
    horizon_minutes: int = Field(default=1, ge=1, description="Forecast horizon: the close this many minutes ahead.")
    promotion_margin: float = Field(
        default=0.001,
        ge=0.0,
        lt=1.0,
        description="A model becomes champion only with a test MAE this fraction below both the last-price "
        "baseline's and the champion's.",
    )
    optuna_trials: int = Field(
        default=20, ge=1, description="Optuna trials of the XGBoost search (each fits one model per walk-forward fold)."
    )
    optuna_storage: str | None = Field(
        default=None,
        description="Optuna RDB storage of the XGBoost search, an SQLAlchemy URL such as "
        "postgresql://user:password@host:5432/optuna (the database must exist), shared by `train` and the "
        "`tune-worker` processes that join its search; unset: each run searches in memory.",
    )
    optuna_study: str | None = Field(
        default=None,
        description="Name of the XGBoost search's study in optuna_storage (one pair and horizon per name); unset: "
        "price-<pair>-<horizon>m-xgboost-<hash of the tuning rows>, so the workers of one training meet in it.",
    )
    walk_forward_folds: int = Field(
        default=3, ge=2, description="Expanding-window folds for tuning and walk-forward evaluation."
    )
    validation_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.5, description="Share of the history (by time) for validation."
    )
    test_fraction: float = Field(
        default=0.15,
        gt=0.0,
        lt=0.5,
        description="Share of the history (by time, the most recent) held out for the test.",
    )
    min_training_rows: int = Field(
        default=1000, ge=10, description="Fewer labelled rows than this for a pair is an error."
    )
    max_missing_fraction: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="Largest share of candle slots without a candle (exchanges omit minutes without trades).",
    )
    xgboost_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="XGBoost device; auto uses cuda when a GPU is visible."
    )
    seed: int = Field(
        default=42, description="Seed of the Optuna sampler and XGBoost.", json_schema_extra=env("TRAINING_SEED")
    )


class Deep(Section):
    """The deep models (LSTM/GRU sequence regressors, and the action network's training loop)."""

    env_prefix: ClassVar[str] = "DEEP_"

    sequence_length: int = Field(default=60, ge=2, description="Candles (rows) in the window a sequence model reads.")
    hidden_size: int = Field(default=64, ge=1, description="Hidden units of the LSTM/GRU.")
    layers: int = Field(default=1, ge=1, description="Stacked LSTM/GRU layers.")
    pair_embedding_dim: int = Field(default=4, ge=1, description="Size of the learned pair embedding.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    epochs: int = Field(default=20, ge=1, description="Most training epochs (early stopping may end sooner).")
    batch_size: int = Field(default=256, ge=1, description="Windows per training step.")
    learning_rate: float = Field(
        default=1e-3, gt=0.0, description="AdamW learning rate (cosine-annealed over the epochs)."
    )
    patience: int = Field(default=3, ge=1, description="Epochs without a better validation loss before training stops.")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        default="auto", description="Torch device; auto takes cuda, then mps, then cpu."
    )
    loader_workers: int | None = Field(
        default=None, ge=0, description="DataLoader worker processes; unset: 0 on cpu, 4 on a GPU."
    )
    compile: bool = Field(default=False, description="torch.compile the model (CUDA only).")
    checkpoint_dir: str | None = Field(
        default=None,
        description="Where each epoch's checkpoint goes: a folder or an fsspec URL (s3://...); unset: "
        "<run_dir>/checkpoints.",
    )
    tensorboard_dir: Path | None = Field(
        default=None, description="TensorBoard logs of deep training; unset: <run_dir>/tensorboard."
    )


class Action(Section):
    """The order-book action model: the books it is trained on, its labels and its loss."""

    env_prefix: ClassVar[str] = "ACTION_"

    products: CommaList = Field(
        default_factory=lambda: ["coinbase:BTC-USD", "coinbase:ETH-USD"],
        description="Books (<exchange>:<product>) the action model is trained on by default (`train --models action`).",
    )
    horizon_s: float = Field(
        default=300.0,
        gt=0.0,
        description="Action labels: the best sequence of actions over this many seconds after a sample.",
    )
    min_samples: int = Field(default=500, ge=10, description="Fewer labelled book samples than this is an error.")
    tick: float | None = Field(
        default=None,
        gt=0.0,
        description="Price tick of the book (passive orders rest one tick inside); unset: inferred.",
    )
    loss: Literal["mse", "bce"] = Field(
        default="mse", description="mse: regress the five action values; bce: classify which actions are optimal."
    )


class Simulation(Section):
    """The trading simulation over a test period: the account, fees, the fill model and the regression rule."""

    env_prefix: ClassVar[str] = "SIMULATION_"

    initial_quote: float = Field(
        default=10_000.0, gt=0.0, description="Quote currency (USD) the simulated account starts with."
    )
    taker_fee: float = Field(
        default=0.004, ge=0.0, lt=1.0, description="Fee (fraction of notional) of orders that take liquidity."
    )
    maker_fee: float = Field(default=0.0025, ge=0.0, lt=1.0, description="Fee of passive orders that rest in the book.")
    threshold: float = Field(
        default=0.004,
        ge=0.0,
        description="A regression model buys (sells) when its predicted log return is above (below minus) this.",
    )
    touch_fill: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of a passive order that fills when the price only touches its limit (through it: all).",
    )


class Serve(Section):
    """The inference pipeline: the prediction API, the models it serves, streaming predictions, live evaluation."""

    env_prefix: ClassVar[str] = "SERVE_"

    host: str = Field(default="127.0.0.1", description="Interface the prediction API listens on.")
    port: int = Field(default=8000, description="Port of the prediction API.")
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Server processes of the prediction API, each with its own models and alias watcher; more than "
        "one run under gunicorn with their metrics aggregated (unset: one per core).",
    )
    pairs: CommaList = Field(
        default_factory=list,
        description="Pairs the API and the streaming predictions serve (unset or empty: the training pairs).",
    )
    horizons: PositiveIntList = Field(
        default_factory=list,
        description="Horizons (minutes) served, one registered model each; a request without one gets the first "
        "(unset or empty: the training horizon).",
    )
    model_alias: str = Field(
        default="champion", description="Registry alias whose model version is served and watched."
    )
    model_version: int | None = Field(
        default=None, ge=1, description="Serve this registered version instead of the alias (pinned: not watched)."
    )
    max_feature_age_s: float = Field(
        default=180.0,
        ge=0.0,
        description="Features older than this are refused with 503 (0: no limit, for replayed or historical data).",
        json_schema_extra=env("MAX_FEATURE_AGE_S"),
    )
    alias_poll_interval_s: float = Field(
        default=10.0,
        gt=0.0,
        description="How often the served alias is checked for a new version.",
        json_schema_extra=env("ALIAS_POLL_INTERVAL_S"),
    )
    online_store_timeout_s: float = Field(
        default=0.5,
        gt=0.0,
        description="Socket timeout of the API's online-store reads; a Redis slower than this answers 503.",
        json_schema_extra=env("ONLINE_STORE_TIMEOUT_S"),
    )
    memoize_predictions: bool = Field(
        default=True,
        description="Reuse a model's output while a pair's online row is unchanged (it changes once per candle); "
        "off: the model runs on every request.",
        json_schema_extra=env("MEMOIZE_PREDICTIONS"),
    )
    max_body_bytes: int = Field(
        default=65_536, ge=1, description="Largest request body the prediction API reads; a larger one is answered 413."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the prediction API (header X-API-Key or Authorization: Bearer); every route but "
        "/health answers 401 without it. Unset: open (listen on loopback only).",
        json_schema_extra=env("API_KEY"),
    )
    prediction_consumer_group: str = Field(
        default="prediction-stream", json_schema_extra=env("PREDICTION_CONSUMER_GROUP")
    )
    evaluation_consumer_group: str = Field(
        default="live-evaluation", json_schema_extra=env("EVALUATION_CONSUMER_GROUP")
    )
    evaluation_grace_s: int = Field(
        default=6 * 3600,
        ge=60,
        description="How long a prediction (or a candle) waits for its counterpart in the live evaluation.",
        json_schema_extra=env("EVALUATION_GRACE_S"),
    )
    evaluation_log_interval_s: float = Field(
        default=60.0,
        ge=0.0,
        description="Least time between two MLflow logs of one model version's live metrics.",
        json_schema_extra=env("EVALUATION_LOG_INTERVAL_S"),
    )


class Trading(Section):
    """The execution service: its database, the venue, fees, latency of the paper venue, risk limits, strategies."""

    env_prefix: ClassVar[str] = "TRADING_"

    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the trading database (orders, fills, ledger), such as "
        "postgresql+psycopg://user@host:5432/trading; unset: SQLite at run_dir/trading.db.",
    )
    initial_quote: Decimal = Field(
        default=Decimal("10000"), gt=0, description="Quote currency (USD) deposited in a new paper account."
    )
    coinbase_maker_fee: Decimal = Field(
        default=Decimal("0.006"), ge=0, lt=1, description="Coinbase Advanced Trade maker fee (lowest volume tier)."
    )
    coinbase_taker_fee: Decimal = Field(
        default=Decimal("0.012"), ge=0, lt=1, description="Coinbase Advanced Trade taker fee (lowest volume tier)."
    )
    kraken_maker_fee: Decimal = Field(
        default=Decimal("0.0025"), ge=0, lt=1, description="Kraken Pro maker fee (lowest volume tier)."
    )
    kraken_taker_fee: Decimal = Field(
        default=Decimal("0.004"), ge=0, lt=1, description="Kraken Pro taker fee (lowest volume tier)."
    )
    order_latency_ms: int = Field(
        default=50, ge=0, description="Paper venue: time from the decision to the order reaching the book."
    )
    report_latency_ms: int = Field(
        default=20, ge=0, description="Paper venue: time from a fill (or any order event) to its report."
    )
    max_position: Decimal | None = Field(default=None, gt=0, description="Most coin held per product (unset: none).")
    max_notional: Decimal | None = Field(
        default=Decimal("50000"), gt=0, description="Most quote held in one product, at the mid (unset: none)."
    )
    max_total_notional: Decimal | None = Field(
        default=Decimal("100000"), gt=0, description="Most quote held in all products together (unset: none)."
    )
    max_order_quantity: Decimal | None = Field(default=None, gt=0, description="Largest order, in coin (unset: none).")
    max_orders_per_second: int | None = Field(default=10, ge=1, description="Most orders sent in any second.")
    max_daily_loss: Decimal | None = Field(
        default=Decimal("1000"),
        gt=0,
        description="Quote lost since midnight UTC (realised + unrealised - fees) after which only reducing orders "
        "pass (unset: none).",
    )
    price_band: Decimal | None = Field(
        default=Decimal("0.02"),
        gt=0,
        lt=1,
        description="How far from the mid (a fraction) a limit, or a market order's worst fill, may be.",
    )
    max_book_age_ms: int = Field(
        default=10_000, ge=0, description="A book older than this is stale: no new orders against it."
    )
    gateway_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        description="Timeout of one exchange gateway request; an order whose request timed out stays unknown until "
        "reconciled with the exchange.",
    )
    gateway_poll_interval_s: float = Field(
        default=1.0, ge=0.0, description="Least time between two polls of an exchange gateway for fills and statuses."
    )
    size_increment: Decimal = Field(
        default=Decimal("0.00000001"),
        gt=0,
        description="Order sizes are rounded down to this (Coinbase's base increment of BTC-USD).",
    )
    trade_fraction: Decimal = Field(
        default=Decimal("1"),
        gt=0,
        le=1,
        description="Share of the available quote (buys) or coin (sells) an action-strategy order uses.",
    )
    threshold: float = Field(
        default=0.0,
        ge=0.0,
        description="Threshold strategy: it buys when the price model's predicted log return beats this plus the "
        "round trip's taker fees, and sells all it holds below minus this.",
    )
    leg_timeout_ms: int = Field(
        default=5000,
        ge=0,
        description="A multi-leg intent (a pair's two legs) whose legs are not all filled this long after its event "
        "time (or one is refused or rejected) is undone: its filled legs are unwound with market orders.",
    )
    pairs_margin: bool = Field(
        default=True,
        description="The pairs strategy's paper account is a margin account: it may sell a leg it does not hold (a "
        "negative coin balance), as the pairs backtest does; off: the reserves check refuses selling coin not held.",
    )
    metrics_port: int = Field(
        default=9120,
        ge=0,
        le=65535,
        description="Prometheus metrics port of the trade command, on 127.0.0.1 (0: off); apart from "
        "COINFLOW_METRICS_PORT, so that a trading process and the other long-running commands can run side by side.",
    )


class PairsTrading(Section):
    """Pairs trading: how pairs are discovered (clusters, cointegration tests, acceptance) and re-tested."""

    env_prefix: ClassVar[str] = "PAIRS_"

    min_history_bars: int = Field(
        default=1000,
        ge=20,
        description="Pair discovery: a ticker (or a pair's overlap) with fewer priced bars than this is not tested.",
    )
    pca_components: int = Field(
        default=10,
        ge=1,
        description="Principal components of the standardised returns whose loadings place the tickers for "
        "clustering (at most tickers - 1).",
    )
    cluster_min_samples: int = Field(
        default=2, ge=2, description="OPTICS min_samples: the fewest tickers in a cluster (2: a pair)."
    )
    cluster_xi: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="OPTICS xi: the least relative drop of reachability that bounds a cluster.",
    )
    fdr: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Benjamini-Hochberg false discovery rate over all the pairs tested (Engle-Granger p-values).",
    )
    adf_max_lag: int = Field(
        default=1,
        ge=0,
        description="Lagged differences in the Engle-Granger ADF regression (the most tried when adf_autolag is set).",
    )
    adf_autolag: Literal["none", "aic", "bic"] = Field(
        default="none",
        description="none: adf_max_lag lags; aic or bic: the best number up to adf_max_lag (each tried: slower).",
    )
    johansen_confidence: Literal["90", "95", "99"] = Field(
        default="95", description="Johansen trace test: the critical value (percent) the statistic must exceed."
    )
    min_half_life_bars: float = Field(
        default=1.0, gt=0.0, description="Accepted pairs: the spread's half-life of mean reversion, at least (bars)."
    )
    max_half_life_bars: float = Field(
        default=1440.0, gt=0.0, description="Accepted pairs: the spread's half-life, at most (bars)."
    )
    min_crossings: int = Field(
        default=12, ge=0, description="Accepted pairs: the fewest times the spread crosses its mean."
    )
    max_hurst: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Accepted pairs: the spread's Hurst exponent (DFA-1) must be below this (0.5: a random walk).",
    )
    retest_interval_s: int = Field(
        default=3600, ge=1, description="Rolling re-tests: discovery runs every this many seconds of event time."
    )
    retest_window_bars: int = Field(
        default=10_080, ge=20, description="Rolling re-tests: the bars of history each re-test reads (the latest)."
    )
    leave_after_s: int = Field(
        default=4 * 3600,
        ge=0,
        description="A candidate pair leaves after failing its re-tests for this long (event time; 0: at once).",
    )
    entry_grid: CommaList = Field(
        default_factory=lambda: ["1.5", "2.0", "2.5", "3.0"],
        description="Pairs backtest: the entry |z| thresholds each walk-forward fold chooses from (on earlier bars).",
    )
    exit_z: float = Field(default=0.5, ge=0.0, description="Pairs strategy: out when |z| is back within this.")
    stop_z: float = Field(
        default=4.0, gt=0.0, description="Pairs strategy: out (and no re-entry until |z| < entry) at this |z|."
    )
    folds: int = Field(default=4, ge=1, description="Pairs backtest: walk-forward folds (the bars cut in folds + 1).")
    capital: Decimal = Field(
        default=Decimal("10000"), gt=0, description="Pairs backtest: quote (USDT) shared equally by the pairs traded."
    )
    max_pairs: int = Field(default=10, ge=1, description="Pairs strategy: the most pairs traded at once (lowest p).")
    taker_fee: Decimal = Field(
        default=Decimal("0.001"),
        ge=0,
        lt=1,
        description="Pairs backtest: the taker fee of every leg's fill (Binance spot's base tier, 0.10 %).",
    )
    slippage: Decimal = Field(
        default=Decimal("0.0005"), ge=0, lt=1, description="Pairs backtest: each market fill's price moved by this."
    )
    dollar_neutral: bool = Field(
        default=True, description="Pairs strategy: half the notional a leg (else x sized by the hedge ratio)."
    )
    noise_bars: int = Field(
        default=5000, ge=100, description="Pairs: the latest bars the Kalman filter's noise variances are fitted on."
    )

    @property
    def entries(self) -> list[float]:
        return [float(v) for v in self.entry_grid]

    @model_validator(mode="after")
    def _half_life_range(self) -> PairsTrading:
        if self.min_half_life_bars > self.max_half_life_bars:
            raise ValueError("COINFLOW_PAIRS_MIN_HALF_LIFE_BARS is above COINFLOW_PAIRS_MAX_HALF_LIFE_BARS")
        return self


class PairJobs(Section):
    """Pair jobs: a job per candidate pair (pair_candidates), its legs joined by event time, its Kalman spread."""

    env_prefix: ClassVar[str] = "PAIR_JOBS_"

    candidates_topic: str = Field(
        default="pair-candidates", description="pair_candidates records (key: pair_id): pairs entering and leaving."
    )
    legs_y_topic: str = Field(default="pair-legs-y", description="Candles of pairs' y legs, keyed by pair_id.")
    legs_x_topic: str = Field(default="pair-legs-x", description="Candles of pairs' x legs, keyed by pair_id.")
    rows_topic: str = Field(
        default="pair-spread",
        description="Every pair_spread_1m row the pair jobs write, also on this topic (key: pair_id), for the pairs "
        "strategy's live trading.",
    )
    consumer_group: str = "pair-jobs"
    orchestrator_consumer_group: str = Field(
        default="pairs-orchestrator",
        description="The consumer group of pairs-orchestrate (universe candles -> pair_candidates).",
    )
    warmup_bars: int = Field(
        default=500,
        ge=30,
        description="A pair job fits its Kalman filter's parameters (maximum likelihood) on its first this many "
        "joined candles, whose rows have NaN features.",
    )
    half_life_window: int = Field(
        default=240, ge=3, description="A pair's half-life of mean reversion over its last this many spreads."
    )
    max_leg_age_s: int = Field(
        default=120,
        ge=0,
        description="A y candle is joined with x's latest candle at or before it only if that one is at most this "
        "much older (else counted as stale_leg, no row).",
    )
    join_grace_s: int = Field(
        default=3600,
        ge=1,
        description="How much of x's history (event time) the as-of join keeps per pair: how far x's candles may "
        "run ahead of y's.",
    )


def _sections(settings_cls: type[BaseModel]) -> Iterator[tuple[str, type[Section]]]:
    for name, info in settings_cls.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            yield name, annotation


def _flat_names(settings_cls: type[BaseModel]) -> dict[str, tuple[str, str]]:
    """Each setting's keyword name (its variables without ``COINFLOW_``, lower case) -> (section, field)."""
    names: dict[str, tuple[str, str]] = {}
    for section, cls in _sections(settings_cls):
        for field in cls.model_fields:
            for variable in cls.env_names(field):
                names[variable.removeprefix(PREFIX).lower()] = (section, field)
    return names


def keyword_names() -> set[str]:
    """The names `Settings(...)` and `Settings.override` take: each setting's variables without ``COINFLOW_``."""
    return set(_flat_names(Settings))


class FlatEnvironment(PydanticBaseSettingsSource):
    """The process environment and the .env file, read by each setting's flat variable names (the environment
    first), grouped into sections."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: EnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self._variables: dict[str, str | None] = {}
        for source in reversed(sources):  # the first source wins
            self._variables.update({k.upper(): v for k, v in source.env_vars.items()})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every section at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, dict[str, Any]] = {}
        for section, cls in _sections(self.settings_cls):
            for field in cls.model_fields:
                found = next((n for n in cls.env_names(field) if self._variables.get(n) is not None), None)
                if found is not None:
                    values.setdefault(section, {})[field] = self._variables[found]
        return values


def _route(values: Mapping[str, Any], names: Mapping[str, tuple[str, str]], fields: Mapping[str, Any]) -> dict:
    """Keyword values by flat name moved into their sections (a flat value overrides the section's)."""
    routed: dict[str, Any] = {}
    flat: dict[str, tuple[str, str, Any]] = {}
    for key, value in values.items():
        if key in fields:
            routed[key] = dict(value) if isinstance(value, Mapping) else value
        elif key.lower() in names:
            flat[key] = (*names[key.lower()], value)
        else:
            raise ValueError(f"Unknown setting {key!r}")
    for section, field, value in flat.values():
        current = routed.get(section, {})
        routed[section] = {**(current.model_dump() if isinstance(current, Section) else current), field: value}
    return routed


class Settings(BaseSettings):
    """Configuration of all three pipelines, one section per concern (see `.env.example`)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="forbid")

    services: Services = Field(default_factory=Services)
    feast: Feast = Field(default_factory=Feast)
    topics: Topics = Field(default_factory=Topics)
    stream: Stream = Field(default_factory=Stream)
    exchanges: Exchanges = Field(default_factory=Exchanges)
    books: Books = Field(default_factory=Books)
    universe: Universe = Field(default_factory=Universe)
    training: Training = Field(default_factory=Training)
    deep: Deep = Field(default_factory=Deep)
    action: Action = Field(default_factory=Action)
    simulation: Simulation = Field(default_factory=Simulation)
    serve: Serve = Field(default_factory=Serve)
    trading: Trading = Field(default_factory=Trading)
    pairs_trading: PairsTrading = Field(default_factory=PairsTrading)
    pair_jobs: PairJobs = Field(default_factory=PairJobs)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource) and isinstance(dotenv_settings, DotEnvSettingsSource)
        return init_settings, FlatEnvironment(settings_cls, env_settings, dotenv_settings)

    @model_validator(mode="before")
    @classmethod
    def _flat_keywords(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        return _route(values, _flat_names(cls), cls.model_fields)

    @model_validator(mode="after")
    def _serve_defaults(self) -> Settings:
        """What the service serves defaults to what is trained."""
        if not self.serve.pairs:
            self.serve.pairs = list(self.training.pairs)
        if not self.serve.horizons:
            self.serve.horizons = [self.training.horizon_minutes]
        return self

    def override(self, **values: Any) -> Settings:
        """A copy with some settings changed, by their flat names (``override(redis_url=...)``), each changed
        section validated again; the environment is not read again."""
        routed = _route(values, _flat_names(type(self)), {})
        update = {
            section: type(getattr(self, section)).model_validate({**getattr(self, section).model_dump(), **fields})
            for section, fields in routed.items()
        }
        return self.model_copy(update=update)

    def as_environment(self) -> dict[str, str]:
        """The variables that give a child process these settings (every setting that has a value, secrets
        included: pass them only to processes of this project)."""
        variables = {}
        for section, cls in _sections(type(self)):
            values = getattr(self, section)
            for field in cls.model_fields:
                value = getattr(values, field)
                if value is not None:
                    secret = value.get_secret_value() if isinstance(value, SecretStr) else value
                    variables[cls.env_names(field)[0]] = _as_text(secret)
        return variables

    @property
    def trading_db_url(self) -> str:
        return self.trading.db_url or f"sqlite:///{(self.services.run_dir / 'trading.db').resolve()}"

    @property
    def checkpoint_root(self) -> str:
        return self.deep.checkpoint_dir or str(self.services.run_dir / "checkpoints")

    @property
    def tensorboard_root(self) -> Path:
        return self.deep.tensorboard_dir or self.services.run_dir / "tensorboard"


def _as_text(value: Any) -> str:
    """A value as a variable holds it (lists comma-separated, booleans in lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _example_lines(cls: type[Section], field: str) -> list[str]:
    """A setting's lines in .env.example: its description, then its variable with the default (commented out when
    it has none, or one that depends on the machine)."""
    info = cls.model_fields[field]
    names = cls.env_names(field)
    name = names[-1] if len(names) > 1 else names[0]  # where the ecosystem has a name for it, that one
    lines = [f"# {info.description}"] if info.description else []
    default = info.get_default(call_default_factory=True)
    if info.default_factory is not None and not isinstance(default, list):
        return [*lines, f"# {name}="]
    return [*lines, f"# {name}=" if default is None else f"{name}={_as_text(default)}"]


def env_example(settings_cls: type[Settings] = Settings) -> str:
    """The text of .env.example: every setting with its default, section by section (kept equal by a test)."""
    lines = [
        "# Every setting of coinflow, with its default, section by section. Copy to .env (read from the working",
        "# directory) or export. Written by `python -m coinflow env-example > .env.example`.",
    ]
    for section, cls in _sections(settings_cls):
        lines += ["", f"# --- {section}: {(cls.__doc__ or '').strip()}"]
        for field in cls.model_fields:
            lines += _example_lines(cls, field)
    return "\n".join(lines) + "\n"
