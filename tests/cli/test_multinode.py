"""Two torchrun "nodes" on this machine, as a multi-node job is launched: two launcher
processes (``--nnodes 2 --node-rank 0|1 --nproc-per-node 1``) meeting at a c10d
rendezvous on loopback, one gloo rank each.

Reference: one process over the same streams (``tests/cli/test_torchrun.py`` checks the
same for ``--nproc-per-node 2``). Every launcher runs under a deadline, so a node left
waiting at the rendezvous or in a collective fails the test instead of blocking CI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbptt.cli import main
from tbptt.train.checkpoint import LATEST, load_checkpoint
from tests.cli.test_torchrun import DEADLINE_S, TORCHRUN, comparable, env, free_port, train_args


def node(rank: int, port: int) -> list[str]:
    """The launch command of node ``rank`` (the command docs/distributed.md shows)."""
    return [
        TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "tbptt",
        "-m", "tbptt",
    ]  # fmt: skip


def launch_two_nodes(argv: list[str], logs: Path) -> list[tuple[int, str, str]]:
    """Both nodes' (exit code, stdout, stderr), each within the deadline. (Output goes to
    files: a node blocked on a full pipe would stall its partner in a collective.)"""
    port = free_port()
    logs.mkdir()
    launchers, files = [], []
    try:
        for rank in (0, 1):
            out, err = (open(logs / f"node{rank}.{name}", "w+") for name in ("out", "err"))
            files += [out, err]
            # A session of its own: on the deadline the launcher and its ranks go together.
            launcher = subprocess.Popen(
                [*node(rank, port), *argv],
                stdout=out,
                stderr=err,
                env=env(),
                start_new_session=True,
            )
            launchers.append(launcher)
        deadline = time.monotonic() + DEADLINE_S
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in launchers]
    finally:
        for p in launchers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in files:
            f.close()
    return [
        (code, (logs / f"node{r}.out").read_text(), (logs / f"node{r}.err").read_text())
        for r, code in enumerate(codes)
    ]


@pytest.mark.slow  # four processes start torch: about 20 s on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun's c10d on loopback")
def test_two_nodes_match_one_process(small_text, tmp_path):
    # One process and two nodes of one rank each over the same 32 streams.
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(train_args(small_text, tmp_path / "one")) == 0, err.getvalue()
    nodes = launch_two_nodes(train_args(small_text, tmp_path / "two"), tmp_path / "logs")
    for _, _, stderr in nodes:
        assert "[rank" not in stderr, stderr[-3000:]
    assert [code for code, _, _ in nodes] == [0, 0], [e[-3000:] for _, _, e in nodes]

    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one["steps"] == two["steps"] > 1
    assert abs(one["val_ppl"] - two["val_ppl"]) < 0.05, (one["val_ppl"], two["val_ppl"])
    # Dropout off: the ranks compute the one process's function and differ only in the
    # order of float sums, so every step's loss agrees far closer than that.
    lines_one, lines_two = comparable(tmp_path / "one"), comparable(tmp_path / "two")
    assert [r.get("step") for r in lines_one] == [r.get("step") for r in lines_two]
    for a, b in zip(lines_one, lines_two, strict=True):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
    # It was one job of two processes: rank 0 alone printed, and its checkpoint says so.
    assert sum(stdout.count("validation perplexity") for _, stdout, _ in nodes) == 1
    assert load_checkpoint(tmp_path / "two" / LATEST)["trainer"]["world_size"] == 2


def test_the_docs_show_the_command_this_test_runs():
    text = (Path(__file__).resolve().parents[2] / "docs" / "distributed.md").read_text()
    commands = re.findall(r"^ {4}(torchrun --nnodes.*?)\n\n", text, flags=re.M | re.S)
    assert len(commands) == 1, commands
    shown = commands[0].replace("\\\n", " ").split()
    flags = [word for word in node(0, 29500) if word.startswith("--")]
    assert [word for word in shown if word.startswith("--") and word in flags] == flags
    assert shown[shown.index("-m") : shown.index("-m") + 3] == ["-m", "tbptt", "train"]
