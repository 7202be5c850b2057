"""The order-book action model: which of five actions to take at a 4-second book sample.

Inputs (`book_inputs`, from one row of the ``orderbook_deep_4s`` FeatureService):
the 10 mids of the last 5 minutes as log differences to the current mid in
basis points, oldest first (a mid not known yet counts as no change); the
20 + 20 depth shares; the book's top: spread and microprice offset in basis
points of the mid, and the imbalance. Standardised with training statistics.

Targets: with the ``mse`` loss the five action values (profit per unit of
coin of the best action sequence that starts with the action, see
`training_pipeline.action.labels`) in basis points of the mid, each minus the
mean of the five (`advantages`: the level they share is the profit of the
path after the first step, which no action changes), standardised;
with ``bce`` the "is optimal" labels (several when tied), as logits. Either
way the decision is the action with the highest output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from coinflow.contracts import ACTION_DECISION, ACTION_NAMES
from feature_repo.names import ASK_SHARE_FEATURES, BID_SHARE_FEATURES, BOOK_ENTITY, MID_HISTORY_FEATURES
from training_pipeline.action.dataset import VALUE_COLUMNS
from training_pipeline.action.labels import ACTIONS, optimal_actions
from training_pipeline.deep.checkpoint import CheckpointStore
from training_pipeline.deep.config import DeepConfig, split_holdout
from training_pipeline.deep.data import TensorBatches, pair_index
from training_pipeline.deep.loop import TrainingLoop, seed_everything
from training_pipeline.deep.networks import ActionNetwork
from training_pipeline.simulation import Action

BPS = 1e4
WEIGHTS_FILE = "weights.pt"
META_FILE = "action_model.json"
LOSSES = ("mse", "bce")
SCORE_COLUMNS = tuple(f"score_{name}" for name in ACTION_NAMES)
DECISION = ACTION_DECISION


def book_inputs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(mid path [n, 10] oldest first, book [n, 43]) of feature rows; see the module docstring. Pure."""
    mid = frame["mid"].to_numpy(dtype=np.float64)
    history = frame[list(reversed(MID_HISTORY_FEATURES))].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        path = np.log(history / mid[:, None]) * BPS
    path = np.where(np.isfinite(path), path, 0.0)
    shares = frame[[*BID_SHARE_FEATURES, *ASK_SHARE_FEATURES]].to_numpy(dtype=np.float64)
    top = np.column_stack(
        [
            frame["spread"].to_numpy(dtype=np.float64) / mid * BPS,
            (frame["microprice"].to_numpy(dtype=np.float64) - mid) / mid * BPS,
            frame["imbalance"].to_numpy(dtype=np.float64),
        ]
    )
    return path, np.column_stack([shares, top])


def values_bps(frame: pd.DataFrame) -> np.ndarray:
    """The labelled action values of each row, in basis points of its mid."""
    return (
        frame[list(VALUE_COLUMNS)].to_numpy(dtype=np.float64) / frame["mid"].to_numpy(dtype=np.float64)[:, None] * BPS
    )


def advantages(values: np.ndarray) -> np.ndarray:
    """Each action's value minus the mean of the row's five: what the decision depends on, without the level that
    all actions share (the profit of the best path after the first step dwarfs the differences between them)."""
    return values - values.mean(axis=1, keepdims=True)


def decision_metrics(chosen: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """How good the chosen actions are against the labels (values in basis points).

    ``accuracy``: share of samples whose chosen action is an optimal one;
    ``mean_value_bps``: mean value of the chosen actions (the best sequence
    that starts with them); ``oracle_value_bps``: the best possible;
    ``noop_value_bps``: always waiting; ``regret_bps``: oracle minus chosen.
    """
    rows = np.arange(len(chosen))
    picked = values[rows, chosen]
    optimal = optimal_actions(values)[rows, chosen] > 0
    oracle = values.max(axis=1)
    return {
        "accuracy": float(optimal.mean()),
        "mean_value_bps": float(picked.mean()),
        "oracle_value_bps": float(oracle.mean()),
        "noop_value_bps": float(values[:, Action.NOOP].mean()),
        "regret_bps": float((oracle - picked).mean()),
    }


class ActionModel:
    """The action network with its input scalers, product vocabulary and loss; fitted on a `BookDataset` frame."""

    model_type: ClassVar[str] = "action"

    def __init__(self, features: Sequence[str], config: dict[str, Any] | None = None, loss: str = "mse") -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown action loss {loss!r}; choose {' or '.join(LOSSES)}")
        self.features = list(features)
        self.config = DeepConfig(**(config or {}))
        self.loss = loss
        self.network: ActionNetwork | None = None
        self.products: list[str] = []
        self.path_scale = 1.0
        self.book_mean = self.book_scale = np.zeros(0)
        self.value_scale = 1.0
        self.summary: dict[str, Any] = {}

    def _fitted(self) -> ActionNetwork:
        """The network, built by `fit` or `load`."""
        if self.network is None:
            raise ValueError("the action model is not fitted")
        return self.network

    def _network(self, n_book_inputs: int) -> ActionNetwork:
        c = self.config
        return ActionNetwork(n_book_inputs, len(self.products), len(ACTIONS), c.hidden_size, c.embedding_dim, c.dropout)

    def _tensors(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        path, book = book_inputs(frame)
        products = (
            frame[BOOK_ENTITY].astype(str)
            if BOOK_ENTITY in frame.columns
            else pd.Series(self.products[0], index=frame.index)
        )
        return (
            torch.from_numpy((path / self.path_scale).astype(np.float32)),
            torch.from_numpy(((book - self.book_mean) / self.book_scale).astype(np.float32)),
            torch.from_numpy(pair_index(products, self.products)),
        )

    def _targets(self, frame: pd.DataFrame) -> torch.Tensor:
        values = values_bps(frame)
        target = optimal_actions(values) if self.loss == "bce" else advantages(values) / self.value_scale
        return torch.from_numpy(target.astype(np.float32))

    def _criterion(self) -> nn.Module:
        return nn.BCEWithLogitsLoss() if self.loss == "bce" else nn.MSELoss()

    def _run_key(self, train: pd.DataFrame, validation: pd.DataFrame) -> str:
        """Names the checkpoint folder: equal data and configuration resume the same run, anything else starts anew."""
        config = {
            **asdict(self.config),
            "checkpoint_root": None,
            "tensorboard_root": None,
            "device": None,
            "loader_workers": None,
        }
        digest = hashlib.sha256(
            json.dumps({"loss": self.loss, "features": self.features, **config}, sort_keys=True).encode()
        )
        for frame in (train, validation):
            digest.update(
                pd.util.hash_pandas_object(frame[[*self.features, *VALUE_COLUMNS]], index=False).to_numpy().tobytes()
            )
        return f"action-{digest.hexdigest()[:16]}"

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> ActionModel:
        """Fit the scalers and the product vocabulary on `train`, then the network (early-stopped on `validation`,
        else on the last rows of `train`), checkpointing every epoch."""
        if validation is None:
            train, validation = split_holdout(train, self.config.holdout_fraction)
        self.products = sorted(train[BOOK_ENTITY].astype(str).unique())
        path, book = book_inputs(train)
        self.path_scale = float(np.abs(path).std() or 1.0)
        spread = book.std(axis=0)
        self.book_mean, self.book_scale = book.mean(axis=0), np.where(spread > 0, spread, 1.0)
        self.value_scale = float(advantages(values_bps(train)).std() or 1.0)
        generator = seed_everything(self.config.seed)
        self.network = self._network(book.shape[1])
        key = self._run_key(train, validation)
        c = self.config
        checkpoints = CheckpointStore(f"{c.checkpoint_root.rstrip('/')}/{key}") if c.checkpoint_root else None
        tensorboard = Path(c.tensorboard_root) / key if c.tensorboard_root else None
        loop = TrainingLoop(self.network, c.loop(), self._criterion(), generator, checkpoints, tensorboard)
        result = loop.fit(
            TensorBatches(*self._tensors(train), self._targets(train)),
            TensorBatches(*self._tensors(validation), self._targets(validation)),
        )
        self.network.to("cpu")
        last = result.history[-1] if result.history else {}
        self.summary = {
            "device": result.device,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "run_key": key,
            "train_samples": len(train),
            "validation_samples": len(validation),
            "samples_per_s": last.get("samples_per_s", float("nan")),
            "history": result.history,
        }
        return self

    @torch.no_grad()
    def scores(self, features: pd.DataFrame) -> np.ndarray:
        """Per row and action (in `Action` order): the predicted value in basis points of the mid relative to the
        mean of the five (mse), or the probability that the action is optimal (bce)."""
        network = self._fitted()
        if len(features) == 0:
            return np.zeros((0, len(ACTIONS)))
        network.eval()
        outputs = network(*self._tensors(features)).double()
        return (torch.sigmoid(outputs) if self.loss == "bce" else outputs * self.value_scale).numpy()

    def decide(self, features: pd.DataFrame) -> np.ndarray:
        """The chosen action (index into `Action`) of each row."""
        return self.scores(features).argmax(axis=1)

    def training_curve(self) -> list[dict[str, float]]:
        return list(self.summary.get("history", []))

    def params(self) -> dict[str, Any]:
        c = self.config
        return {
            "loss": self.loss,
            "hidden_size": c.hidden_size,
            "product_embedding_dim": c.embedding_dim,
            "dropout": c.dropout,
            "max_epochs": c.epochs,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "patience": c.patience,
            "products": ",".join(self.products),
            **{k: v for k, v in self.summary.items() if k != "history"},
        }

    def save(self, path: Path) -> None:
        """Write the model into the (new) directory `path`."""
        network = self._fitted()
        path.mkdir(parents=True, exist_ok=False)
        (path / META_FILE).write_text(
            json.dumps({"features": self.features, "config": asdict(self.config), "loss": self.loss})
        )
        torch.save(
            {
                "network": network.state_dict(),
                "products": self.products,
                "path_scale": self.path_scale,
                "book_mean": torch.from_numpy(self.book_mean),
                "book_scale": torch.from_numpy(self.book_scale),
                "value_scale": self.value_scale,
            },
            path / WEIGHTS_FILE,
        )

    @classmethod
    def load(cls, path: Path) -> ActionModel:
        model = cls(**json.loads((path / META_FILE).read_text()))
        saved = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.products = list(saved["products"])
        model.path_scale, model.value_scale = float(saved["path_scale"]), float(saved["value_scale"])
        model.book_mean, model.book_scale = saved["book_mean"].numpy(), saved["book_scale"].numpy()
        model.network = model._network(len(model.book_mean))
        model.network.load_state_dict(saved["network"])
        model.network.eval()
        return model
