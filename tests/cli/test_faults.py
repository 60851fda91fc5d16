"""Fault injection at every write site of a run: the disk refuses, the run ends in one line.

Where a tiny tmpfs cannot be mounted (CI is not root), the operating system's refusal
is injected: ``os.write`` / ``os.fsync`` / ``os.replace`` / ``os.unlink`` raise
``OSError(ENOSPC or EIO)`` for the file under test only (identified by name, through
``/proc/self/fd`` for a descriptor), ``torch.save`` raises the ``RuntimeError`` torch
wraps a failed write in, and the plotting functions write half a file and then fail.
After each fault: exit 2, one line on stderr naming the file and the cause, the
previous checkpoint still loads, no 0-byte or temporary file is left, and
``tbptt train --resume DIR`` continues the run to the same metrics.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tbptt.cli import main
from tbptt.train.checkpoint import KEPT_DIR, latest_checkpoint, load_checkpoint
from tests.train.test_resume import outcome

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc/self/fd")

WORDS = "the time traveller held in his hand a glittering metallic framework".split()


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    g = random.Random(5)
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(" ".join(g.choice(WORDS) for _ in range(200)) + "\n")
    return path


@pytest.fixture
def series(tmp_path) -> Path:
    rows = [[f"d{i}", f"{(i * 7) % 13 + 0.5 * i:.2f}", f"{i % 5}"] for i in range(120)]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in [["Date", "Temp", "Rain"], *rows]))
    return path


def text_args(text, out):
    return [
        "train", "--data", str(text), "--out", str(out), "--strategy", "regular:6",
        "--model", "gru", "--hidden-size", "6", "--num-layers", "1", "--embedding-size", "4",
        "--batch-size", "4", "--epochs", "2", "--checkpoint-every", "4",
        "--keep-checkpoints", "2", "--threads", "1", "--no-progress", "--sample-length", "8",
    ]  # fmt: skip


def series_args(series, out):
    return [
        "train", "--data", str(series), "--target", "Temp", "--inputs", "Temp,Rain",
        "--out", str(out), "--model", "gru", "--hidden-size", "6", "--num-layers", "1",
        "--epochs", "1", "--batch-size", "4", "--strategy", "regular:5", "--threads", "1",
        "--no-progress", "--checkpoint-every", "epoch",
    ]  # fmt: skip


def run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _fd_name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Faults:
    """The operating system refuses one kind of call on files whose name holds ``name``,
    from the ``after + 1``-th such call on (until :meth:`off`)."""

    def __init__(self, monkeypatch, call: str, name: str, *, code=errno.ENOSPC, after=0):
        self.name, self.code, self.after, self.calls, self.on = name, code, after, 0, True
        self.error = OSError(code, os.strerror(code))
        real = getattr(os, call) if call != "copyfile" else shutil.copyfile
        target = {  # which argument names the file
            "write": lambda fd, *a: _fd_name(fd),
            "fsync": lambda fd: _fd_name(fd),
            "replace": lambda src, dst: str(dst),
            "unlink": lambda path, **k: str(path),
            "link": lambda src, dst, **k: str(dst),
            "copyfile": lambda src, dst, **k: str(dst),
        }[call]

        def refusing(*args, **kwargs):
            if self.on and self.name in Path(target(*args, **kwargs)).name:
                self.calls += 1
                if self.calls > self.after:
                    raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        monkeypatch.setattr(shutil if call == "copyfile" else os, call, refusing)

    def off(self) -> None:
        self.on = False


def check_the_directory(out: Path) -> None:
    """No 0-byte file, no temporary file, and the metrics file ends with a whole line
    (``.lock`` aside: it holds the running process's id, and nothing once it ended)."""
    for path in out.rglob("*"):
        if path.is_file() and path.name != ".lock":
            assert path.stat().st_size > 0, f"{path} is empty"
            assert ".tmp" not in path.name, f"temporary file {path} left behind"
    metrics = out / "metrics.jsonl"
    if metrics.is_file():
        assert metrics.read_bytes().endswith(b"\n")


def check_continues(out: Path, reference) -> None:
    """``--resume`` ends where the uninterrupted run ends, as tests/train/test_resume.py
    checks: the same weights bitwise, the same metrics lines (``MEASURED_FIELDS`` aside)
    and the same generated sample."""
    code, err = run(["train", "--resume", str(out)])
    assert code == 0, err
    weights, lines, sample = outcome(out)
    assert weights.keys() == reference[0].keys()
    for k in weights:
        assert torch.equal(weights[k], reference[0][k]), f"{k} differs after the resume"
    assert lines == reference[1], "metrics lines differ after the resume"
    assert sample == reference[2]


@pytest.fixture(scope="module")
def reference(text, tmp_path_factory):
    """The uninterrupted run's (final weights, metrics lines, sample), as ``outcome`` reads them."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, err = run(text_args(text, out))
    assert code == 0, err
    weights, lines, sample = outcome(out)
    steps = [r["step"] for r in lines if r["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 12
    return weights, lines, sample


# call, file name, errno, how many such calls succeed first, what the line names
TEXT_SITES = {
    "config": ("write", "config.json", errno.ENOSPC, 0, "config.json"),
    "metrics line": ("write", "metrics.jsonl", errno.ENOSPC, 9, "metrics.jsonl"),
    "metrics fsync": ("fsync", "metrics.jsonl", errno.EIO, 1, "metrics.jsonl"),
    "checkpoint write": ("write", "step-", errno.ENOSPC, 1, "step-"),
    "checkpoint fsync": ("fsync", "step-", errno.EIO, 1, "step-"),
    "checkpoint rename": ("replace", "step-", errno.ENOSPC, 1, "step-"),
    "latest rename": ("replace", "checkpoint.pt", errno.ENOSPC, 1, "checkpoint.pt"),
    "latest link": ("link", "checkpoint.pt", errno.ENOSPC, 1, "checkpoint.pt"),
    "rotation": ("unlink", "step-", errno.EACCES, 0, "step-"),
    "summary": ("write", "summary.json", errno.ENOSPC, 0, "summary.json"),
}


@pytest.mark.parametrize("site", list(TEXT_SITES))
def test_a_refused_write_ends_in_one_line_and_the_run_resumes(
    site, text, tmp_path, monkeypatch, reference
):
    call, name, code_, after, named = TEXT_SITES[site]
    out = tmp_path / "run"
    faults = Faults(monkeypatch, call, name, code=code_, after=after)
    if site == "latest link":  # a hard link refused, then the copy that replaces it too
        copies = Faults(monkeypatch, "copyfile", name, code=code_)
    code, err = run(text_args(text, out))
    assert code == 2, err
    assert err.count("\n") == 1 and named in err and os.strerror(code_) in err, err
    assert "cannot write" in err or "cannot delete" in err
    assert faults.calls > after
    check_the_directory(out)
    faults.off()
    if site == "latest link":
        copies.off()
    if site == "config":  # nothing trained yet: the same command starts the run
        assert latest_checkpoint(out) is None
        code, err = run(text_args(text, out))
        assert code == 0, err
        return
    path, payload = latest_checkpoint(out)  # the previous checkpoint loads
    assert payload["trainer"]["step"] >= 4
    check_continues(out, reference)


def test_torch_failing_to_serialize_with_a_full_disk_is_one_line(
    text, tmp_path, monkeypatch, reference
):
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # how torch reports a write its writer could not make
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as e:
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed "
                    "writing file data/0: file write failed"
                ) from e
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    code, err = run(text_args(text, out))
    assert code == 2 and err.count("\n") == 1, err
    assert "step-000000008.pt: No space left on device" in err
    check_the_directory(out)
    monkeypatch.setattr(torch, "save", real)
    assert latest_checkpoint(out)[1]["trainer"]["step"] == 4
    check_continues(out, reference)


@pytest.mark.parametrize("plot", ["plot_training", "plot_predictions"])
def test_a_plot_the_disk_refuses_leaves_no_half_image(plot, series, tmp_path, monkeypatch):
    import tbptt.run.outputs

    # curves.png and predictions.png are drawn by the run's outputs (tbptt.run.outputs)
    train_cli = tbptt.run.outputs
    real = getattr(train_cli, plot)

    def half_then_full(*args, **kwargs):
        path = next(a for a in args if isinstance(a, Path))
        path.write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(train_cli, plot, half_then_full)
    out = tmp_path / "run"
    code, err = run(series_args(series, out))
    name = "curves.png" if plot == "plot_training" else "predictions.png"
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot write {out / name}: No space left on device" in err
    assert not (out / name).exists()
    check_the_directory(out)
    monkeypatch.setattr(train_cli, plot, real)
    assert load_checkpoint(out)["trainer"]["epoch"] == 1  # the final checkpoint was written
    code, err = run(["train", "--resume", str(out)])
    assert code == 0, err
    assert (out / name).stat().st_size > 1000


def test_a_predictions_file_the_disk_refuses_is_one_line(series, tmp_path, monkeypatch):
    out = tmp_path / "run"
    faults = Faults(monkeypatch, "write", "predictions.csv")
    code, err = run(series_args(series, out))
    assert code == 2 and err.count("\n") == 1, err
    assert "predictions.csv: No space left on device" in err
    assert not (out / "predictions.csv").exists()
    check_the_directory(out)
    faults.off()
    code, err = run(["train", "--resume", str(out)])
    assert code == 0, err
    assert (out / "predictions.csv").read_text().startswith("Date,Temp")  # the time column


# -- what a checkpoint holds: not the metrics history ------------------------------------


def test_checkpoints_hold_the_metrics_length_and_digest_not_the_lines(text, tmp_path):
    out = tmp_path / "run"
    argv = text_args(text, out)
    argv[argv.index("--epochs") + 1] = "1"
    assert run(argv)[0] == 0
    first = (out / "checkpoint.pt").stat().st_size
    payload = load_checkpoint(out)
    assert "metrics" not in payload
    metrics = (out / "metrics.jsonl").read_bytes()
    import hashlib

    assert payload["metrics_position"] == {
        "bytes": len(metrics),
        "sha256": hashlib.sha256(metrics).hexdigest(),
    }
    assert run(["train", "--resume", str(out), "--epochs", "4"])[0] == 0
    assert (out / "metrics.jsonl").stat().st_size > 3 * len(metrics)
    # the checkpoint does not grow with the run (a few bytes for larger counters)
    assert abs((out / "checkpoint.pt").stat().st_size - first) < 200
    kept = sorted((out / KEPT_DIR).iterdir())
    assert len(kept) == 2


def test_a_shorter_or_altered_metrics_file_is_refused_on_resume(text, tmp_path):
    out = tmp_path / "run"
    argv = text_args(text, out)
    argv[argv.index("--epochs") + 1] = "1"
    assert run(argv)[0] == 0
    metrics = out / "metrics.jsonl"
    kept = metrics.read_bytes()
    metrics.write_bytes(kept[:-10])
    code, err = run(["train", "--resume", str(out), "--epochs", "2"])
    assert code == 2 and err.count("\n") == 1 and "fewer than the" in err, err
    metrics.write_bytes(kept.replace(b'"step": 3', b'"step": 9'))
    code, err = run(["train", "--resume", str(out), "--epochs", "2"])
    assert code == 2 and err.count("\n") == 1 and "another SHA-256" in err, err
    metrics.write_bytes(kept + b'{"event": "step", "step": 999}\n')  # after the checkpoint
    code, err = run(["train", "--resume", str(out), "--epochs", "2"])
    assert code == 0, err
    assert b'"step": 999' not in metrics.read_bytes()
    assert metrics.read_bytes().startswith(kept)
