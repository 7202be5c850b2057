"""The deep models' configuration, shared by the sequence price models and the action model, and their holdout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coinflow.settings import Deep, Settings, Training
from feature_repo.names import EVENT_TIMESTAMP
from training_pipeline.deep.loop import LoopConfig

# The defaults are the settings' own (sections are plain models: building them reads nothing).
DEEP, TRAINING = Deep(), Training()


@dataclass(frozen=True)
class DeepConfig:
    """Hyper-parameters and where training writes; built from Settings (JSON-safe, saved with the model). A saved
    model's config may lack fields added since: those take the settings' defaults."""

    sequence_length: int = DEEP.sequence_length
    hidden_size: int = DEEP.hidden_size
    layers: int = DEEP.layers
    embedding_dim: int = DEEP.pair_embedding_dim
    dropout: float = DEEP.dropout
    epochs: int = DEEP.epochs
    batch_size: int = DEEP.batch_size
    learning_rate: float = DEEP.learning_rate
    patience: int = DEEP.patience
    device: str = DEEP.device
    loader_workers: int | None = DEEP.loader_workers
    compile: bool = DEEP.compile
    seed: int = TRAINING.seed
    holdout_fraction: float = TRAINING.validation_fraction
    checkpoint_root: str | None = None
    tensorboard_root: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DeepConfig:
        return cls(
            sequence_length=settings.deep.sequence_length,
            hidden_size=settings.deep.hidden_size,
            layers=settings.deep.layers,
            embedding_dim=settings.deep.pair_embedding_dim,
            dropout=settings.deep.dropout,
            epochs=settings.deep.epochs,
            batch_size=settings.deep.batch_size,
            learning_rate=settings.deep.learning_rate,
            patience=settings.deep.patience,
            device=settings.deep.device,
            loader_workers=settings.deep.loader_workers,
            compile=settings.deep.compile,
            seed=settings.training.seed,
            holdout_fraction=settings.training.validation_fraction,
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
