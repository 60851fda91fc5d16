"""The README's Python examples run as written (only the data path is pointed at the test copy)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_ten_line_example_runs(time_machine, capsys):
    block = next(b for b in python_blocks() if "tbptt.Trainer" in b)
    assert len([line for line in block.splitlines() if line.strip()]) <= 12
    exec(
        compile(block.replace("path/to/timemachine.txt", str(time_machine)), "README.md", "exec"),
        {},
    )
    out = capsys.readouterr().out.splitlines()
    epoch, val_ppl, tokens_per_s = out[0].split()
    assert epoch == "1" and 1 < float(val_ppl) < 12
    assert out[1].strip()  # a generated continuation


@pytest.mark.slow
def test_time_series_example_runs_and_beats_persistence(capsys):
    from tests.conftest import TEMPERATURES as path

    if not path.is_file():
        pytest.skip("needs daily-min-temperatures.csv")
    block = next(b for b in python_blocks() if "prepare_series" in b)
    assert len([line for line in block.splitlines() if line.strip()]) <= 12
    code = block.replace("path/to/daily-min-temperatures.csv", str(path))
    exec(compile(code, "README.md", "exec"), {})
    model_rmse, persistence_rmse = map(float, capsys.readouterr().out.split())
    assert model_rmse < persistence_rmse
