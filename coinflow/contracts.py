"""Names the pipelines share through the MLflow registry, and the shape of a served price model.

The training pipeline registers each pair's price model as
``price-<PAIR without slash>-<H>m`` (also the experiment's name) and each
book's action model as ``action-<PRODUCT without punctuation>``; the alias
``challenger`` is the newest version and ``champion`` the one to serve. A
served price model returns `PREDICTED_RETURN` and `PREDICTED_PRICE` per row.
The inference pipeline depends on these names and on `ServedPriceModel`,
never on the training pipeline's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from coinflow.schemas import pair_slug

CHAMPION = "champion"
CHALLENGER = "challenger"
PREDICTED_RETURN = "predicted_log_return"
PREDICTED_PRICE = "predicted_price"
ACTION_DECISION = "action"
# The order-book action model's five actions, in the order of its scores.
ACTION_NAMES = ("force_buy", "close_buy", "force_sell", "close_sell", "noop")


def registered_model_name(pair: str, horizon_minutes: int) -> str:
    """``price-BTCUSD-1m`` for BTC/USD and a 1-minute horizon (also the experiment's name)."""
    return f"price-{pair_slug(pair)}-{horizon_minutes}m"


# The registered pairs configuration (``pairs-<interval>``): its pyfunc takes these columns, one row a pair, and
# returns each pair's next position and stopped flag; its model directory holds the configuration as JSON
# (pairs: pair_id, y, x; dollar_neutral; taker_fee and slippage as text), which a live session reads for the legs.
PAIRS_INPUT = ("pair_id", "z", "spread", "position", "stopped")
PAIRS_CONFIG_FILE = "artifacts/model/pairs.json"


def pairs_model_name(interval: str) -> str:
    """``pairs-1m``: the registered pairs configuration of an interval (also the experiment's name)."""
    return f"pairs-{interval}"


def action_model_name(product: str) -> str:
    """``action-COINBASEETHUSD`` for the book coinbase:ETH-USD (also the experiment's name)."""
    return f"action-{pair_slug(product)}"


@runtime_checkable
class ServedPriceModel(Protocol):
    """What the service calls on the price model inside a registered pyfunc (its ``model`` attribute), to score a
    row without the pyfunc's DataFrame and schema checks: log returns per row, as the pyfunc gives."""

    def predict(self, features: pd.DataFrame) -> np.ndarray: ...

    def predict_values(self, columns: Sequence[str], values: np.ndarray) -> np.ndarray: ...
