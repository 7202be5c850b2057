"""The one settings class of the project.

Every CLI builds `Settings()` once at start-up and passes it down; nothing else
reads the environment. Variables use the prefix ``COINFLOW_``; the ones the
wider ecosystem already names (``KAFKA_BROKER_ADDRESS``, ``REDIS_URL``) are
also read under those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import feature_repo
from coinflow.quality import DEAD_LETTER_MAX_BYTES
from coinflow.schemas import INTERVALS_SECONDS


def _alias(name: str) -> AliasChoices:
    return AliasChoices(f"COINFLOW_{name}", name)


class Settings(BaseSettings):
    """Configuration of all three pipelines (see `.env.example`)."""

    model_config = SettingsConfigDict(
        env_prefix="COINFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # Local services
    kafka_broker_address: str | None = Field(
        default=None,
        validation_alias=_alias("KAFKA_BROKER_ADDRESS"),
        description="Kafka/Redpanda bootstrap servers; unset starts the embedded Tansu broker.",
    )
    embedded_broker_port: int = Field(
        default=19092, description="Port of the embedded broker when no broker is configured."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=_alias("REDIS_URL"),
        description="Redis online store; started locally when it does not answer.",
    )
    run_dir: Path = Field(
        default=Path(".coinflow"),
        description="Where the project keeps pid files, logs, broker data and stream state.",
    )

    # Feature store
    feature_repo_path: Path = Field(
        default_factory=lambda: Path(feature_repo.__file__).parent,
        description="The Feast repository (feature_store.yaml and definitions).",
    )
    feast_project: str = Field(default="coinflow", description="Feast project name.")
    feast_registry_path: Path | None = Field(
        default=None,
        description="Feast registry file; defaults to <feature repo>/data/registry.db.",
    )

    # Topics
    trades_topic: str = "trades"
    candles_topic: str = "candles"
    features_topic: str = "features"
    dead_letter_topic: str = "dead-letters"
    topic_partitions: int = Field(default=1, description="Partitions of topics the project creates.")
    topic_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, description="Retention of topics the project creates."
    )

    # Stream processing
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

    # Exchanges
    pairs: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["BTC/USD", "ETH/USD"])
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    kraken_rest_url: str = "https://api.kraken.com"
    reconnect_initial_s: float = Field(default=0.5, description="First reconnect delay.")
    reconnect_max_s: float = Field(default=30.0, description="Largest reconnect delay.")
    rest_min_interval_s: float = Field(
        default=1.0, description="Least time between Kraken REST calls (public rate limit)."
    )

    # Order books
    coinbase_ws_url: str = Field(
        default="wss://advanced-trade-ws.coinbase.com", description="Coinbase Advanced Trade market-data WebSocket."
    )
    coinbase_products: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC-USD", "ETH-USD"],
        description="Coinbase products whose books and trades are streamed.",
    )
    coinbase_api_key: SecretStr | None = Field(
        default=None, description="Optional CDP API key name; public market data needs none."
    )
    coinbase_api_secret: SecretStr | None = Field(
        default=None, description="Private key (PEM, EC) of the optional CDP API key; signs a JWT per subscription."
    )
    kraken_book_depth: int = Field(
        default=25, description="Depth of the Kraken v2 book subscription (levels per side: 10, 25, 100, 500 or 1000)."
    )
    book_updates_topic: str = Field(default="book-updates", description="Normalised book frames from the sources.")
    book_topic: str = Field(default="book", description="Book-state records, one per book update.")
    book_consumer_group: str = "book-pipeline"
    book_sample_ms: int = Field(
        default=4000, description="Order-book features are sampled at the end of each window this long."
    )
    book_imbalance_levels: int = Field(default=10, description="Levels per side in the book imbalance.")
    book_subscribe_within_s: float = Field(
        default=5.0,
        description="Subscriptions must be sent this soon after connecting (Coinbase closes idle connections).",
    )

    # Training
    training_pairs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTC/USDC"],
        description="Pairs `make train` trains (the bundled 1-minute history is backfilled as BTC/USDC).",
    )
    horizon_minutes: int = Field(default=1, ge=1, description="Forecast horizon: the close this many minutes ahead.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=_alias("MLFLOW_TRACKING_URI"),
        description="MLflow tracking server; unset starts (or reuses) the project's own on 127.0.0.1:<mlflow_port>.",
    )
    mlflow_port: int = Field(
        default=5000, description="Port of the project's MLflow server (SQLite + local artifacts under run_dir/mlflow)."
    )
    promotion_margin: float = Field(
        default=0.001,
        ge=0.0,
        lt=1.0,
        description="A model becomes champion only with a test MAE this fraction below both the last-price baseline's and the champion's.",
    )
    optuna_trials: int = Field(
        default=20, ge=1, description="Optuna trials of the XGBoost search (each fits one model per walk-forward fold)."
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
    training_seed: int = Field(default=42, description="Seed of the Optuna sampler and XGBoost.")

    # Deep models (sequence regressors; training_pipeline/price/sequence.py)
    deep_sequence_length: int = Field(
        default=60, ge=2, description="Candles (rows) in the window a sequence model reads."
    )
    deep_hidden_size: int = Field(default=64, ge=1, description="Hidden units of the LSTM/GRU.")
    deep_layers: int = Field(default=1, ge=1, description="Stacked LSTM/GRU layers.")
    deep_pair_embedding_dim: int = Field(default=4, ge=1, description="Size of the learned pair embedding.")
    deep_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    deep_epochs: int = Field(default=20, ge=1, description="Most training epochs (early stopping may end sooner).")
    deep_batch_size: int = Field(default=256, ge=1, description="Windows per training step.")
    deep_learning_rate: float = Field(
        default=1e-3, gt=0.0, description="AdamW learning rate (cosine-annealed over the epochs)."
    )
    deep_patience: int = Field(
        default=3, ge=1, description="Epochs without a better validation loss before training stops."
    )
    deep_device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        default="auto", description="Torch device; auto takes cuda, then mps, then cpu."
    )
    deep_loader_workers: int | None = Field(
        default=None, ge=0, description="DataLoader worker processes; unset: 0 on cpu, 4 on a GPU."
    )
    deep_compile: bool = Field(default=False, description="torch.compile the model (CUDA only).")
    deep_checkpoint_dir: str | None = Field(
        default=None,
        description="Where each epoch's checkpoint goes: a folder or an fsspec URL (s3://...); unset: <run_dir>/checkpoints.",
    )
    deep_tensorboard_dir: Path | None = Field(
        default=None, description="TensorBoard logs of deep training; unset: <run_dir>/tensorboard."
    )

    online_window_length: int = Field(
        default=60,
        ge=1,
        description="Candles per pair the feature pipeline keeps online as the input window of sequence models "
        "(at least the COINFLOW_DEEP_SEQUENCE_LENGTH of the models served).",
    )

    # Order-book action model (training_pipeline/action/model.py)
    action_products: list[str] = Field(
        default_factory=lambda: ["coinbase:BTC-USD", "coinbase:ETH-USD"],
        description="Books (<exchange>:<product>) the action model is trained on by default (`train --models action`).",
    )
    action_horizon_s: float = Field(
        default=300.0,
        gt=0.0,
        description="Action labels: the best sequence of actions over this many seconds after a sample.",
    )
    action_min_samples: int = Field(
        default=500, ge=10, description="Fewer labelled book samples than this is an error."
    )
    action_tick: float | None = Field(
        default=None,
        gt=0.0,
        description="Price tick of the book (passive orders rest one tick inside); unset: inferred.",
    )
    action_loss: Literal["mse", "bce"] = Field(
        default="mse", description="mse: regress the five action values; bce: classify which actions are optimal."
    )

    # Trading simulation
    simulation_initial_quote: float = Field(
        default=10_000.0, gt=0.0, description="Quote currency (USD) the simulated account starts with."
    )
    simulation_taker_fee: float = Field(
        default=0.004, ge=0.0, lt=1.0, description="Fee (fraction of notional) of orders that take liquidity."
    )
    simulation_maker_fee: float = Field(
        default=0.0025, ge=0.0, lt=1.0, description="Fee of passive orders that rest in the book."
    )
    simulation_threshold: float = Field(
        default=0.004,
        ge=0.0,
        description="A regression model buys (sells) when its predicted log return is above (below minus) this.",
    )
    simulation_touch_fill: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of a passive order that fills when the price only touches its limit (through it: all).",
    )

    # Inference (the prediction API, streaming predictions, live evaluation)
    serve_host: str = Field(default="127.0.0.1", description="Interface the prediction API listens on.")
    serve_port: int = Field(default=8000, description="Port of the prediction API.")
    serve_pairs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda data: list(data["training_pairs"]),
        description="Pairs the API and the streaming predictions serve (default: the training pairs).",
    )
    serve_horizons: Annotated[list[Annotated[int, Field(ge=1)]], NoDecode] = Field(
        default_factory=lambda data: [data["horizon_minutes"]],
        description="Horizons (minutes) served, one registered model each; a request without one gets the first.",
    )
    serve_model_alias: str = Field(
        default="champion", description="Registry alias whose model version is served and watched."
    )
    serve_model_version: int | None = Field(
        default=None,
        ge=1,
        description="Serve this registered version instead of the alias (pinned: not watched).",
    )
    max_feature_age_s: float = Field(
        default=180.0,
        ge=0.0,
        description="Features older than this are refused with 503 (0: no limit, for replayed or historical data).",
    )
    alias_poll_interval_s: float = Field(
        default=10.0, gt=0.0, description="How often the served alias is checked for a new version."
    )
    online_store_timeout_s: float = Field(
        default=0.5,
        gt=0.0,
        description="Socket timeout of the API's online-store reads; a Redis slower than this answers 503.",
    )
    memoize_predictions: bool = Field(
        default=True,
        description="Reuse a model's output while a pair's online row is unchanged (it changes once per candle); "
        "off: the model runs on every request.",
    )
    predictions_topic: str = Field(
        default="predictions", description="Streaming predictions, one per pair, candle and horizon."
    )
    prediction_consumer_group: str = "prediction-stream"
    evaluation_consumer_group: str = "live-evaluation"
    evaluation_grace_s: int = Field(
        default=6 * 3600,
        ge=60,
        description="How long a prediction (or a candle) waits for its counterpart in the live evaluation.",
    )
    evaluation_log_interval_s: float = Field(
        default=60.0,
        ge=0.0,
        description="Least time between two MLflow logs of one model version's live metrics.",
    )

    # Hardening of the API and MLflow (issue 12: request limits, authentication)
    serve_max_body_bytes: int = Field(
        default=65_536,
        ge=1,
        description="Largest request body the prediction API reads; a larger one is answered 413.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the prediction API (header X-API-Key or Authorization: Bearer); every route but "
        "/health answers 401 without it. Unset: open (listen on loopback only).",
    )
    mlflow_auth_username: str = Field(
        default="admin",
        description="Admin user of the project's MLflow server when basic auth is on.",
    )
    mlflow_auth_password: SecretStr | None = Field(
        default=None,
        description="Set: the project's MLflow server runs MLflow's basic-auth app with this admin password (fixed "
        "when its user store is first created) and the project's clients log in with it. Unset: no auth.",
    )

    # Dead letters (hostile input: every rejected frame or row is kept, at most this large)
    dead_letter_max_bytes: int = Field(
        default=DEAD_LETTER_MAX_BYTES,
        ge=1024,
        description="Largest dead-letter record (JSON); a longer raw input is cut, its original length kept "
        "(keep it below the broker's message size limit, 1 MB by default).",
    )

    # Broker outages (issue 12: the broker goes away)
    broker_wait_s: float = Field(
        default=30.0,
        gt=0.0,
        description="How long a finite command (replay-trades, backfill-ohlcv, backfill-rest, replay-session) waits "
        "for a broker that went away before it fails; live commands wait until it is back.",
    )
    source_buffer_messages: int = Field(
        default=100_000,
        ge=1000,
        description="Records a source keeps while the broker is unreachable (librdkafka's queue); once full, "
        "newer records are dropped and counted (coinflow_source_dropped_total).",
    )

    # Observability
    metrics_port: int = Field(default=9108, description="Prometheus metrics port of long-running commands (0: off).")
    log_level: str = "INFO"

    @field_validator("pairs", "coinbase_products", "training_pairs", "serve_pairs", "serve_horizons", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("kraken_book_depth")
    @classmethod
    def _kraken_depth(cls, value: int) -> int:
        if value not in (10, 25, 100, 500, 1000):
            raise ValueError("Kraken v2 book depth must be 10, 25, 100, 500 or 1000")
        return value

    @property
    def candle_seconds(self) -> int:
        return INTERVALS_SECONDS[self.candle_interval]

    @property
    def registry_path(self) -> Path:
        return self.feast_registry_path or self.feature_repo_path / "data" / "registry.db"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def checkpoint_root(self) -> str:
        return self.deep_checkpoint_dir or str(self.run_dir / "checkpoints")

    @property
    def tensorboard_root(self) -> Path:
        return self.deep_tensorboard_dir or self.run_dir / "tensorboard"
