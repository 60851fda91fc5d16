"""`tbptt train` end to end, in-process (tbptt.cli.main), and its answers to bad input."""

import json

import pytest

from tbptt.cli import main
from tbptt.train import read_metrics

TINY = ["--model", "gru", "--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8",
        "--epochs", "1", "--no-progress", "--sample-length", "20"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "regular:35", "randomized:35"])
def test_train_each_lecture_strategy_on_the_time_machine(strategy, time_machine, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(time_machine), "--strategy", strategy, "--out", str(out), *TINY]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "validation perplexity" in printed and "unigram baseline" in printed
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["val_ppl"] > 1
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["strategy"] == strategy
    # steps per stream: the training tokens laid into batch_size columns, less the last target
    rows = config["dataset"]["train_tokens"] // config["train"]["batch_size"] - 1
    if strategy == "full":
        assert len(steps) == 1 and steps[0]["length"] == rows
    if strategy == "regular:35":
        assert len(steps) == -(-rows // 35)
    assert sum(s["tokens"] for s in steps) == epochs[0]["tokens"]
    for name in ("checkpoint.pt", "curves.png", "summary.json"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_default_model_beats_the_unigram_baseline(time_machine, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(time_machine), "--epochs", "1", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_ppl"] < 0.5 * summary["unigram_ppl"], summary
    printed = capsys.readouterr().out
    assert f"{summary['val_ppl']:.3f}" in printed and f"{summary['unigram_ppl']:.3f}" in printed


@pytest.fixture
def files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait ".encode("latin-1") * 200)
    short = tmp_path / "short.txt"
    short.write_text("the time traveller " * 10)
    return {
        "empty": empty,
        "binary": binary,
        "latin": latin,
        "short": short,
        "missing": tmp_path / "nope.txt",
    }


@pytest.mark.parametrize(
    "kind, extra, match",
    [
        ("missing", [], "does not exist"),
        ("empty", [], "is empty"),
        ("binary", [], "binary"),
        ("latin", ["--normalize", "none"], "not UTF-8"),
        ("short", [], "shorter than one regular:35 window"),
        ("short", ["--strategy", "regular:0"], "K >= 1"),
        ("short", ["--strategy", "randomized:-3"], "K >= 1"),
        ("short", ["--strategy", "sometimes"], "unknown strategy"),
        ("short", ["--lr", "-1"], "learning rate"),
        ("short", ["--batch-size", "0"], "batch size"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(kind, extra, match, files, tmp_path, capsys):
    args = ["train", "--data", str(files[kind]), "--out", str(tmp_path / "o"), *TINY, *extra]
    code = main(args)
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


def test_unknown_model_is_refused_by_the_parser(files, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(files["short"]), "--model", "transformer"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'transformer'" in err[0]


def test_python_dash_m_and_console_script(tmp_path):
    import subprocess
    import sys

    for cmd in (
        [sys.executable, "-m", "tbptt", "train", "--strategy", "regular:0"],
        ["tbptt", "env"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if cmd[-1] == "env":
            assert proc.returncode == 0 and "torch" in proc.stdout
        else:
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "K >= 1" in proc.stderr
