"""``torchrun --nproc-per-node 2 -m tbptt train``: real launches, 2 gloo ranks on loopback.

Every launch runs under a deadline (``subprocess.run(timeout=...)``), so a rank left
waiting on a collective fails the test instead of blocking CI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tbptt.cli import main
from tbptt.train import read_metrics
from tbptt.train.checkpoint import LATEST, load_checkpoint
from tbptt.train.trainer import MEASURED_FIELDS

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
DEADLINE_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    return [
        TORCHRUN,
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "tbptt",
    ]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_args(text: Path, out: Path, *extra: str) -> list[str]:
    # Dropout off: every rank then computes exactly the single process's function, so the
    # two runs differ only by the order of floating-point sums.
    return [
        "train", "--data", str(text), "--out", str(out), "--strategy", "regular:50",
        "--model", "gru", "--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8",
        "--dropout", "0", "--batch-size", "32", "--epochs", "1", "--checkpoint-every", "10",
        "--keep-checkpoints", "2", "--threads", "1", "--no-progress", "--sample-length", "0",
        *extra,
    ]  # fmt: skip


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE_S, env=env(), **kw)


def comparable(out: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in MEASURED_FIELDS}
        for r in read_metrics(out / "metrics.jsonl")
    ]


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """The worker processes torchrun started, by rank (from their environment)."""
    pids = {}
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    for pid in children.read_text().split():
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            for item in environ:
                if item.startswith(b"RANK="):
                    pids[int(item[5:])] = int(pid)
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_torchrun_matches_one_process_and_resumes_after_kill_9_of_one_rank(time_machine, tmp_path):
    # One process and two ranks over the same 32 streams: the same validation perplexity.
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(train_args(time_machine, tmp_path / "one")) == 0, err.getvalue()
    ranks = run([*torchrun(), *train_args(time_machine, tmp_path / "two")])
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one["steps"] == two["steps"]
    assert abs(one["val_ppl"] - two["val_ppl"]) < 0.05, (one["val_ppl"], two["val_ppl"])
    assert two["val_ppl"] < 0.9 * one["unigram_ppl"], "it learned something"
    # Rank 0 alone wrote the run directory, and printed.
    assert ranks.stdout.count("validation perplexity") == 1

    # kill -9 of rank 1 half-way: the whole job stops.
    out = tmp_path / "killed"
    total = two["steps"]
    launcher = subprocess.Popen(
        [*torchrun(), *train_args(time_machine, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        metrics = out / "metrics.jsonl"
        while launcher.poll() is None and time.monotonic() < deadline:
            if metrics.is_file() and metrics.read_bytes().count(b"\n") >= total // 2:
                os.kill(rank_pids(launcher)[1], signal.SIGKILL)
                break
            time.sleep(0.01)
        assert launcher.wait(timeout=120) != 0, "the job went on without rank 1"
    finally:
        if launcher.poll() is None:
            launcher.kill()
    saved = load_checkpoint(out / LATEST)["trainer"]
    assert 0 < saved["step"] < total and saved["world_size"] == 2

    # Another world size is refused in one line.
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["train", "--resume", str(out)]) == 2
    assert err.getvalue().count("\n") == 1
    assert "written by 2 processes" in err.getvalue() and "--nproc-per-node 2" in err.getvalue()

    # torchrun --resume continues exactly: the uninterrupted run's weights and metrics.
    resumed = run([*torchrun(), "train", "--resume", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = load_checkpoint(out / LATEST)["trainer"]["model"]
    reference = load_checkpoint(tmp_path / "two" / LATEST)["trainer"]["model"]
    for k in reference:
        assert torch.equal(weights[k], reference[k]), k
    assert comparable(out) == comparable(tmp_path / "two")


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line_and_exit_2(small_text, tmp_path):
    argv = train_args(small_text, tmp_path / "run", "--batch-size", "3")
    started = time.monotonic()
    result = run([*torchrun(), *argv])
    assert time.monotonic() - started < DEADLINE_S  # no rank left waiting
    ours = [line for line in result.stderr.splitlines() if line.startswith("tbptt train:")]
    # Each rank says it in one line (whichever exits first, torchrun stops the other: a
    # rank that kept quiet could leave no line at all).
    assert 1 <= len(ours) <= 2, result.stderr[-3000:]
    assert all("batch size 3 does not split into 2" in line for line in ours)
    assert all("--batch-size" in line for line in ours)
    assert "[rank" not in result.stderr, "no rank printed a traceback"
    # Both ranks exited 2; torchrun itself reports the failed ranks and exits non-zero.
    assert "exitcode  : 2" in result.stderr
    assert result.returncode != 0
    assert not (tmp_path / "run").exists(), "nothing written"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_window_with_a_checkpoint(
    time_machine, tmp_path
):
    # SIGTERM to rank 1 alone: rank 0 hears of it through the per-step agreement, so both
    # checkpoint and stop after the same window (no rank waits on a partner that left).
    out = tmp_path / "run"
    argv = train_args(time_machine, out, "--checkpoint-every", "1000")
    launcher = subprocess.Popen(
        [*torchrun(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        metrics = out / "metrics.jsonl"
        while launcher.poll() is None and time.monotonic() < deadline:
            if metrics.is_file() and metrics.read_bytes().count(b"\n") >= 20:
                os.kill(rank_pids(launcher)[1], signal.SIGTERM)
                break
            time.sleep(0.01)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    stopped = [line for line in stderr.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1, stderr[-3000:]  # rank 0 says it
    step = load_checkpoint(out / LATEST)["trainer"]["step"]
    assert f"step {step};" in stopped[0]
    # The checkpoint needed every rank's part (a gather): rank 1 stopped at that window too.
    assert "exitcode  : 143" in stderr  # 128 + SIGTERM, as one process exits
    assert "[rank" not in stderr, "no rank failed in a collective"
