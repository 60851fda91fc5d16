"""Windows cut from a training split: the rows, resets and mask of each column, as laid out by hand."""

import pytest
import torch

from tbptt.analysis import data_windows, stream_windows, warm_state
from tbptt.data import StreamData
from tbptt.errors import DataError
from tbptt.models import ModelConfig, RecurrentNet


def _column_row(n: int, b: int, r: int) -> int:
    """Row r of column b when N rows are laid into columns of n: column b holds rows b n .. b n + n - 1."""
    return b * n + r


def test_aligned_rows_resets_and_mask_come_from_each_column():
    N, B, F = 31, 3, 2  # one row left over: dropped
    n = N // B
    inputs = torch.arange(N * F, dtype=torch.float32).reshape(N, F)
    targets = -torch.arange(N, dtype=torch.float32).reshape(N, 1)
    starts = torch.arange(N) % 5 == 0
    mask = torch.arange(N) % 5 == 4
    split = StreamData(inputs, targets, starts=starts, mask=mask)
    offset, warmup, length = 1, 2, 6
    w = stream_windows(split, length=length, streams=B, warmup=warmup, offset=offset)
    assert w.inputs.shape == (length, B, F) and w.targets.shape == (length, B, 1)
    assert w.warmup.shape == (warmup, B, F)
    for b in range(B):
        for t in range(warmup):
            row = _column_row(n, b, offset + t)
            assert torch.equal(w.warmup[t, b], inputs[row])
            assert bool(w.warmup_resets[t, b]) == bool(starts[row])
        for t in range(length):
            row = _column_row(n, b, offset + warmup + t)
            assert torch.equal(w.inputs[t, b], inputs[row])
            assert torch.equal(w.targets[t, b], targets[row])  # aligned: the row's own target
            assert bool(w.resets[t, b]) == bool(starts[row])
            assert bool(w.mask[t, b]) == bool(mask[row])


def test_next_token_targets_and_mask_are_one_row_later():
    N, B = 40, 2
    n = N // B
    tokens = torch.arange(N) % 7
    mask = torch.arange(N) % 3 != 0
    w = stream_windows(StreamData(tokens, mask=mask), length=5, streams=B, warmup=3)
    for b in range(B):
        for t in range(5):
            row = _column_row(n, b, 3 + t)
            assert int(w.inputs[t, b]) == int(tokens[row])
            assert int(w.targets[t, b]) == int(tokens[row + 1])
            assert bool(w.mask[t, b]) == bool(mask[row + 1])  # the mask of the target row
    assert w.resets is None and w.warmup_resets is None


def test_data_windows_is_the_token_case():
    tokens = torch.randint(0, 9, (100,), generator=torch.Generator().manual_seed(0))
    warm, inputs, targets = data_windows(tokens, length=7, streams=4, warmup=5, offset=2)
    w = stream_windows(tokens, length=7, streams=4, warmup=5, offset=2)
    assert torch.equal(warm, w.warmup) and torch.equal(inputs, w.inputs)
    assert torch.equal(targets, w.targets)
    assert torch.equal(inputs[1:], targets[:-1])


@pytest.mark.parametrize("next_token, most", [(True, 9), (False, 10)])
def test_a_split_too_short_is_refused(next_token, most):
    # 40 rows in 4 streams: 10 per column; next-token needs one row more than its length
    rows = torch.zeros(40, dtype=torch.long)
    split = StreamData(rows) if next_token else StreamData(rows, rows)
    stream_windows(split, length=most, streams=4)
    with pytest.raises(DataError, match="fewer than 4 streams"):
        stream_windows(split, length=most + 1, streams=4)


def test_warm_state_honours_resets():
    torch.manual_seed(0)
    model = RecurrentNet(
        ModelConfig(
            input_size=2,
            output_size=1,
            kind="gru",
            hidden_size=3,
            num_layers=1,
            embedding_size=0,
            dropout=0.0,
        )  # fmt: skip
    ).double()
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    resets = torch.zeros(5, 2, dtype=torch.bool)
    resets[3, 0] = True
    got = warm_state(model, x, resets=resets)
    # stream 0 restarted at row 3: its state is that of rows 3, 4 from zeros
    _, fresh = model(x[3:, :1])
    _, whole = model(x[:, 1:])
    torch.testing.assert_close(got[:, :1], fresh, rtol=0, atol=1e-14)
    torch.testing.assert_close(got[:, 1:], whole, rtol=0, atol=1e-14)
    assert warm_state(model, x[:0]) is None
