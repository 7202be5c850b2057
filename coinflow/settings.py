"""The one settings class of the project.

Every CLI builds `Settings()` once at start-up and passes it down; nothing else
reads the environment. Variables use the prefix ``COINFLOW_``; the ones the
wider ecosystem already names (``KAFKA_BROKER_ADDRESS``, ``REDIS_URL``) are
also read under those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import feature_repo

INTERVALS_SECONDS = {"1m": 60, "5m": 300}


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
    window_grace_ms: int = Field(
        default=500, description="How late a trade may arrive and still join its candle."
    )
    max_future_ms: int = Field(
        default=60_000, description="Trades stamped further than this ahead of the clock are rejected."
    )
    tick_interval_s: float = Field(
        default=1.0, description="Live sources emit a clock tick per pair this often, closing quiet windows."
    )
    commit_interval_s: float = Field(
        default=0.5, description="Quix checkpoint interval; the feature-store sink flushes on it."
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

    # Observability
    metrics_port: int = Field(default=9108, description="Prometheus metrics port of long-running commands (0: off).")
    log_level: str = "INFO"

    @field_validator("pairs", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [p.strip() for p in value.split(",") if p.strip()]
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
