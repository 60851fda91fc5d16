"""One run per run directory: a second ``tbptt train`` there is refused at once, in one line
naming the directory and the process holding it; a killed run leaves no stale lock."""

from __future__ import annotations

import contextlib
import io
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbptt.cli import main
from tbptt.train.checkpoint import RunLock

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the time traveller held in his hand a glittering metallic framework".split()


@pytest.fixture
def text(tmp_path) -> Path:
    g = random.Random(7)
    path = tmp_path / "text.txt"
    path.write_text(" ".join(g.choice(WORDS) for _ in range(200)) + "\n")
    return path


def train_args(text, out, epochs=1):
    return [
        "train", "--data", str(text), "--out", str(out), "--strategy", "regular:6",
        "--model", "gru", "--hidden-size", "6", "--num-layers", "1", "--embedding-size", "4",
        "--batch-size", "4", "--epochs", str(epochs), "--checkpoint-every", "1",
        "--threads", "1", "--no-progress", "--sample-length", "8",
    ]  # fmt: skip


def run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_a_run_in_a_held_directory_is_refused_before_reading_anything(text, tmp_path):
    out = tmp_path / "run"
    assert run(train_args(text, out))[0] == 0
    # Refused at once means before the data is read: with the data gone, a run that read
    # it first would fail on the missing file instead (no clock to miss on a busy machine).
    hidden = text.rename(text.with_suffix(".away"))
    with RunLock(out) as lock:  # another holder (flock: per open file, also in one process)
        assert (out / ".lock").read_text().strip() == str(os.getpid())
        for argv in (train_args(text, out), ["train", "--resume", str(out)]):
            code, err = run(argv)
            assert code == 2 and err.count("\n") == 1, err
            assert f"run directory {out} is in use by process {os.getpid()}" in err
        assert lock.held
    hidden.rename(text)
    code, err = run(["train", "--resume", str(out), "--epochs", "2"])  # released: it runs
    assert code == 0, err


def test_a_new_directory_is_locked_before_its_first_write(text, tmp_path, monkeypatch):
    # Two runs racing for a directory that does not exist yet: the one that creates it
    # locks it before writing config.json; the other is refused there.
    out = tmp_path / "run"
    import tbptt.cli.train as train_cli

    real = train_cli.load_dataset

    def meanwhile_another_run_starts(*args, **kwargs):
        data = real(*args, **kwargs)
        other.acquire()
        return data

    other = RunLock(out)
    monkeypatch.setattr(train_cli, "load_dataset", meanwhile_another_run_starts)
    code, err = run(train_args(text, out))
    other.release()
    assert code == 2 and err.count("\n") == 1 and "is in use by process" in err, err
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_processes_one_directory_and_kill_9_leaves_no_stale_lock(text, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "tbptt", *train_args(text, out, epochs=500)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _wait_for(lambda: any((out / "checkpoints").glob("step-*.pt")), 120, "a checkpoint")
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1
        assert f"run directory {out} is in use by process {first.pid}" in second.stderr
        assert first.poll() is None, "the first run is unharmed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock with the process: a new run starts at once.
    third = subprocess.Popen(
        [sys.executable, "-m", "tbptt", "train", "--resume", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(third.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=120), "the resumed run printed nothing"
        line = third.stdout.readline()
        assert line.startswith(f"tbptt train: resuming {out}"), line + third.stderr.read()
    finally:
        third.send_signal(signal.SIGKILL)
        third.wait()
