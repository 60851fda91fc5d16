"""One data contract and one run (issue 23): every data kind answers through the same
Dataset protocol, flags a kind does not read are refused, a source and its preparation are
the same data, and a run says where it ran and what it wrote."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tbptt.cli import main
from tbptt.data import Dataset
from tbptt.data.config import DataConfig, load_dataset

TINY = ["--model", "gru", "--hidden-size", "6", "--num-layers", "1", "--batch-size", "4",
        "--epochs", "1", "--strategy", "regular:6", "--threads", "1", "--no-progress",
        "--sample-length", "5"]  # fmt: skip


def cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def series(tmp_path) -> Path:
    rows = [[f"d{i}", f"{(i * 7) % 13 + 0.5 * i:.2f}", f"{i % 5}"] for i in range(160)]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in [["Date", "Temp", "Rain"], *rows]))
    return path


SERIES = ["--target", "Temp", "--inputs", "Temp,Rain"]


def test_every_kind_answers_the_whole_protocol(small_text, series, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.txt").write_text(small_text.read_text()[i * 900 : (i + 1) * 900])
    configs = [
        DataConfig(path=str(small_text)),
        DataConfig(documents=str(docs)),
        DataConfig(path=str(series), target=("Temp",)),
        DataConfig(task="adding:T=8,episodes=20"),
    ]
    for config in configs:
        data = load_dataset(config)
        assert isinstance(data, Dataset), config
        assert data.unit and isinstance(data.outputs, tuple)
        assert len(data.identity()) == 64 and data.identity() == load_dataset(config).identity()
        assert data.baselines("test") == {} or data.test_split() is not None
        json.dumps(data.describe())


def test_a_flag_the_kind_does_not_read_is_refused_naming_it(series, small_text):
    code, _, err = cli(
        ["prepare", series, "--out", series.parent / "p", *SERIES, "--tokens", "word"]
    )
    assert code == 2 and "--tokens" in err and len(err.strip().splitlines()) == 1, err
    assert not (series.parent / "p").exists()
    for argv, flag in [
        (["--data", series, *SERIES, "--tokens", "word"], "--tokens"),
        (["--data", series, *SERIES, "--strip-gutenberg"], "--strip-gutenberg"),
        (["--task", "adding:T=8,episodes=20", "--valid-fraction", "0.3"], "--valid-fraction"),
        (["--data", small_text, "--horizon", "2"], "--horizon"),
    ]:
        code, _, err = cli(["train", *argv, *TINY])
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err


def test_a_preparation_keeps_its_options_and_refuses_others(small_text, tmp_path):
    prepared = tmp_path / "p"
    assert cli(["prepare", small_text, "--out", prepared])[0] == 0
    for extra, flag in [
        (["--valid-fraction", "0.2"], "--valid-fraction"),
        (["--separator", "\\n\\n"], "--separator"),
        (["--strip-gutenberg"], "--strip-gutenberg"),
        (["--tokens", "word"], "--tokens"),
    ]:
        code, _, err = cli(["train", "--data", prepared, "--out", tmp_path / "x", *TINY, *extra])
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()
    # Repeating the preparation's own value is fine, and is what config.json records.
    code, out, err = cli(["train", "--data", prepared, "--out", tmp_path / "r", *TINY,
                          "--valid-fraction", "0.1"])  # fmt: skip
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    meta = json.loads((prepared / "meta.json").read_text())
    assert saved["valid_fraction"] == meta["valid_fraction"] and saved["tokens"] == meta["level"]
    assert "Gutenberg" not in out


def _evaluate(run: Path, *extra) -> dict:
    record = run.parent / f"eval-{len(extra)}.json"
    code, _, err = cli(["evaluate", run, "--json", record, *extra])
    assert code == 0, err
    return json.loads(record.read_text())


def test_a_text_and_its_preparation_are_the_same_data(small_text, tmp_path):
    prepared, run = tmp_path / "p", tmp_path / "run"
    assert cli(["prepare", small_text, "--out", prepared, "--normalize", "none"])[0] == 0
    assert (
        load_dataset(DataConfig(path=str(small_text))).identity()
        == load_dataset(DataConfig(path=str(prepared))).identity()
    )
    assert cli(["train", "--data", small_text, "--out", run, *TINY])[0] == 0
    code, _, err = cli(["train", "--resume", run, "--data", prepared, "--epochs", "2"])
    assert code == 0, err
    same, own = _evaluate(run, "--data", prepared), _evaluate(run)
    assert same["ppl"] == own["ppl"] and same["rows"] == own["rows"]


def test_a_csv_and_its_prepared_series_are_the_same_data(series, tmp_path):
    prepared, run = tmp_path / "p", tmp_path / "run"
    assert cli(["prepare", series, "--out", prepared, *SERIES])[0] == 0
    assert cli(["train", "--data", series, *SERIES, "--out", run, *TINY])[0] == 0
    code, _, err = cli(["train", "--resume", run, "--data", prepared, "--epochs", "2"])
    assert code == 0, err
    assert _evaluate(run, "--data", prepared)["rmse"] == _evaluate(run)["rmse"]
    # and the other way round: a run trained on the preparation, resumed on its CSV
    other = tmp_path / "other"
    assert cli(["train", "--data", prepared, "--out", other, *TINY])[0] == 0
    code, _, err = cli(["train", "--resume", other, "--data", series, "--epochs", "2"])
    assert code == 0, err
    # generate forecasts from the table the preparation was made from
    code, out, err = cli(["generate", other])
    assert code == 0 and out.startswith("step,Temp"), err
    code, _, err = cli(["generate", other, "--temperature", "2"])
    assert code == 2 and "--temperature" in err and len(err.strip().splitlines()) == 1, err


def test_evaluating_data_of_another_family_says_so(small_text, series, tmp_path):
    text_run, series_run = tmp_path / "t", tmp_path / "s"
    assert cli(["train", "--data", small_text, "--out", text_run, *TINY])[0] == 0
    assert cli(["train", "--data", series, *SERIES, "--out", series_run, *TINY])[0] == 0
    code, _, err = cli(["evaluate", text_run, "--data", series])
    assert code == 2 and "a time series" in err and "trained on text" in err, err
    code, _, err = cli(["evaluate", series_run, "--data", small_text])
    assert code == 2 and "is text" in err and "trained on a time series" in err, err


def test_a_refusal_after_the_checks_leaves_nothing(small_text, tmp_path):
    out = tmp_path / "run"
    # the trainer refuses (no window fits the split) after the data and model are built
    code, _, err = cli(["train", "--data", small_text, "--out", out, *TINY, "--batch-size", "4000"])
    assert code == 2 and "shorter than one" in err, err
    assert not out.exists()


def test_a_run_says_where_it_ran_and_lists_what_it_wrote(series, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli(["train", "--data", series, *SERIES, "--out", run, *TINY])
    assert code == 0, err
    for name in ("config.json", "summary.json"):
        ran = json.loads((run / name).read_text())["ran_on"]
        assert ran["world_size"] == 1 and ran["device"] == "cpu" and ran["threads"] == 1
        assert ran["torch"] and ran["tbptt"]
    wrote = next(line for line in out.splitlines() if line.startswith("wrote "))
    listed = {Path(p).name for p in wrote[len("wrote ") :].split(", ")}
    on_disk = {p.name for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert listed == on_disk, (listed, on_disk)


def test_with_no_progress_bar_a_line_says_the_run_is_alive(small_text, tmp_path, monkeypatch):
    import tbptt.run.run as run_module

    monkeypatch.setattr(run_module, "ALIVE_SECONDS", 0.0)
    code, out, err = cli(["train", "--data", small_text, "--out", tmp_path / "r", *TINY])
    assert code == 0, err
    alive = [line for line in out.splitlines() if re.search(r"epoch 1/1, step \d+, ", line)]
    assert len(alive) >= 3, out


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_model_run.py"


def _example(out: Path, *, kill_after: float | None = None) -> subprocess.CompletedProcess | None:
    argv = [sys.executable, str(EXAMPLE), "--out", str(out), "--epochs", "2",
            "--checkpoint-every", "7"]  # fmt: skip
    if kill_after is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: no handler runs
        proc.wait()
    return None


def _final(out: Path):
    import torch

    from tbptt.train import load_checkpoint

    weights = load_checkpoint(out / "checkpoint.pt")["trainer"]["model"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    measured = {"seconds", "tokens_per_s", "peak_rss_mb"}
    records = [{k: v for k, v in json.loads(line).items() if k not in measured} for line in lines]
    return {k: v.clone() for k, v in weights.items()}, records, torch


@pytest.mark.slow
def test_the_own_model_example_survives_sigkill_bit_for_bit(tmp_path):
    reference = _example(tmp_path / "a")
    assert reference.returncode == 0, reference.stderr
    # killed once while training (after its first checkpoints), then run again as it was
    _example(tmp_path / "b", kill_after=6.0)
    again = _example(tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == reference.stdout.strip().splitlines()[-1]
    (wa, ra, torch), (wb, rb, _) = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ra == rb


def test_the_readme_run_from_python_runs_as_written(tmp_path):
    import importlib.util

    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "tbptt.Run(" in b
    ]
    spec = importlib.util.spec_from_file_location("own_model_run", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    namespace = {"tbptt": __import__("tbptt"), **vars(example)}
    code = block.replace('"runs/mine"', repr(str(tmp_path / "mine"))).replace(
        "epochs=3", "epochs=1"
    )
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].code == 0 and (tmp_path / "mine" / "summary.json").is_file()
