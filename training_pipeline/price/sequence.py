"""LSTM and GRU price models: the sequence regressor behind the training pipeline's `PriceModel` interface.

They predict the same target as the tabular models (the log return to the
close ``horizon`` ahead), so they share the test table, the MLflow logging
and the promotion gate. Inputs are the stationary `model_inputs` of the
FeatureService columns, standardised with statistics of the training rows
only; the target is standardised the same way and fitted with the Huber loss
(one-minute returns have fat tails, and the models are judged on MAE).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from coinflow.settings import Settings
from feature_repo.names import ENTITY
from training_pipeline.deep.checkpoint import CheckpointStore
from training_pipeline.deep.config import DeepConfig, split_holdout
from training_pipeline.deep.data import Series, WindowBatches, frame_rows, lay_out, pair_index, window_index
from training_pipeline.deep.loop import LoopResult, TrainingLoop, seed_everything
from training_pipeline.deep.networks import Cell, SequenceRegressor
from training_pipeline.features import model_inputs
from training_pipeline.labels import TARGET_LOG_RETURN
from training_pipeline.model_base import PriceModel

WEIGHTS_FILE = "weights.pt"
LOSS = nn.HuberLoss
PREDICT_BATCH = 4096


@dataclass(frozen=True)
class Prepared:
    """What training a sequence model needs: the network, the window batches, the batch-order generator and the
    run's key."""

    network: SequenceRegressor
    train: WindowBatches
    validation: WindowBatches
    generator: torch.Generator
    key: str


class SequencePriceModel(PriceModel):
    """A recurrent network over the last N rows of a pair (see `predict` for the input contract)."""

    cell: ClassVar[Cell]
    requirements = ("torch",)

    def __init__(self, features: Sequence[str], config: dict[str, Any] | None = None) -> None:
        self.features = list(features)
        self.config = DeepConfig(**(config or {}))
        self.network: SequenceRegressor | None = None
        self.pairs: list[str] = []
        self.input_mean = self.input_scale = np.zeros(0)
        self.target_mean, self.target_scale = 0.0, 1.0
        self.summary: dict[str, Any] = {}

    def _inputs(self, frame: pd.DataFrame) -> np.ndarray:
        raw = model_inputs(frame[self.features]).to_numpy(dtype=np.float64)
        return ((raw - self.input_mean) / self.input_scale).astype(np.float32)

    def _series(self, frame: pd.DataFrame, targets: bool) -> Series:
        pairs = pair_index(frame_rows(frame, self.pairs[0]), self.pairs)
        scaled = None
        if targets:
            scaled = (frame[TARGET_LOG_RETURN].to_numpy(dtype=np.float64) - self.target_mean) / self.target_scale
        return lay_out(frame, self._inputs(frame), pairs, scaled)

    def _fitted(self) -> SequenceRegressor:
        """The network, built by `prepare` or `load`."""
        if self.network is None:
            raise ValueError(f"the {self.model_type} model is not fitted")
        return self.network

    def _network(self, n_inputs: int) -> SequenceRegressor:
        c = self.config
        return SequenceRegressor(
            n_inputs, len(self.pairs), self.cell, c.hidden_size, c.layers, c.embedding_dim, c.dropout
        )

    def _run_key(self, train: Series, validation: Series) -> str:
        """Names the checkpoint folder: equal data and configuration resume the same run, anything else starts anew."""
        digest = hashlib.sha256(
            json.dumps(
                {
                    "cell": self.cell,
                    "features": self.features,
                    **asdict(self.config),
                    "checkpoint_root": None,
                    "tensorboard_root": None,
                    "device": None,
                    "loader_workers": None,
                },
                sort_keys=True,
            ).encode()
        )
        for series in (train, validation):
            digest.update(series.values.tobytes())
            digest.update(series.targets.tobytes())
        return f"{self.cell}-{digest.hexdigest()[:16]}"

    def prepare(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> Prepared:
        """Fit the scalers and pair vocabulary on `train`, build the network and the window batches of both periods.

        Without `validation` the last rows of `train` (by time) serve for early
        stopping. Validation windows may reach back into the training rows:
        those rows' features are in the past of every validation row, their
        labels are not read.
        """
        if validation is None:
            train, validation = split_holdout(train, self.config.holdout_fraction)
        length = self.config.sequence_length
        self.pairs = sorted(train[ENTITY].astype(str).unique()) if ENTITY in train.columns else ["unknown"]
        scaler = StandardScaler().fit(model_inputs(train[self.features]).to_numpy(dtype=np.float64))
        self.input_mean, self.input_scale = scaler.mean_, scaler.scale_
        target = train[TARGET_LOG_RETURN].to_numpy(dtype=np.float64)
        self.target_mean, self.target_scale = float(target.mean()), float(target.std() or 1.0)

        train_series = self._series(train, targets=True)
        context = pd.concat([train, validation], ignore_index=True)
        validation_series = self._series(context, targets=True)
        is_validation = np.zeros(len(context), bool)
        is_validation[len(train) :] = True
        validation_ends = np.intersect1d(
            validation_series.full_windows(length), np.flatnonzero(is_validation[validation_series.order])
        )
        train_ends = train_series.full_windows(length)
        if len(train_ends) == 0 or len(validation_ends) == 0:
            raise ValueError(
                f"too few rows for windows of {length}: {len(train_ends)} training and "
                f"{len(validation_ends)} validation windows"
            )
        generator = seed_everything(self.config.seed)
        self.network = self._network(train_series.values.shape[1])
        return Prepared(
            self.network,
            WindowBatches(train_series, train_ends, length),
            WindowBatches(validation_series, validation_ends, length),
            generator,
            self._run_key(train_series, validation_series),
        )

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> SequencePriceModel:
        """Fit on labelled rows (see `prepare`), checkpointing every epoch under the run's key."""
        prepared = self.prepare(train, validation)
        key = prepared.key
        checkpoints = (
            CheckpointStore(f"{self.config.checkpoint_root.rstrip('/')}/{key}") if self.config.checkpoint_root else None
        )
        tensorboard = Path(self.config.tensorboard_root) / key if self.config.tensorboard_root else None
        loop = TrainingLoop(prepared.network, self.config.loop(), LOSS(), prepared.generator, checkpoints, tensorboard)
        result = loop.fit(prepared.train, prepared.validation)
        prepared.network.to("cpu")
        self.summary = self._summary(result, key, len(prepared.train), len(prepared.validation))
        return self

    @staticmethod
    def _summary(result: LoopResult, key: str, n_train: int, n_validation: int) -> dict[str, Any]:
        last = result.history[-1] if result.history else {}
        return {
            "device": result.device,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "run_key": key,
            "train_windows": n_train,
            "validation_windows": n_validation,
            "samples_per_s": last.get("samples_per_s", float("nan")),
            "history": result.history,
        }

    @torch.no_grad()
    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Predicted log returns, one per input row, in the input's order.

        Input contract (also of the logged pyfunc): the FeatureService columns
        of consecutive candles, oldest first, optionally with ``pair`` (else
        the pair the model was trained on) and ``event_timestamp`` (then rows
        are ordered by it within each pair). Row ``i``'s prediction reads row
        ``i`` and the ``sequence_length - 1`` rows of its pair before it in the
        input, never later ones. To forecast from the latest candle, pass the
        last ``sequence_length`` rows and take the last prediction; with fewer,
        the window is padded with copies of the first row (less accurate).
        """
        network = self._fitted()
        series = self._series(features, targets=False)
        if len(series) == 0:
            return np.zeros(0)
        network.eval()
        values, pair_ids = torch.from_numpy(series.values), torch.from_numpy(series.pair_ids)
        out = np.empty(len(series), np.float64)
        for begin in range(0, len(series), PREDICT_BATCH):
            ends = np.arange(begin, min(begin + PREDICT_BATCH, len(series)))
            index = torch.from_numpy(window_index(ends, series.starts, self.config.sequence_length))
            out[begin : begin + len(ends)] = network(values[index], pair_ids[torch.from_numpy(ends)]).double().numpy()
        returns = np.empty(len(series), np.float64)
        returns[series.order] = out * self.target_scale + self.target_mean
        return returns

    def training_curve(self) -> list[dict[str, float]]:
        return list(self.summary.get("history", []))

    def params(self) -> dict[str, Any]:
        c = self.config
        params = {
            "cell": self.cell,
            "sequence_length": c.sequence_length,
            "hidden_size": c.hidden_size,
            "layers": c.layers,
            "pair_embedding_dim": c.embedding_dim,
            "dropout": c.dropout,
            "max_epochs": c.epochs,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "patience": c.patience,
            "loss": "huber (standardised target)",
            "pairs": ",".join(self.pairs),
        }
        return params | {k: v for k, v in self.summary.items() if k != "history"}

    def _state(self) -> dict[str, Any]:
        return {"features": self.features, "config": asdict(self.config)}

    def _save_artifacts(self, path: Path) -> None:
        torch.save(
            {
                "network": self._fitted().state_dict(),
                "pairs": self.pairs,
                "n_inputs": len(self.input_mean),
                "input_mean": torch.from_numpy(self.input_mean),
                "input_scale": torch.from_numpy(self.input_scale),
                "target_mean": self.target_mean,
                "target_scale": self.target_scale,
            },
            path / WEIGHTS_FILE,
        )

    @classmethod
    def _restore(cls, state: dict[str, Any], path: Path) -> SequencePriceModel:
        model = cls(**state)
        saved = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.pairs = list(saved["pairs"])
        model.input_mean, model.input_scale = saved["input_mean"].numpy(), saved["input_scale"].numpy()
        model.target_mean, model.target_scale = float(saved["target_mean"]), float(saved["target_scale"])
        model.network = model._network(int(saved["n_inputs"]))
        model.network.load_state_dict(saved["network"])
        model.network.eval()
        return model


class LSTMPriceModel(SequencePriceModel):
    model_type = "lstm"
    cell = "lstm"


class GRUPriceModel(SequencePriceModel):
    model_type = "gru"
    cell = "gru"


SEQUENCE_MODELS: dict[str, type[SequencePriceModel]] = {m.model_type: m for m in (LSTMPriceModel, GRUPriceModel)}


def sequence_model(model_type: str, features: Sequence[str], settings: Settings) -> SequencePriceModel:
    """An unfitted ``lstm`` or ``gru`` model configured from Settings."""
    return SEQUENCE_MODELS[model_type](features, asdict(DeepConfig.from_settings(settings)))
