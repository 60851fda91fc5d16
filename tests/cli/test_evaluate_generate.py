"""`tbptt evaluate` and `tbptt generate` end to end, in-process (tbptt.cli.main)."""

import json

import pytest

from tbptt.analysis import load_model
from tbptt.cli import main

TINY = ["--model", "gru", "--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4",
        "--epochs", "1", "--batch-size", "4", "--strategy", "regular:10", "--no-progress",
        "--sample-length", "5"]  # fmt: skip


@pytest.fixture
def text_run(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_text), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    return out


def test_evaluate_reproduces_the_runs_validation_perplexity(text_run, tmp_path, capsys):
    summary = json.loads((text_run / "summary.json").read_text())
    path = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(text_run), "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["ppl"] == pytest.approx(summary["val_ppl"], rel=1e-12, abs=1e-12)
    printed = capsys.readouterr().out
    assert printed.startswith("perplexity ") and "bits per token" in printed
    assert printed.count("\n") == 1


def test_evaluate_other_data_uses_the_runs_vocabulary(text_run, small_text, tmp_path, capsys):
    same = tmp_path / "same.json"
    assert main(["evaluate", "--checkpoint", str(text_run), "--json", str(same)]) == 0
    copy = tmp_path / "copy.txt"
    copy.write_text(small_text.read_text())
    moved = tmp_path / "moved.json"
    argv = ["evaluate", "--checkpoint", str(text_run), "--data", str(copy), "--json", str(moved)]
    assert main(argv) == 0
    assert json.loads(moved.read_text())["ppl"] == json.loads(same.read_text())["ppl"]
    # a text with words the run never saw is scored too (they are <unk>)
    other = tmp_path / "other.txt"
    other.write_text("the quick brown fox held a framework in his hand " * 40)
    argv = ["evaluate", "--checkpoint", str(text_run), "--data", str(other), "--json", str(moved)]
    assert main(argv) == 0
    record = json.loads(moved.read_text())
    assert record["rows"] > 0 and record["ppl"] > 1


def test_evaluate_the_training_split(text_run, tmp_path):
    path = tmp_path / "train.json"
    argv = ["evaluate", "--checkpoint", str(text_run), "--split", "train", "--json", str(path)]
    assert main(argv) == 0
    record = json.loads(path.read_text())
    assert record["split"] == "train" and record["ppl"] > 1
    # every training token but the first is predicted (nothing comes before the split)
    _, data, _ = load_model(text_run)
    assert record["rows"] == len(data.train) - 1


@pytest.mark.parametrize("flag", ["--batch-size", "--window"])
def test_evaluate_refuses_a_non_positive_size(flag, text_run, capsys):
    assert main(["evaluate", "--checkpoint", str(text_run), flag, "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} >= 1" in err


def _generated(run, capsys, *flags):
    assert main(["generate", "--checkpoint", str(run), "--prefix", "the time", *flags]) == 0
    return capsys.readouterr().out


def test_generate_same_seed_same_text(text_run, capsys):
    flags = ["--length", "30", "--temperature", "1.5"]
    a = _generated(text_run, capsys, *flags, "--seed", "3")
    b = _generated(text_run, capsys, *flags, "--seed", "3")
    assert a == b and a.strip()


def test_generate_top_k_1_and_a_tiny_nucleus_are_greedy(text_run, capsys):
    greedy = _generated(text_run, capsys, "--length", "30")
    sampled = ["--length", "30", "--temperature", "2.0", "--seed", "1"]
    assert _generated(text_run, capsys, *sampled, "--top-k", "1") == greedy
    assert _generated(text_run, capsys, *sampled, "--top-p", "1e-9") == greedy


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--top-k", "0"], "top_k an integer >= 1"),
        (["--top-p", "0"], "top_p in (0, 1]"),
        (["--top-p", "1.5"], "top_p in (0, 1]"),
        (["--temperature", "-1"], "temperature >= 0"),
    ],
)
def test_generate_refuses_invalid_sampling_in_one_line(flags, match, text_run, capsys):
    assert main(["generate", "--checkpoint", str(text_run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err


def test_generate_refuses_a_non_text_checkpoint(tmp_path, capsys):
    out = tmp_path / "copy"
    argv = ["train", "--task", "copy:T=5,episodes=40,valid_episodes=8", "--out", str(out),
            "--hidden-size", "8", "--epochs", "1", "--batch-size", "4", "--strategy", "regular:5",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not text" in err
    # evaluate measures it with the task's own objective
    assert main(["evaluate", "--checkpoint", str(out)]) == 0
    assert "acc" in capsys.readouterr().out
