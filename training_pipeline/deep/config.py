"""The deep models' configuration, shared by the sequence price models and the action model, and their holdout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coinflow.settings import Settings
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline.deep.loop import LoopConfig


@dataclass(frozen=True)
class DeepConfig:
    """Hyper-parameters and where training writes; built from Settings (JSON-safe, saved with the model)."""

    sequence_length: int = 60
    hidden_size: int = 64
    layers: int = 1
    embedding_dim: int = 4
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    device: str = "auto"
    loader_workers: int | None = None
    compile: bool = False
    seed: int = 0
    holdout_fraction: float = 0.15
    checkpoint_root: str | None = None
    tensorboard_root: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DeepConfig:
        return cls(
            sequence_length=settings.deep_sequence_length,
            hidden_size=settings.deep_hidden_size,
            layers=settings.deep_layers,
            embedding_dim=settings.deep_pair_embedding_dim,
            dropout=settings.deep_dropout,
            epochs=settings.deep_epochs,
            batch_size=settings.deep_batch_size,
            learning_rate=settings.deep_learning_rate,
            patience=settings.deep_patience,
            device=settings.deep_device,
            loader_workers=settings.deep_loader_workers,
            compile=settings.deep_compile,
            seed=settings.training_seed,
            holdout_fraction=settings.validation_fraction,
            checkpoint_root=settings.checkpoint_root,
            tensorboard_root=str(settings.tensorboard_root),
        )

    def loop(self) -> LoopConfig:
        return LoopConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            device=self.device,
            loader_workers=self.loader_workers,
            compile=self.compile,
            seed=self.seed,
        )


def split_holdout(train: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last `fraction` of the rows by time, for early stopping when no validation rows are given."""
    times = np.sort(train[EVENT_TIMESTAMP].unique())
    cut = times[int(len(times) * (1.0 - fraction))]
    return train[train[EVENT_TIMESTAMP] < cut], train[train[EVENT_TIMESTAMP] >= cut]
