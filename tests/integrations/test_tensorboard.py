"""``--tensorboard DIR``: the event files hold the values of metrics.jsonl.

The reference is the run's own metrics.jsonl; the event files are read back with
tensorboard's EventAccumulator (values are float32 there).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from tbptt.cli import main  # noqa: E402
from tbptt.integrations.tensorboard import read_scalars  # noqa: E402
from tests.report.conftest import tiny_text  # noqa: E402

TINY = [
    "--model", "gru", "--hidden-size", "4", "--num-layers", "1", "--embedding-size", "3",
    "--batch-size", "4", "--sample-length", "5", "--no-progress",
]  # fmt: skip


def expected(metrics_path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, float32 value)]} built from the JSON lines, independently of tbptt's writer."""
    want: dict[str, list] = {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if "step" not in record:  # the closing run record of compare
            continue
        for key, value in record.items():
            if key in ("event", "epoch", "step") or isinstance(value, (bool, str)):
                continue
            tag = f"{record['event']}/{key}"
            want.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return want


def assert_same(board, metrics_path):
    got, want = read_scalars(board), expected(metrics_path)
    assert set(got) == set(want)
    for tag in want:
        assert got[tag] == want[tag], tag
    return got


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text())
    return path


def test_train_writes_the_metrics_as_scalars(text_file, tmp_path, capsys):
    out, board = tmp_path / "run", tmp_path / "tb"
    argv = ["train", "--data", str(text_file), "--out", str(out), "--epochs", "2"]
    assert main([*argv, "--strategy", "regular:6", "--tensorboard", str(board), *TINY]) == 0
    capsys.readouterr()
    got = assert_same(board, out / "metrics.jsonl")
    for tag in ("step/loss", "step/grad_norm", "step/lr", "epoch/val_ppl", "epoch/tokens_per_s"):
        assert got[tag], tag
    assert len(got["epoch/val_ppl"]) == 2


def test_compare_writes_one_run_per_strategy(text_file, tmp_path, capsys):
    out, board = tmp_path / "cmp", tmp_path / "tb"
    argv = ["compare", "--data", str(text_file), "--budget-tokens", "200", "--out", str(out)]
    argv += ["--strategies", "regular:6", "randomized:6", "--tensorboard", str(board), *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    runs = sorted(p.name for p in board.iterdir())
    assert runs == ["randomized-6-seed0", "regular-6-seed0"]
    for name in runs:
        got = assert_same(board / name, out / "runs" / name / "metrics.jsonl")
        assert got["step/loss"] and got["epoch/val_ppl"] and got["eval/val_ppl"]


def test_a_missing_directory_parent_is_one_line(text_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["train", "--data", str(text_file), "--out", str(tmp_path / "run"), "--epochs", "1"]
    code = main([*argv, "--tensorboard", str(blocker / "tb"), *TINY])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorBoard" in err[0]


def test_a_resumed_run_continues_the_same_event_files(text_file, tmp_path, capsys):
    out, board = tmp_path / "run", tmp_path / "tb"
    argv = ["train", "--data", str(text_file), "--out", str(out), "--strategy", "regular:6"]
    assert main([*argv, "--epochs", "1", "--tensorboard", str(board), *TINY]) == 0
    resume = ["train", "--resume", str(out), "--epochs", "2", "--tensorboard", str(board)]
    assert main(resume) == 0
    capsys.readouterr()
    got = assert_same(board, out / "metrics.jsonl")  # every step once, in order
    assert [e for e, _ in got["epoch/val_ppl"]] == sorted({e for e, _ in got["epoch/val_ppl"]})
    assert len(got["epoch/val_ppl"]) == 2


def test_without_tensorboard_the_flag_is_one_line_before_training(
    text_file, tmp_path, capsys, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(text_file), "--budget-tokens", "200", "--out", str(out)]
    assert main([*argv, "--tensorboard", str(tmp_path / "tb"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'tbptt[tensorboard]'" in err[0]
    assert not (out / "runs").exists()  # refused before any run
