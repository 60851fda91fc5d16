"""``windows:K`` beside the stateful entries: what it trains on, and the series it runs on."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tbptt.data import StreamData, StreamDataset
from tbptt.data.series import prepare_series
from tbptt.errors import SpecError
from tbptt.report import verdicts
from tbptt.train import TrainConfig
from tbptt.train.build import model_config_for
from tbptt.train.compare import CompareConfig, Entry, parse_entry, run_comparison


def test_windows_entry_is_regular_at_random_offsets():
    assert parse_entry("windows:7") == Entry("windows:7", "regular:7", "random")
    assert parse_entry(" Windows:7 ").name == "windows:7"
    assert parse_entry("regular:7") == Entry("regular:7", "regular:7", None)
    assert parse_entry("full:checkpoint").strategy == "full:checkpoint"
    assert not parse_entry("windows:7").stateful and parse_entry("regular:7").stateful


@pytest.mark.parametrize("text", ["windows", "windows:", "windows:0", "windows:x", "windows:5,2"])
def test_windows_needs_one_positive_length(text):
    with pytest.raises(SpecError, match="windows takes one window length, e.g. 'windows:35'"):
        parse_entry(text)


class Recorder(nn.Module):
    """A one-feature tanh RNN that records, for every training window, the rows it reads
    (the input is the row's index) and the state it starts from."""

    def __init__(self, log: dict):
        super().__init__()
        self.log = log
        self.cell = nn.RNNCell(1, 3)
        self.head = nn.Linear(3, 1)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 3)

    def forward(self, inputs, state=None, gates=None, *, resets=None):
        state = self.initial_state(inputs.shape[1]) if state is None else state
        if self.training and self.log.get("run") is not None:
            rows = inputs[:, 0, 0].round().long().tolist()  # (T,) row indices of stream 0
            self.log.setdefault(self.log["run"], []).append((rows, state.detach().clone()))
        outputs = []
        for x in inputs:  # (B, 1)
            state = self.cell(x, state)
            outputs.append(self.head(state))
        return torch.stack(outputs), state  # (T, B, 1)


def _recorded_runs(n_rows: int, k: int) -> dict:
    rows = torch.arange(n_rows, dtype=torch.float32)[:, None]  # (N, 1): each row's index
    targets = torch.sin(rows)  # (N, 1)
    data = StreamDataset(StreamData(rows, targets), StreamData(rows[:8], targets[:8]))
    log: dict = {}
    config = CompareConfig(
        strategies=(f"regular:{k}", f"windows:{k}"), budget_epochs=1, sample_length=0
    )

    def start(info):
        log["run"] = info["strategy"]

    def end(run):
        log["run"] = None  # the next run's trainer probes its model before it starts

    comparison = run_comparison(
        data,
        config,
        model=lambda: Recorder(log),
        train=TrainConfig(batch_size=1, lr=1e-3),
        on_run_start=start,
        on_run_end=end,
    )
    return log, comparison


def test_windows_train_on_random_offsets_from_a_fresh_state():
    n_rows, k = 40, 4
    log, comparison = _recorded_runs(n_rows, k)
    ordered, windows = log[f"regular:{k}"], log[f"windows:{k}"]

    # regular:K: the split in order, each window from the state the previous one ended in.
    assert [rows for rows, _ in ordered] == [list(range(i, i + k)) for i in range(0, n_rows, k)]
    assert torch.equal(ordered[0][1], torch.zeros(1, 3))
    assert all(state.abs().sum() > 0 for _, state in ordered[1:])  # carried, not fresh

    # windows:K: as many rows per epoch, each window K consecutive rows at its own offset
    # inside the split, every one from a fresh (zero) state.
    assert sum(len(rows) for rows, _ in windows) == n_rows
    offsets = [rows[0] for rows, _ in windows]
    for rows, state in windows:
        assert rows == list(range(rows[0], rows[0] + len(rows))) and len(rows) == k
        assert 0 <= rows[0] <= n_rows - k
        assert torch.equal(state, torch.zeros(1, 3))
    assert offsets != sorted(offsets) and any(o % k for o in offsets)  # not the ordered cut
    assert len(set(offsets)) > 1

    runs = {run.strategy: run for run in comparison.runs}
    assert runs[f"windows:{k}"].run_record["sampling"] == "random"
    assert runs[f"regular:{k}"].run_record["sampling"] == "sequential"
    assert runs[f"windows:{k}"].directory is None  # no out: nothing written


def _seasonal_series(tmp_path: Path, n: int, season: int) -> Path:
    """y[t] = 0.9 y[t - season] + noise: the next value depends on one a season back."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, generator=g).tolist()
    y = []
    for t in range(n):
        y.append((0.9 * y[t - season] if t >= season else 0.0) + noise[t])
    path = tmp_path / "seasonal.csv"
    path.write_text("y\n" + "\n".join(f"{v:.5f}" for v in y) + "\n")
    return path


def test_a_series_compares_the_forecaster_tbptt_train_builds(tmp_path):
    # The built-in model on a series is the forecaster: it starts as the ridge autoregression
    # the data chose (head zero), so every entry's first validation RMSE, in the data's
    # units and scored in one column as the stream continues, is that autoregression's,
    # which the data layer computes on its own (numpy least squares).
    data = prepare_series(_seasonal_series(tmp_path, 240, 6), target="y", warm_up=60)
    model = model_config_for(data, None, kind="gru", hidden_size=3, dropout=0.0)
    config = CompareConfig(strategies=("regular:4",), budget_tokens=4, sample_length=0)
    comparison = run_comparison(data, config, model=model, train=TrainConfig(batch_size=1))
    first = comparison.runs[0].records[0]
    ridge = data.describe()["baselines"]["ridge_ar"]
    assert model.highway > 0 and comparison.train.eval_batch_size == 1
    assert math.isclose(first["val_rmse"], ridge["rmse"], rel_tol=1e-5)
    assert math.isclose(first["val_mae"], ridge["mae"], rel_tol=1e-5)


@pytest.mark.slow
def test_carrying_the_state_wins_when_the_next_value_depends_on_a_season_back(tmp_path):
    # The forecaster's highway reads the last p inputs, carried in its state: p >= 12 here
    # (the season), far more than K = 4. Carried along the series, every window's rows see
    # their lags and train the exact objective; random windows from a fresh state see at
    # most 3 of them (the rest zero), so they fit a forecast without the season's value
    # and are scored with it.
    path = _seasonal_series(tmp_path, 240, 12)
    data = prepare_series(path, target="y", valid_fraction=0.2, warm_up=60)
    assert data.highway[0] >= 12
    model = model_config_for(data, None, kind="gru", hidden_size=3, dropout=0.0)
    config = CompareConfig(
        strategies=("regular:4", "windows:4"),
        seeds=(0, 1, 2),
        budget_epochs=2,
        sample_length=0,
        evals_per_epoch=1,
    )
    comparison = run_comparison(data, config, model=model, train=TrainConfig(batch_size=1, lr=0.01))
    verdict = verdicts(comparison)[-1]
    assert verdict.claim.startswith("Carrying the state along the stream beats")
    assert verdict.outcome == "supported", verdict.text
    assert "regular:4 better by" in verdict.text and "3 of 3 seeds" in verdict.text
