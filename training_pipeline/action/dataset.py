"""The order-book action model's dataset: book features point in time through Feast, labels from the book path after.

The spine is the product's 4-second sample times, read from the offline
store of the ``orderbook_4s`` view; features come from
`get_historical_features` with the ``orderbook_deep_4s`` FeatureService at
those times, so training reads exactly what serving would read online.

Labels (`label_book`) are the values of the five actions at each sample
(`training_pipeline.action.labels`), from the best bid and offer of the
samples that follow it (``mid -/+ spread / 2``). They need an unbroken run of
samples: a gap in the clock (a dropped book, a restart) ends a segment, and
a sample is labelled only when its segment holds ``horizon`` samples after
it. Features of a row are never read from a later row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

from coinflow.feature_store import TIMESTAMP_DTYPE, feature_store, read_entity_rows
from coinflow.settings import Settings
from feature_repo.names import BOOK_ENTITY, EVENT_TIMESTAMP, ORDERBOOK_SERVICE, ORDERBOOK_VIEW
from training_pipeline import checks
from training_pipeline.action.labels import ACTIONS, LabelCosts, action_values
from training_pipeline.dataset import TimeOrderedRows
from training_pipeline.simulation import best_quotes, infer_tick

logger = logging.getLogger(__name__)

VALUE_COLUMNS = tuple(f"value_{action.name.lower()}" for action in ACTIONS)
BEST_ACTION = "best_action"


@dataclass(frozen=True)
class BookDataset(TimeOrderedRows):
    """Labelled 4-second samples of one book, ordered by time, and what they were built from."""

    product: str
    feature_service: str
    features: tuple[str, ...]
    frame: pd.DataFrame
    step: timedelta
    horizon_steps: int
    costs: LabelCosts
    segments: int

    @property
    def model_columns(self) -> list[str]:
        """The action model's input columns: the product (its embedding) and the FeatureService's features."""
        return [BOOK_ENTITY, *self.features]

    def fingerprint(self) -> str:
        """SHA-256 of the rows (times, features, labels): equal hashes mean equal training data."""
        return self._fingerprint([BOOK_ENTITY, EVENT_TIMESTAMP, *self.features, *VALUE_COLUMNS])


def segment_ids(times: pd.Series, step: timedelta) -> np.ndarray:
    """A segment number per sample: a new segment starts wherever the gap to the previous sample is not one step."""
    gaps = times.diff().to_numpy()
    breaks = np.r_[True, gaps[1:] != np.timedelta64(step)] if len(times) else np.zeros(0, bool)
    return np.cumsum(breaks) - 1


def label_book(
    samples: pd.DataFrame, step: timedelta, horizon_steps: int, costs: LabelCosts
) -> tuple[pd.DataFrame, int]:
    """The action values of every sample with `horizon_steps` samples after it in its segment, and the segment count.

    `samples` holds one book's (entity, event_timestamp, mid, spread) in time
    order. Pure: the unit tests build it by hand.
    """
    segments = segment_ids(samples[EVENT_TIMESTAMP], step)
    bid, ask = best_quotes(samples)
    labelled = []
    for segment in np.unique(segments):
        rows = np.flatnonzero(segments == segment)
        values = action_values(bid[rows], ask[rows], horizon_steps, costs)
        if len(values):
            part = samples.iloc[rows[: len(values)]][[BOOK_ENTITY, EVENT_TIMESTAMP]].reset_index(drop=True)
            part[list(VALUE_COLUMNS)] = values
            labelled.append(part)
    columns = [BOOK_ENTITY, EVENT_TIMESTAMP, *VALUE_COLUMNS]
    frame = pd.concat(labelled, ignore_index=True) if labelled else pd.DataFrame(columns=columns)
    frame[BEST_ACTION] = frame[list(VALUE_COLUMNS)].to_numpy(dtype=float).argmax(axis=1) if len(frame) else []
    return frame, len(np.unique(segments))


def label_costs(settings: Settings, samples: pd.DataFrame) -> LabelCosts:
    """Fees from the simulation settings; the tick from settings or, when unset, the book's own price grid."""
    bid, ask = best_quotes(samples)
    tick = settings.action.tick or infer_tick(np.r_[bid, ask])
    return LabelCosts(settings.simulation.taker_fee, settings.simulation.maker_fee, tick)


def build_book_dataset(settings: Settings, product: str, store: FeatureStore | None = None) -> BookDataset:
    """Read, label and check the sampled history of one book; raises `checks.DataCheckError` naming what is wrong."""
    store = store or feature_store(settings)
    step = timedelta(milliseconds=settings.books.sample_ms)
    horizon_steps = round(settings.action.horizon_s / step.total_seconds())
    samples = read_entity_rows(store, ORDERBOOK_VIEW, BOOK_ENTITY, product, ["mid", "spread"])
    needed = horizon_steps + settings.action.min_samples
    if len(samples) < needed:
        where = f"between {checks.span(samples[EVENT_TIMESTAMP])}" if len(samples) else "at all"
        raise checks.DataCheckError(
            f"{product}: {len(samples)} order-book samples in the offline store {where}; "
            f"the action model needs at least {needed} ({settings.action.min_samples} labelled plus a "
            f"{settings.action.horizon_s:g} s horizon of {step.total_seconds():g} s samples). Record books with "
            "`make live-books` (or replay sessions) first."
        )
    costs = label_costs(settings, samples)
    labels, segments = label_book(samples, step, horizon_steps, costs)
    service = store.get_feature_service(ORDERBOOK_SERVICE)
    features = tuple(f.name for projection in service.feature_view_projections for f in projection.features)
    retrieved = store.get_historical_features(
        entity_df=labels[[BOOK_ENTITY, EVENT_TIMESTAMP]], features=service
    ).to_df()
    retrieved[EVENT_TIMESTAMP] = retrieved[EVENT_TIMESTAMP].astype(TIMESTAMP_DTYPE)
    frame = retrieved[[BOOK_ENTITY, EVENT_TIMESTAMP, *features]].merge(
        labels, on=[BOOK_ENTITY, EVENT_TIMESTAMP], how="inner", validate="one_to_one"
    )
    frame = frame.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    required = [name for name in features if not name.startswith("mid_30s_")]
    checks.check_features(frame, product, required, price="mid")
    checks.check_history(frame, product, settings.action.min_samples)
    logger.info(
        "%s: %d labelled samples in %d segment(s), %s",
        product,
        len(frame),
        segments,
        checks.span(frame[EVENT_TIMESTAMP]),
    )
    return BookDataset(product, service.name, features, frame, step, horizon_steps, costs, segments)
