"""The settings tree: every variable it always had still sets its setting, lists parse one way, the sources keep
their priority, and .env.example is the tree written out."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coinflow.settings import PairJobs, PairsTrading, Settings, Trading, Universe, _sections, env_example
from tests.support.paths import ROOT

# The environment variables of the flat settings class this tree replaced: each must still set its setting
# (COINFLOW_BOOK_SUBSCRIBE_WITHIN_S, never read by any code, was removed).
OLD_NAMES = {
    "COINFLOW_ACTION_HORIZON_S",
    "COINFLOW_ACTION_LOSS",
    "COINFLOW_ACTION_MIN_SAMPLES",
    "COINFLOW_ACTION_PRODUCTS",
    "COINFLOW_ACTION_TICK",
    "COINFLOW_ALIAS_POLL_INTERVAL_S",
    "COINFLOW_API_KEY",
    "COINFLOW_BOOK_CONSUMER_GROUP",
    "COINFLOW_BOOK_IMBALANCE_LEVELS",
    "COINFLOW_BOOK_SAMPLE_MS",
    "COINFLOW_BOOK_TOPIC",
    "COINFLOW_BOOK_UPDATES_TOPIC",
    "COINFLOW_BROKER_WAIT_S",
    "COINFLOW_CANDLES_TOPIC",
    "COINFLOW_CANDLE_INTERVAL",
    "COINFLOW_COINBASE_API_KEY",
    "COINFLOW_COINBASE_API_SECRET",
    "COINFLOW_COINBASE_PRODUCTS",
    "COINFLOW_COINBASE_WS_URL",
    "COINFLOW_COMMIT_INTERVAL_S",
    "COINFLOW_CONSUMER_GROUP",
    "COINFLOW_DEAD_LETTER_MAX_BYTES",
    "COINFLOW_DEAD_LETTER_TOPIC",
    "COINFLOW_DEEP_BATCH_SIZE",
    "COINFLOW_DEEP_CHECKPOINT_DIR",
    "COINFLOW_DEEP_COMPILE",
    "COINFLOW_DEEP_DEVICE",
    "COINFLOW_DEEP_DROPOUT",
    "COINFLOW_DEEP_EPOCHS",
    "COINFLOW_DEEP_HIDDEN_SIZE",
    "COINFLOW_DEEP_LAYERS",
    "COINFLOW_DEEP_LEARNING_RATE",
    "COINFLOW_DEEP_LOADER_WORKERS",
    "COINFLOW_DEEP_PAIR_EMBEDDING_DIM",
    "COINFLOW_DEEP_PATIENCE",
    "COINFLOW_DEEP_SEQUENCE_LENGTH",
    "COINFLOW_DEEP_TENSORBOARD_DIR",
    "COINFLOW_EMBEDDED_BROKER_PORT",
    "COINFLOW_EVALUATION_CONSUMER_GROUP",
    "COINFLOW_EVALUATION_GRACE_S",
    "COINFLOW_EVALUATION_LOG_INTERVAL_S",
    "COINFLOW_FEAST_PROJECT",
    "COINFLOW_FEAST_REGISTRY_PATH",
    "COINFLOW_FEATURES_TOPIC",
    "COINFLOW_FEATURE_REPO_PATH",
    "COINFLOW_HORIZON_MINUTES",
    "COINFLOW_KRAKEN_BOOK_DEPTH",
    "COINFLOW_KRAKEN_REST_URL",
    "COINFLOW_KRAKEN_WS_URL",
    "COINFLOW_LOG_LEVEL",
    "COINFLOW_MAX_FEATURE_AGE_S",
    "COINFLOW_MAX_FUTURE_MS",
    "COINFLOW_MAX_MISSING_FRACTION",
    "COINFLOW_MEMOIZE_PREDICTIONS",
    "COINFLOW_METRICS_PORT",
    "COINFLOW_MIN_TRAINING_ROWS",
    "COINFLOW_MLFLOW_AUTH_PASSWORD",
    "COINFLOW_MLFLOW_AUTH_USERNAME",
    "COINFLOW_MLFLOW_PORT",
    "COINFLOW_ONLINE_STORE_TIMEOUT_S",
    "COINFLOW_ONLINE_WINDOW_LENGTH",
    "COINFLOW_OPTUNA_TRIALS",
    "COINFLOW_PAIRS",
    "COINFLOW_PREDICTIONS_TOPIC",
    "COINFLOW_PREDICTION_CONSUMER_GROUP",
    "COINFLOW_PROCESSING_GUARANTEE",
    "COINFLOW_PROMOTION_MARGIN",
    "COINFLOW_RECONNECT_INITIAL_S",
    "COINFLOW_RECONNECT_MAX_S",
    "COINFLOW_REST_MIN_INTERVAL_S",
    "COINFLOW_RUN_DIR",
    "COINFLOW_SERVE_HORIZONS",
    "COINFLOW_SERVE_HOST",
    "COINFLOW_SERVE_MAX_BODY_BYTES",
    "COINFLOW_SERVE_MODEL_ALIAS",
    "COINFLOW_SERVE_MODEL_VERSION",
    "COINFLOW_SERVE_PAIRS",
    "COINFLOW_SERVE_PORT",
    "COINFLOW_SIMULATION_INITIAL_QUOTE",
    "COINFLOW_SIMULATION_MAKER_FEE",
    "COINFLOW_SIMULATION_TAKER_FEE",
    "COINFLOW_SIMULATION_THRESHOLD",
    "COINFLOW_SIMULATION_TOUCH_FILL",
    "COINFLOW_SINK_RETRIES",
    "COINFLOW_SOURCE_BUFFER_MESSAGES",
    "COINFLOW_TEST_FRACTION",
    "COINFLOW_TICK_INTERVAL_S",
    "COINFLOW_TOPIC_PARTITIONS",
    "COINFLOW_TOPIC_RETENTION_MS",
    "COINFLOW_TRADES_TOPIC",
    "COINFLOW_TRAINING_PAIRS",
    "COINFLOW_TRAINING_SEED",
    "COINFLOW_VALIDATION_FRACTION",
    "COINFLOW_WALK_FORWARD_FOLDS",
    "COINFLOW_WINDOW_GRACE_MS",
    "COINFLOW_XGBOOST_DEVICE",
    "KAFKA_BROKER_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "REDIS_URL",
}


def all_variables() -> set[str]:
    return {name for _, cls in _sections(Settings) for field in cls.model_fields for name in cls.env_names(field)}


def test_every_variable_of_the_flat_settings_still_sets_one():
    assert all_variables() - OLD_NAMES == {
        "COINFLOW_KAFKA_BROKER_ADDRESS",
        "COINFLOW_REDIS_URL",
        "COINFLOW_MLFLOW_TRACKING_URI",
        "COINFLOW_MLFLOW_BACKEND_STORE_URI",
        "COINFLOW_MLFLOW_ARTIFACTS_DESTINATION",
        "COINFLOW_OPTUNA_STORAGE",
        "COINFLOW_OPTUNA_STUDY",
        "COINFLOW_REDIS_TYPE",
        "COINFLOW_FEAST_OFFLINE_STORE",
        "COINFLOW_FEAST_SPARK_MASTER",
        "COINFLOW_SERVE_WORKERS",
        "COINFLOW_ORDERS_TOPIC",
        "COINFLOW_FILLS_TOPIC",
        "COINFLOW_BOOK_FEATURES_TOPIC",
        "COINFLOW_COINBASE_REST_URL",
        *(f"COINFLOW_TRADING_{field.upper()}" for field in Trading.model_fields),
        *(f"COINFLOW_PAIRS_{field.upper()}" for field in PairsTrading.model_fields),
        *(name for field in Universe.model_fields for name in Universe.env_names(field)),
        *(name for field in PairJobs.model_fields for name in PairJobs.env_names(field)),
    }
    assert all_variables() >= OLD_NAMES


def test_env_example_is_the_tree_written_out():
    assert (ROOT / ".env.example").read_text() == env_example(), (
        "regenerate: python -m coinflow env-example > .env.example"
    )


def test_every_variable_is_in_env_example_on_a_line_of_its_own():
    lines = {line.removeprefix("# ").split("=")[0] for line in env_example().splitlines() if "=" in line}
    names = {cls.env_names(field)[-1] for _, cls in _sections(Settings) for field in cls.model_fields}
    assert names <= lines


def test_variables_reach_their_sections(monkeypatch):
    monkeypatch.setenv("COINFLOW_PAIRS", "BTC/USD, ETH/USD,SOL/USD")
    monkeypatch.setenv("KAFKA_BROKER_ADDRESS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("COINFLOW_DEEP_HIDDEN_SIZE", "32")
    monkeypatch.setenv("COINFLOW_TRADES_TOPIC", "t")
    monkeypatch.setenv("COINFLOW_SERVE_HORIZONS", "1,5")
    settings = Settings(_env_file=None)
    assert settings.exchanges.pairs == ["BTC/USD", "ETH/USD", "SOL/USD"]
    assert settings.services.kafka_broker_address == "kafka-1:9092,kafka-2:9092"
    assert settings.services.redis_url == "redis://cache:6380/2"
    assert settings.deep.hidden_size == 32
    assert settings.topics.trades == "t"
    assert settings.serve.horizons == [1, 5]
    assert settings.stream.candle_seconds == 60


@pytest.mark.parametrize("value", ["coinbase:BTC-USD", "coinbase:BTC-USD,kraken:ETH/USD", '["coinbase:BTC-USD"]'])
def test_every_list_setting_takes_commas_or_json(monkeypatch, value):
    monkeypatch.setenv("COINFLOW_ACTION_PRODUCTS", value)
    expected = ["coinbase:BTC-USD", "kraken:ETH/USD"] if "," in value else ["coinbase:BTC-USD"]
    assert Settings(_env_file=None).action.products == expected


def test_the_project_name_wins_over_the_ecosystem_name(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://a:1/0")
    monkeypatch.setenv("COINFLOW_REDIS_URL", "redis://b:2/0")
    assert Settings(_env_file=None).services.redis_url == "redis://b:2/0"


def test_keywords_over_the_environment_over_the_env_file(monkeypatch, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("COINFLOW_MLFLOW_PORT=5100\nCOINFLOW_SERVE_PORT=8100\nCOINFLOW_DEEP_EPOCHS=7\n")
    monkeypatch.setenv("COINFLOW_SERVE_PORT", "8200")
    monkeypatch.delenv("COINFLOW_MLFLOW_PORT", raising=False)
    monkeypatch.delenv("COINFLOW_DEEP_EPOCHS", raising=False)
    settings = Settings(_env_file=dotenv, deep_epochs=9)
    assert settings.services.mlflow_port == 5100
    assert settings.serve.port == 8200
    assert settings.deep.epochs == 9


def test_a_misspelt_keyword_is_an_error():
    with pytest.raises(ValidationError, match="Unknown setting 'redis_ur'"):
        Settings(_env_file=None, redis_ur="redis://x")


def test_a_bad_value_names_its_variable_section(monkeypatch):
    monkeypatch.setenv("COINFLOW_KRAKEN_BOOK_DEPTH", "7")
    with pytest.raises(ValidationError, match="exchanges.kraken_book_depth"):
        Settings(_env_file=None)


def test_override_changes_and_validates_only_what_it_names():
    settings = Settings(_env_file=None)
    changed = settings.override(redis_url="redis://x:1/0", deep_epochs="3")
    assert changed.services.redis_url == "redis://x:1/0"
    assert changed.deep.epochs == 3  # validated: the string became an int
    assert changed.stream == settings.stream
    assert settings.services.redis_url != "redis://x:1/0"  # a copy


def test_what_is_served_defaults_to_what_is_trained():
    settings = Settings(_env_file=None, training_pairs="ETH/USD", horizon_minutes=5)
    assert (settings.serve.pairs, settings.serve.horizons) == (["ETH/USD"], [5])


def test_as_environment_gives_a_child_process_the_same_settings(monkeypatch):
    settings = Settings(_env_file=None, redis_url="redis://x:1/2", action_products="a:B,c:D", deep_compile=True)
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == settings


def test_the_universe_is_a_list_or_a_file_of_pairs(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFLOW_UNIVERSE", "ETH/USDT, BTC/USDT")
    assert Settings(_env_file=None).universe.pairs == ["ETH/USDT", "BTC/USDT"]
    path = tmp_path / "universe.txt"
    path.write_text("# the majors\nETH/USDT\n\nBTC/USDT  # and bitcoin\n")
    monkeypatch.setenv("COINFLOW_UNIVERSE", str(path))
    assert Settings(_env_file=None).universe.pairs == ["ETH/USDT", "BTC/USDT"]
    monkeypatch.setenv("COINFLOW_UNIVERSE", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="not pairs BASE/QUOTE"):
        Settings(_env_file=None)
