"""Every strategy spec through `tbptt train` on The Time Machine (a slice), with an LSTM and a GRU;
documents with per-stream resets and zoneout from the command line."""

import json
import math

import pytest
import torch

from tbptt.cli import main
from tbptt.train import read_metrics
from tbptt.truncation import STRATEGIES

SPECS = [
    "full",
    "full:40",
    "full:checkpoint",
    "full:40,checkpoint",
    "regular:10",
    "randomized:10",
    "randomized:10,alpha=4",
    "k1k2:5,15",
    "variable:10",
    "adaptive:0.2,max=20",
    "snap:1,update_every=20",
    "snap-lagged:1,update_every=20",
    "measured:0.2,max=20",
]
# trained through `tbptt train` (killed and resumed) in tests/train/test_online_resume.py
# and layer-rtrl (element-wise recurrences only) in tests/train/test_online_diagonal.py
TRAINED_ELSEWHERE = {"rtrl", "uoro", "layer-rtrl"}
TINY = ["--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4", "--epochs", "1",
        "--batch-size", "4", "--no-progress", "--sample-length", "10", "--threads", "1",
        "--lr-schedule", "constant", "--checkpoint-every", "epoch"]  # fmt: skip


@pytest.fixture
def slice_of_the_time_machine(time_machine, tmp_path):
    path = tmp_path / "slice.txt"
    path.write_text(time_machine.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_list_covers_every_registered_strategy():
    assert {s.partition(":")[0] for s in SPECS} | TRAINED_ELSEWHERE == set(STRATEGIES)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "gru"])
@pytest.mark.parametrize("spec", SPECS)
def test_every_strategy_trains_from_the_command_line(spec, model, slice_of_the_time_machine, tmp_path, capsys):  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--data", str(slice_of_the_time_machine), "--model", model,
            "--strategy", spec, "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    assert "validation perplexity" in capsys.readouterr().out
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    (epoch,) = [r for r in records if r["event"] == "epoch"]
    assert math.isfinite(epoch["val_ppl"]) and epoch["val_ppl"] > 1
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["strategy"] == spec
    rows = config["dataset"]["train_tokens"] // 4 - 1  # steps per stream
    assert sum(s["length"] for s in steps) == rows
    expected_steps = {
        "full": 1,
        "full:40": -(-rows // 40),
        "full:checkpoint": 1,
        "full:40,checkpoint": -(-rows // 40),
        "regular:10": -(-rows // 10),
        "k1k2:5,15": -(-rows // 5),
        "snap:1,update_every=20": -(-rows // 20),
    }
    if spec in expected_steps:
        assert len(steps) == expected_steps[spec]
    if spec == "variable:10":
        assert len({s["length"] for s in steps}) > 3
        for s in steps:
            assert s["lr"] == pytest.approx(5e-3 * s["length"] / 10)


@pytest.mark.slow
def test_documents_and_zoneout_from_the_command_line(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    words = "the time traveller held in his hand a glittering metallic framework".split()
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        idx = torch.randint(0, len(words), (40,), generator=g).tolist()
        (docs / f"doc{i:02d}.txt").write_text(" ".join(words[j] for j in idx))
    out = tmp_path / "run"
    argv = ["train", "--documents", str(docs), "--model", "lstm", "--strategy", "k1k2:4,12",
            "--zoneout", "0.1", "--zoneout-cell", "0.2", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["documents"] == 12
    assert config["model"]["zoneout"] == 0.1 and config["model"]["zoneout_cell"] == 0.2
    # one file cut at a separator
    text = tmp_path / "joined.txt"
    text.write_text("\n\n\n".join(p.read_text() for p in sorted(docs.iterdir())))
    out2 = tmp_path / "run2"
    argv = ["train", "--data", str(text), "--separator", "\\n\\n\\n", "--model", "gru",
            "--strategy", "regular:8", "--out", str(out2), *TINY]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out2 / "config.json").read_text())["dataset"]["documents"] == 12


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--strategy", "k1k2:9,3"], "K1 <= K2"),
        (["--strategy", "full:checkpoint=0"], "S >= 1"),
        (["--strategy", "variable:0"], "K >= 1"),
        (["--zoneout", "1.5"], "zoneout rate"),
        (["--documents", "/nonexistent/docs"], "does not exist"),
        (["--documents", "FILE"], "separator"),
    ],
)
def test_bad_strategy_zoneout_or_documents_get_one_line(extra, match, tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("some text " * 100)
    extra = [str(f) if e == "FILE" else e for e in extra]
    code = main(["train", "--data", str(f), "--out", str(tmp_path / "r"), *TINY, *extra])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
