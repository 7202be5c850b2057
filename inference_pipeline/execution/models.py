"""The registered models strategies trade on, loaded from the MLflow registry by alias or version.

The inference pipeline knows the models only through the registry's
contract (`coinflow.contracts`): the action model's name per book, its input
(the book key and the FeatureService's features, as its run logged them)
and its output column of chosen actions; a price model's name per pair and
horizon, its features and its predicted log return.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from coinflow.contracts import (
    ACTION_DECISION,
    ACTION_NAMES,
    CHAMPION,
    PAIRS_CONFIG_FILE,
    PAIRS_INPUT,
    PREDICTED_RETURN,
    action_model_name,
    pairs_model_name,
    registered_model_name,
)
from coinflow.feature_store import times_ms
from coinflow.settings import Settings
from coinflow.trading.pairs import PairState
from feature_repo.names import BOOK_ENTITY, EVENT_TIMESTAMP
from inference_pipeline.execution.strategies import ActionStrategy, MarketView, PairsStrategy, ThresholdStrategy
from inference_pipeline.model_store import load_pyfunc_with_file


class ModelNotFound(LookupError):
    """No such registered model, alias or version (the message says which and what to run)."""


@dataclass(frozen=True)
class RegisteredModel:
    """A loaded model version and what its training run logged."""

    name: str
    version: str
    run_id: str
    params: dict[str, str]
    model: PyFuncModel
    config: str | None = None  # the text of a configuration file of its model directory, when asked for

    @property
    def features(self) -> list[str]:
        return self.params["features"].split(",")


def load_registered(
    client: MlflowClient,
    tracking_uri: str,
    name: str,
    alias: str | None,
    version: int | None,
    config_file: str | None = None,
) -> RegisteredModel:
    """The version of `name` pinned by `version`, else behind `alias` (default the champion); `config_file`: a file
    of its model directory to read as well (`RegisteredModel.config`)."""
    try:
        found = (
            client.get_model_version(name, str(version))
            if version is not None
            else client.get_model_version_by_alias(name, alias or CHAMPION)
        )
    except MlflowException as exc:
        selector = f"version {version}" if version is not None else f"alias {alias or CHAMPION}"
        raise ModelNotFound(f"no {selector} of the registered model {name}: train it first ({exc.message})") from exc
    if found.run_id is None:
        raise ModelNotFound(f"{name} v{found.version} was registered without a run: what it reads is unknown")
    run = client.get_run(found.run_id)
    model, config = load_pyfunc_with_file(client, tracking_uri, name, str(found.version), config_file)
    return RegisteredModel(name, str(found.version), found.run_id, dict(run.data.params), model, config)


def load_action_model(tracking_uri: str, book: str, alias: str | None, version: int | None) -> RegisteredModel:
    """The action model of a book (``coinbase:BTC-USD``)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    loaded = load_registered(client, tracking_uri, action_model_name(book), alias, version)
    if "features" not in loaded.params:
        raise ModelNotFound(f"{loaded.name} v{loaded.version}: its run logged no features (not trained by `train`)")
    return loaded


def load_price_model(
    tracking_uri: str, pair: str, horizon_minutes: int, alias: str | None, version: int | None
) -> RegisteredModel:
    """The price model of a pair and horizon (``BTC/USD``, 1)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    loaded = load_registered(client, tracking_uri, registered_model_name(pair, horizon_minutes), alias, version)
    missing = {"features", "interval"} - set(loaded.params)
    if missing:
        raise ModelNotFound(f"{loaded.name} v{loaded.version}: its run logged no {sorted(missing)} (not trained by "
                            "`train`)")  # fmt: skip
    return loaded


@dataclass(frozen=True)
class PairsModel:
    """A registered pairs configuration: its policy (the pyfunc) and, from its JSON, the pairs (id -> y and x
    tickers), the sizing and the costs its decisions assumed."""

    registered: RegisteredModel
    pairs: dict[str, tuple[str, str]]
    dollar_neutral: bool
    taker_fee: Decimal
    slippage: Decimal


def load_pairs_model(tracking_uri: str, interval: str, alias: str | None, version: int | None) -> PairsModel:
    """The pairs configuration of an interval (``pairs-1m``)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    loaded = load_registered(client, tracking_uri, pairs_model_name(interval), alias, version, PAIRS_CONFIG_FILE)
    assert loaded.config is not None
    body = json.loads(loaded.config)
    pairs = {p["pair_id"]: (p["y"], p["x"]) for p in body["pairs"]}
    if not pairs:
        raise ModelNotFound(f"{loaded.name} v{loaded.version} holds no pairs: nothing to trade")
    return PairsModel(loaded, pairs, bool(body["dollar_neutral"]), Decimal(body["taker_fee"]),
                      Decimal(body["slippage"]))  # fmt: skip


@dataclass(frozen=True)
class PairsDecider:
    """The pairs policy's next state of one pair from its spread row (z and spread; a warming row's NaN holds)."""

    model: RegisteredModel

    def __call__(self, pair_id: str, features: Mapping[str, float], state: PairState) -> PairState:
        values = (pair_id, features.get("z", math.nan), features.get("spread", math.nan), state.position,
                  state.stopped)  # fmt: skip
        out = self.model.model.predict(pd.DataFrame([dict(zip(PAIRS_INPUT, values, strict=True))]))
        if not isinstance(out, pd.DataFrame) or not {"position", "stopped"} <= set(out.columns):
            raise TypeError(f"{self.model.name} v{self.model.version} did not return position and stopped")
        return PairState(int(out["position"].iloc[0]), bool(out["stopped"].iloc[0]))


def pairs_strategy(settings: Settings, model: PairsModel) -> PairsStrategy:
    """The pairs strategy of a registered configuration: the pairs backtest's capital shared equally by its pairs."""
    notional = settings.pairs_trading.capital / len(model.pairs)
    return PairsStrategy(PairsDecider(model.registered), notional, settings.trading.size_increment,
                         model.dollar_neutral)  # fmt: skip


def score_returns(model: RegisteredModel, rows: pd.DataFrame) -> dict[int, float]:
    """The price model's predicted log return for each feature row (entity, event_timestamp, features), by the
    row's time in ms. The rows are the pair's history in time order, so a sequence model has the rows before each."""
    frame = rows.reset_index(drop=True)
    out = model.model.predict(frame[model.features])
    if not isinstance(out, pd.DataFrame) or PREDICTED_RETURN not in out:
        raise TypeError(f"{model.name} v{model.version} did not return a DataFrame with {PREDICTED_RETURN}")
    times = times_ms(frame[EVENT_TIMESTAMP])
    return dict(zip(times.tolist(), out[PREDICTED_RETURN].astype(float).tolist(), strict=True))


def score_actions(model: RegisteredModel, book: str, rows: pd.DataFrame) -> dict[int, str]:
    """The model's chosen action for each feature row of `book` (entity, event_timestamp, features), by the row's
    time in ms: scored in one call, row by row the same as one at a time (the model reads one sample a row)."""
    frame = rows.reset_index(drop=True)
    inputs = frame[model.features].copy()
    inputs.insert(0, BOOK_ENTITY, book)
    out = model.model.predict(inputs)
    if not isinstance(out, pd.DataFrame):
        raise TypeError(f"{model.name} v{model.version} returned a {type(out).__name__}, not a DataFrame")
    chosen = out[ACTION_DECISION]
    unknown = set(chosen) - set(ACTION_NAMES)
    if unknown:
        raise ValueError(f"{model.name} v{model.version} chose actions outside {ACTION_NAMES}: {sorted(unknown)}")
    times = times_ms(frame[EVENT_TIMESTAMP])
    return dict(zip(times.tolist(), list(chosen), strict=True))


def run_period(model: RegisteredModel, names: Sequence[str] = ("test_start", "test_end")) -> tuple[str, str] | None:
    """The period the model's run held out for testing (its logged bounds), if it logged them."""
    if all(n in model.params for n in names):
        return model.params[names[0]], model.params[names[1]]
    return None


@dataclass(frozen=True)
class ActionDecider:
    """The action model's choice for one decision, from that sample's features (a live session's decider)."""

    model: RegisteredModel
    book: str

    def __call__(self, market: MarketView) -> str:
        row = pd.DataFrame([{name: market.features.get(name, float("nan")) for name in self.model.features}])
        row[EVENT_TIMESTAMP] = pd.Timestamp(market.at_ms, unit="ms", tz="UTC")
        return score_actions(self.model, self.book, row)[market.at_ms]


@dataclass(frozen=True)
class PriceDecider:
    """A price model's predicted log return for one decision, from that candle's row (a live session's decider). A
    row still warming up (a feature without a value) is no prediction, as in a backtest, which scores only complete
    rows: the decision is skipped as bad model output."""

    model: RegisteredModel

    def __call__(self, market: MarketView) -> float:
        values = {name: market.features.get(name, float("nan")) for name in self.model.features}
        missing = sorted(name for name, value in values.items() if math.isnan(value))
        if missing:
            raise ValueError(f"no model output for the decision at {market.at_ms}: no value of {missing}")
        row = pd.DataFrame([values])
        # a decision's features are floats; the columns the model's signature types as integers (the trade count,
        # as the offline store holds it) go back to integers, which the pyfunc's schema check insists on
        schema = self.model.model.metadata.get_input_schema()
        if schema is not None and schema.has_input_names():
            for name, dtype in zip(schema.input_names(), schema.pandas_types(), strict=True):
                if name in row and pd.api.types.is_integer_dtype(dtype):
                    row[name] = row[name].astype(dtype)
        row[EVENT_TIMESTAMP] = pd.Timestamp(market.at_ms, unit="ms", tz="UTC")
        return score_returns(self.model, row)[market.at_ms]


def action_strategy(settings: Settings, model: RegisteredModel, decide: Callable[[MarketView], str]) -> ActionStrategy:
    """The action strategy of a registered model (its tick as its run logged it) with the trading settings."""
    return ActionStrategy(
        decide,
        tick=Decimal(model.params.get("tick", "0.01")),
        size_increment=settings.trading.size_increment,
        trade_fraction=settings.trading.trade_fraction,
        max_position=settings.trading.max_position,
    )


def threshold_strategy(settings: Settings, predict: Callable[[MarketView], float]) -> ThresholdStrategy:
    """The threshold strategy on a price model's predictions with the trading settings."""
    return ThresholdStrategy(predict, settings.trading.threshold, settings.trading.size_increment)


def session_params(
    settings: Settings, model: RegisteredModel, market: Mapping[str, object], venue: str, strategy: str = "action"
) -> dict[str, object]:
    """What a session's MLflow run records of what traded: strategy, market (book, or pair and horizon), venue,
    model and trading settings."""
    return {
        "strategy": strategy,
        **market,
        "venue": venue,
        "model_name": model.name,
        "model_version": model.version,
        "model_run_id": model.run_id,
        **{f"trading_{k}": v for k, v in settings.trading.model_dump(exclude={"db_url", "metrics_port"}).items()},
    }
