"""The "your own module" example of docs/strategies.md and of the README runs as written."""

import re
from pathlib import Path

import pytest

from tests.conftest import unigram_perplexity

ROOT = Path(__file__).resolve().parents[1]
MARKER = "CustomLM("


def _examples(path: Path) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if MARKER in b]


def test_the_docs_hold_the_example():
    assert len(_examples(ROOT / "docs" / "strategies.md")) == 1


@pytest.mark.parametrize("document", ["docs/strategies.md", "README.md"])
def test_the_custom_module_example_runs(document, time_machine, tmp_path, capsys):
    examples = _examples(ROOT / document)
    (code,) = examples
    assert len(code.strip().splitlines()) <= 25
    # The example as written, on a slice so the test stays fast: 20,000 characters are
    # enough for its one epoch to learn more than the symbols' frequencies.
    small = tmp_path / "slice.txt"
    small.write_text(time_machine.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    assert "path/to/timemachine.txt" in code
    names = {}
    exec(compile(code.replace("path/to/timemachine.txt", str(small)), document, "exec"), names)
    val_ppl = float(capsys.readouterr().out.strip().splitlines()[-1])
    unigram = unigram_perplexity(names["data"].train, names["data"].valid)
    assert 1.0 < val_ppl < unigram, f"val ppl {val_ppl:.2f}, unigram {unigram:.2f}"
