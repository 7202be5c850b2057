"""The registered pairs configuration: the pairs chosen, their filters' noise variances, the rule and the costs, as
a pyfunc (`PairsPolicy`) whose prediction is the rule's next position for each pair's latest z-score."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext

from coinflow.contracts import PAIRS_CONFIG_FILE, PAIRS_INPUT
from coinflow.hedge import NoiseVariances
from coinflow.trading.pairs import PairRule, PairState, next_state
from training_pipeline.tracking import log_python_model

ENTRY = Path(__file__).with_name("served_model.py")
CONFIG = Path(PAIRS_CONFIG_FILE).name
INPUT_COLUMNS = PAIRS_INPUT


@dataclass(frozen=True)
class ChosenPair:
    pair_id: str
    y: str
    x: str
    noise: NoiseVariances


@dataclass(frozen=True)
class PairsConfig:
    """What a pairs backtest chose for its last fold (from the bars before it), to trade from then on."""

    interval: str
    pairs: tuple[ChosenPair, ...]
    rule: PairRule
    taker_fee: Decimal
    slippage: Decimal
    dollar_neutral: bool

    @property
    def hurdle(self) -> float:
        return float(4 * (self.taker_fee + self.slippage))

    def to_json(self) -> str:
        body = asdict(self)
        body["taker_fee"], body["slippage"] = str(self.taker_fee), str(self.slippage)
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> PairsConfig:
        body = json.loads(text)
        pairs = tuple(ChosenPair(p["pair_id"], p["y"], p["x"], NoiseVariances(**p["noise"])) for p in body["pairs"])
        return cls(body["interval"], pairs, PairRule(**body["rule"]), Decimal(body["taker_fee"]),
                   Decimal(body["slippage"]), bool(body["dollar_neutral"]))  # fmt: skip


def decide(config: PairsConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """The rule's next position (and why) for each row: pair_id, its z and spread now, its position and whether it
    is out after a stop; a pair not in the configuration is not traded (position 0, reason not_chosen)."""
    chosen = {p.pair_id for p in config.pairs}
    out = []
    for row in rows.itertuples(index=False):
        if row.pair_id not in chosen:
            out.append((row.pair_id, 0, False, "not_chosen"))
            continue
        state = PairState(int(row.position), bool(row.stopped))
        after, why = next_state(state, float(row.z), config.rule, can_enter=abs(float(row.spread)) > config.hurdle)
        out.append((row.pair_id, after.position, after.stopped, why.value))
    return pd.DataFrame(out, columns=["pair_id", "position", "stopped", "reason"])


class PairsPolicy(PythonModel):
    """The served pairs configuration (see the module docstring)."""

    def load_context(self, context: PythonModelContext) -> None:
        self.config = PairsConfig.from_json((Path(context.artifacts["model"]) / CONFIG).read_text())

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return decide(self.config, model_input)


def log_pairs_pyfunc(config: PairsConfig, name: str) -> ModelInfo:
    """Log `config` as a `PairsPolicy` pyfunc in the active run, to be registered as `name`."""
    policy = PairsPolicy()
    policy.config = config
    first = config.pairs[0].pair_id if config.pairs else "none"
    example = pd.DataFrame([{"pair_id": first, "z": 0.0, "spread": 0.0, "position": 0, "stopped": False}])

    def save(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG).write_text(config.to_json())

    return log_python_model(policy, save, example, name, ENTRY, ("statsmodels",))
