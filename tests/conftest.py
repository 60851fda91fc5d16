import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_TIME_MACHINE = ROOT.parent / "shared" / "data" / "timemachine.txt"
# Daily minimum temperatures, Melbourne 1981-1990 (set TBPTT_TEST_TEMPERATURES to point elsewhere).
TEMPERATURES = Path(
    os.environ.get(
        "TBPTT_TEST_TEMPERATURES", ROOT.parent / "shared" / "data" / "daily-min-temperatures.csv"
    )
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # Never touch the user's cache or the network from tests; seed the global RNG (dropout).
    monkeypatch.setenv("TBPTT_DATA_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tests use tiny tensors: one thread is faster than two and its timing is steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def time_machine() -> Path:
    """The Time Machine as tests and CI see it (set TBPTT_TEST_TIME_MACHINE to point elsewhere)."""
    path = Path(os.environ.get("TBPTT_TEST_TIME_MACHINE", SHARED_TIME_MACHINE))
    if not path.is_file():
        pytest.skip(f"no copy of The Time Machine at {path}")
    return path


@pytest.fixture
def small_text(tmp_path) -> Path:
    """A few kilobytes of text the tests write themselves."""
    words = "the time traveller held in his hand a glittering metallic framework".split()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, len(words), (1500,), generator=g).tolist()
    path = tmp_path / "small.txt"
    path.write_text(" ".join(words[i] for i in idx) + "\n")
    return path
