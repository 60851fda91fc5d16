"""The Python example of docs/compare.md (also in the README) runs as written, data path aside."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("document", ["docs/compare.md", "README.md"])
def test_compare_example_runs(document, time_machine, tmp_path, monkeypatch, capsys):
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", (ROOT / document).read_text(), flags=re.S)
        if "run_comparison" in b
    )
    assert len([line for line in block.splitlines() if line.strip()]) <= 12
    monkeypatch.chdir(tmp_path)
    exec(
        compile(block.replace("path/to/timemachine.txt", str(time_machine)), document, "exec"),
        {},
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(": " in line for line in lines)
    assert (tmp_path / "runs" / "compare" / "report.html").is_file()
    assert (tmp_path / "runs" / "compare" / "cuts.png").stat().st_size > 0
