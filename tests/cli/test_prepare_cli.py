"""`tbptt prepare` then `tbptt train --data DIR`, in-process (tbptt.cli.main): the same run as
from the text, and one line with exit code 2 for every damaged or foreign preparation."""

import json

import pytest

from tbptt.cli import main

TINY = ["--model", "gru", "--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4",
        "--epochs", "1", "--batch-size", "4", "--strategy", "regular:10", "--no-progress",
        "--sample-length", "0", "--threads", "1"]  # fmt: skip


def _prepare(source, out, *flags) -> None:
    assert main(["prepare", str(source), "--out", str(out), "--no-progress", *flags]) == 0


def _epoch(run) -> dict:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    record = [json.loads(line) for line in lines if '"event": "epoch"' in line][-1]
    return {k: v for k, v in record.items() if k.startswith(("train_", "val_"))}


def _error(capsys, argv, *words) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"tbptt {argv[0]}: error: "), err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("level", ["char", "word"])
def test_training_from_a_preparation_equals_training_from_the_text(
    small_text, tmp_path, capsys, level
):
    _prepare(small_text, tmp_path / "p", "--tokens", level)
    printed = capsys.readouterr().out
    assert printed.startswith("tbptt prepare: ") and "MB/s" in printed
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["level"] == level and meta["eos"] == (level == "word")  # the text defaults
    flags = [*TINY, "--tokens", level]
    assert main(["train", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "a"), *TINY]) == 0
    assert main(["train", "--data", str(small_text), "--out", str(tmp_path / "b"), *flags]) == 0
    assert _epoch(tmp_path / "a") == _epoch(tmp_path / "b")  # bit for bit: same ids, same run
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    assert a["data"]["tokens"] == level and a["dataset"]["prepared"] == str(tmp_path / "p")


def test_max_steps_bounds_a_run(small_text, tmp_path):
    _prepare(small_text, tmp_path / "p")
    argv = ["train", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "r"), *TINY]
    assert main([*argv, "--max-steps", "3"]) == 0
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "step"' in line for line in lines) == 3


def test_damaged_preparations_are_one_line_and_exit_2(small_text, tmp_path, capsys):
    prepared = tmp_path / "p"
    _prepare(small_text, prepared)
    train = ["train", "--data", str(prepared), "--out", str(tmp_path / "r"), *TINY]
    _error(capsys, [*train, "--tokens", "word"], "prepared with tokens 'char'", "--tokens")
    tokens = prepared / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    raw[7] ^= 1
    tokens.write_bytes(bytes(raw))
    _error(capsys, train, "SHA-256", "tbptt prepare")
    tokens.write_bytes(bytes(raw[:-1]))
    _error(capsys, train, "truncated")
    (prepared / "meta.json").unlink()
    _error(capsys, train, "no meta.json")
    assert not (tmp_path / "r").exists()  # refused before the run directory is made
    _error(capsys, ["prepare", str(small_text), "--out", str(tmp_path)], "holds the input")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    out = ["prepare", str(small_text), "--out", str(tmp_path / "mine"), "--overwrite"]
    _error(capsys, out, "not an empty directory", "notes.txt")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_another_vocabulary_is_refused_on_resume_and_evaluation(small_text, tmp_path, capsys):
    _prepare(small_text, tmp_path / "p")
    other = tmp_path / "other.txt"
    other.write_text("an entirely different text, with other letters: quizzical jokes\n" * 30)
    _prepare(other, tmp_path / "q")
    run = tmp_path / "r"
    assert main(["train", "--data", str(tmp_path / "p"), "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", str(run), "--data", str(tmp_path / "q"), "--epochs", "2"]
    _error(capsys, resume, "another vocabulary")
    _error(capsys, ["evaluate", str(run), "--data", str(tmp_path / "q")], "another vocabulary")
    assert main(["evaluate", str(run), "--data", str(tmp_path / "p")]) == 0  # its own: fine


@pytest.mark.slow
def test_a_prepared_series_trains_as_its_csv(tmp_path, capsys):
    lines = ["Date,Temp"] + [f"d{i},{10 + (i * 7 % 13) / 3:.3f}" for i in range(300)]
    csv = tmp_path / "t.csv"
    csv.write_text("\n".join(lines) + "\n")
    _prepare(csv, tmp_path / "p", "--target", "Temp")
    assert "float32" in capsys.readouterr().out
    flags = [*TINY, "--dropout", "0"]
    assert main(["train", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "a"), *flags]) == 0
    flags += ["--target", "Temp"]
    assert main(["train", "--data", str(csv), "--out", str(tmp_path / "b"), *flags]) == 0
    assert _epoch(tmp_path / "a") == _epoch(tmp_path / "b")
    a, b = ((tmp_path / r / "predictions.csv").read_text() for r in "ab")
    assert a == b
