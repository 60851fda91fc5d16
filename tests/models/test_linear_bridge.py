"""The outside-layer example of docs/linear-recurrences.md: a third-party minGRU (the optional
``mingru-pytorch`` package, skipped without it) taking an initial state and returning the final
one, trained as a tbptt ``StatefulModule`` under randomized:35 and full:checkpoint, and resumed
bitwise after kill -9."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tbptt.train import read_metrics
from tbptt.train.checkpoint import LATEST
from tests.conftest import unigram_perplexity
from tests.train.test_resume import comparable

pytest.importorskip("minGRU_pytorch", reason="the example needs the optional mingru-pytorch")

ROOT = Path(__file__).resolve().parents[2]
MARKER = "class MinGRUBridge"


def _example() -> str:
    text = (ROOT / "docs" / "linear-recurrences.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if MARKER in b]
    return code


def _slice(time_machine, tmp_path, chars=3000) -> Path:
    small = tmp_path / "slice.txt"
    small.write_text(time_machine.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return small


def test_the_example_runs_as_written(time_machine, tmp_path, capsys):
    code = _example()
    assert "path/to/timemachine.txt" in code
    # 20,000 characters: enough for the one epoch to learn more than the symbols' frequencies
    small = _slice(time_machine, tmp_path, chars=20_000)
    names = {}
    exec(compile(code.replace("path/to/timemachine.txt", str(small)), "example", "exec"), names)
    val_ppl = float(capsys.readouterr().out.strip().splitlines()[-1])
    unigram = unigram_perplexity(names["data"].train, names["data"].valid)
    assert 1.0 < val_ppl < unigram, f"val ppl {val_ppl:.2f}, unigram {unigram:.2f}"


# The child: the example's bridge (everything before the data is loaded), then a run that
# writes a checkpoint after every optimizer step and resumes from the latest one if present.
DRIVER = """
import sys
from pathlib import Path
from tbptt.train import MetricsWriter
from tbptt.train.checkpoint import LATEST, Checkpointer, load_checkpoint

torch.set_num_threads(1)
data_path, out, spec, epochs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
text, _ = tbptt.load_corpus(data_path)
data = tbptt.prepare_text(text)
torch.manual_seed(0)
model = tbptt.CustomLM(MinGRUBridge(16), vocab_size=len(data.vocab), input_size=16,
                       output_size=16, batch_dim=0)
config = tbptt.TrainConfig(strategy=spec, epochs=epochs, batch_size=2, seed=1)
out.mkdir(parents=True, exist_ok=True)
resumed = (out / LATEST).is_file()
metrics = MetricsWriter(out / "metrics.jsonl", append=resumed)
trainer = tbptt.Trainer(model, data.train, data.valid, config, metrics=metrics)
checkpoints = Checkpointer(out, every_steps=1, keep=2)
if resumed:
    trainer.load_state_dict(load_checkpoint(out / LATEST)["trainer"])
trainer.fit(on_step=lambda record: checkpoints.save({"trainer": trainer.state_dict()}, record["step"]))
torch.save(model.state_dict(), out / "final.pt")
"""


def _child(data: Path, out: Path, spec: str) -> list[str]:
    bridge = _example().split("text, _ =")[0]
    epochs = "4" if spec.startswith("full") else "1"  # full: one step per epoch
    return [sys.executable, "-c", bridge + DRIVER, str(data), str(out), spec, epochs]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["randomized:35", "full:checkpoint"])
def test_the_bridge_trains_and_resumes_bitwise_after_kill_9(spec, time_machine, tmp_path):
    data = _slice(time_machine, tmp_path, chars=800)
    reference = tmp_path / "reference"
    done = subprocess.run(_child(data, reference, spec), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = _last_of_each(comparable(read_metrics(reference / "metrics.jsonl")))
    steps = sum(1 for r in lines if r.get("event") == "step")
    assert steps >= 2

    out = tmp_path / "killed"
    at = max(1, steps // 2)  # SIGKILL from outside once `at` metrics lines are written
    proc = subprocess.Popen(
        _child(data, out, spec), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and time.monotonic() < deadline:
        written = metrics.is_file() and metrics.read_bytes().count(b"\n") >= at
        if written and (out / LATEST).is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the child ended before it was killed"
    assert (out / LATEST).is_file()
    resumed = subprocess.run(_child(data, out, spec), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    want = torch.load(reference / "final.pt", weights_only=True)
    got = torch.load(out / "final.pt", weights_only=True)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs after kill -9 at step {at} ({spec})"
    # the lines of steps after the last checkpoint are written again by the resumed run
    assert _last_of_each(comparable(read_metrics(metrics))) == lines


def _last_of_each(records: list[dict]) -> list[dict]:
    last = {(r.get("event"), r.get("epoch"), r.get("step")): r for r in records}
    return sorted(last.values(), key=lambda r: (r.get("step", 0), r.get("event") != "step"))
