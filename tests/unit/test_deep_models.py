"""Sequence models on CPU: windows without look-ahead, resume equals an uninterrupted run, training learns."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from feature_repo.names import ENTITY, EVENT_TIMESTAMP
from tests.support.training_synthetic import FEATURES, ar1_returns, candles_from_returns, features_of
from training_pipeline.checks import drop_warmup
from training_pipeline.dataset import assemble
from training_pipeline.deep.checkpoint import CheckpointStore
from training_pipeline.deep.data import WindowBatches, lay_out, window_index
from training_pipeline.deep.loop import EpochCallbackStop, LoopConfig, TrainingLoop, resolve_device, seed_everything
from training_pipeline.deep.networks import SequenceRegressor
from training_pipeline.metrics import price_mae
from training_pipeline.model_base import load_model
from training_pipeline.price.sequence import GRUPriceModel, LSTMPriceModel

SMALL = {"hidden_size": 8, "sequence_length": 12, "batch_size": 64, "patience": 10, "device": "cpu", "seed": 3}


def _frame(n: int = 900, phi: float = 0.6, pair: str = "BTC/USD", seed: int = 0) -> pd.DataFrame:
    candles = candles_from_returns(ar1_returns(n, phi, seed=seed), pair=pair, seed=seed + 1)
    frame = assemble(features_of(candles), candles, timedelta(minutes=1))
    return drop_warmup(frame, FEATURES)[0]


def _two_pairs() -> pd.DataFrame:
    return (
        pd.concat([_frame(pair="BTC/USD", seed=0), _frame(pair="ETH/USD", seed=5)])
        .sort_values(EVENT_TIMESTAMP, kind="stable")
        .reset_index(drop=True)
    )


def test_windows_hold_only_past_rows_of_the_same_pair():
    frame = _two_pairs()
    values = np.arange(len(frame), dtype=np.float32)[:, None]
    pair_ids = (frame[ENTITY] == "ETH/USD").to_numpy().astype(np.int64) + 1
    series = lay_out(frame, values, pair_ids)
    index = window_index(np.arange(len(series)), series.starts, 12)
    rows = series.order[index]
    times = frame[EVENT_TIMESTAMP].astype("int64").to_numpy()
    pairs = frame[ENTITY].to_numpy()
    end_rows = series.order
    assert (times[rows] <= times[end_rows][:, None]).all()
    assert (pairs[rows] == pairs[end_rows][:, None]).all()
    assert (np.diff(times[rows[series.full_windows(12)]], axis=1) > 0).all()


def test_predictions_do_not_change_when_later_rows_change():
    frame = _two_pairs()
    model = LSTMPriceModel(FEATURES, {**SMALL, "epochs": 1}).fit(frame.iloc[:1000], frame.iloc[1000:1300])
    before = model.predict(frame)
    altered = frame.copy()
    later = altered.index >= 1300
    prices = [name for name in FEATURES if name != "trade_count"]
    altered.loc[later, prices] = altered.loc[later, prices] * 1.05
    after = model.predict(altered)
    np.testing.assert_array_equal(before[:1300], after[:1300])
    assert not np.allclose(before[1300:], after[1300:])


def _loop_data(n: int = 600, length: int = 10) -> tuple[WindowBatches, WindowBatches]:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, 3)).astype(np.float32)
    targets = (values[:, 0] + 0.5 * np.roll(values[:, 1], 1)).astype(np.float32)
    series = lay_out(pd.DataFrame(index=range(n)), values, np.ones(n, np.int64), targets)
    ends = series.full_windows(length)
    return WindowBatches(series, ends[: len(ends) * 3 // 4], length), WindowBatches(
        series, ends[len(ends) * 3 // 4 :], length
    )


def _loop(checkpoints: CheckpointStore | None, epochs: int = 4, lr: float = 1e-2, patience: int = 10) -> TrainingLoop:
    generator = seed_everything(7)
    network = SequenceRegressor(3, 1, "lstm", hidden_size=8, dropout=0.2)
    config = LoopConfig(epochs=epochs, batch_size=32, learning_rate=lr, patience=patience, device="cpu")
    return TrainingLoop(network, config, nn.MSELoss(), generator, checkpoints)


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, url_kind):
    train, validation = _loop_data()
    uninterrupted = _loop(CheckpointStore(str(tmp_path / "a")))
    expected = uninterrupted.fit(train, validation)

    url = str(tmp_path / "b") if url_kind == "local" else f"memory://resume-test-{tmp_path.name}/b"

    def kill_after_epoch_2(epoch: int, record: dict[str, float]) -> None:
        if epoch == 2:
            raise EpochCallbackStop

    with pytest.raises(EpochCallbackStop):
        _loop(CheckpointStore(url)).fit(train, validation, on_epoch_end=kill_after_epoch_2)
    torch.manual_seed(12345)
    torch.rand(1000)
    resumed_loop = _loop(CheckpointStore(url))
    resumed = resumed_loop.fit(train, validation)

    assert resumed.resumed_from_epoch == 2
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in expected.history]
    reference = uninterrupted.model.state_dict()
    for name, tensor in resumed_loop.model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_a_finished_run_is_not_trained_again(tmp_path):
    train, validation = _loop_data()
    store = CheckpointStore(str(tmp_path))
    first = _loop(store, epochs=2).fit(train, validation)
    again_loop = _loop(store, epochs=2)
    again = again_loop.fit(train, validation)
    assert again.resumed_from_epoch == 2 and again.epochs_run == first.epochs_run
    assert again.best_val_loss == first.best_val_loss


def test_training_lowers_the_validation_loss():
    train, validation = _loop_data()
    loop = _loop(None, epochs=3)
    before = loop.evaluate(loop.loader(validation, shuffle=False))
    result = loop.fit(train, validation)
    assert result.best_val_loss < 0.7 * before


def test_early_stopping_keeps_the_best_epoch():
    train, validation = _loop_data()
    result = _loop(None, epochs=10, lr=0.0, patience=2).fit(train, validation)
    assert result.stopped_early
    assert result.epochs_run == 3 and result.best_epoch == 1


@pytest.mark.parametrize("model_class", [LSTMPriceModel, GRUPriceModel])
def test_sequence_model_beats_last_price_on_a_predictable_series_and_round_trips(tmp_path, model_class):
    frame = _frame(n=2500, phi=0.6)
    train, validation, test = frame.iloc[:1700], frame.iloc[1700:2100], frame.iloc[2100:]
    model = model_class(
        FEATURES,
        {
            **SMALL,
            "epochs": 4,
            "learning_rate": 3e-3,
            "checkpoint_root": str(tmp_path / "ck"),
            "tensorboard_root": str(tmp_path / "tb"),
        },
    )
    model.fit(train, validation)
    predicted = model.predict_price(test)
    assert price_mae(test, predicted) < 0.97 * price_mae(test, test["close"].to_numpy())
    assert list((tmp_path / "ck").iterdir()) and list((tmp_path / "tb").iterdir())

    model.save(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert loaded.model_type == model_class.model_type
    served = test[list(FEATURES)].reset_index(drop=True)
    np.testing.assert_allclose(loaded.predict_price(served), predicted, rtol=0, atol=1e-9)


def test_an_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error for a missing one cannot be observed")
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("mps", "cpu")


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine: GPU paths run only where one is"
)
@pytest.mark.parametrize("compile_model", [False, True])
def test_gpu_training_with_bf16_autocast_and_pinned_batches(compile_model):
    train, validation = _loop_data()
    generator = seed_everything(7)
    network = SequenceRegressor(3, 1, "lstm", hidden_size=8)
    config = LoopConfig(
        epochs=3, batch_size=32, learning_rate=1e-2, patience=5, device="cuda", compile=compile_model, loader_workers=2
    )
    loop = TrainingLoop(network, config, nn.MSELoss(), generator)
    before = loop.evaluate(loop.loader(validation, shuffle=False))
    result = loop.fit(train, validation)
    assert result.device.startswith("cuda")
    assert next(network.parameters()).is_cuda
    assert result.best_val_loss < 0.7 * before
