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
