import math
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_TIME_MACHINE = SHARED_DATA / "timemachine.txt"
# The data files the tests read: the variable that points elsewhere, and the default copy.
DATA_FILES = {
    "TBPTT_TEST_TIME_MACHINE": SHARED_TIME_MACHINE,
    # Daily minimum temperatures, Melbourne 1981-1990.
    "TBPTT_TEST_TEMPERATURES": SHARED_DATA / "daily-min-temperatures.csv",
}


def data_file(variable: str) -> Path:
    return Path(os.environ.get(variable) or DATA_FILES[variable])


def data_file_required(variable: str) -> bool:
    """Whether a missing copy must fail the run: the variable named it, or CI runs the tests.
    Only where neither is set do the tests that need the file skip."""
    return bool(os.environ.get(variable) or os.environ.get("CI"))


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read (None: it can)."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


TEMPERATURES = data_file("TBPTT_TEST_TEMPERATURES")


def unigram_perplexity(train: torch.Tensor, valid: torch.Tensor) -> float:
    """Perplexity on ``valid`` (N,) of the unigram model counted on ``train`` (M,), add-one
    smoothed: what a model that learned only the symbols' frequencies would score."""
    train, valid = train.long(), valid.long()
    counts = torch.bincount(train, minlength=int(valid.max()) + 1).double() + 1.0
    log_p = (counts / counts.sum()).log()
    return math.exp(-float(log_p[valid].mean()))


def pytest_configure(config):
    # A data file CI promised but cannot read fails the whole run in one line, before a test
    # runs: skipping would silently drop every test that reads it.
    for variable in DATA_FILES:
        path = data_file(variable)
        if data_file_required(variable) and (why := unreadable(path)):
            named = variable if os.environ.get(variable) else "CI"
            raise pytest.UsageError(
                f"{named} is set but {path} cannot be read ({why}): point {variable} at a "
                f"copy; only with {variable} and CI unset do the tests that read it skip"
            )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA device (python -m pytest -m gpu on a GPU)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    # Say which tests CI never runs: -ra groups skips by reason, this names each one.
    skipped = [
        r.nodeid
        for r in terminalreporter.stats.get("skipped", [])
        if "gpu" in r.keywords and not torch.cuda.is_available()
    ]
    if skipped:
        terminalreporter.section(f"{len(skipped)} GPU tests not run (no CUDA device)")
        for nodeid in skipped:
            terminalreporter.line(nodeid)


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
    variable = "TBPTT_TEST_TIME_MACHINE"
    path = data_file(variable)
    if why := unreadable(path):
        if data_file_required(variable):  # pytest_configure stops the run first; kept as a guard
            pytest.fail(f"{variable}: cannot read {path} ({why})", pytrace=False)
        pytest.skip(f"no copy of The Time Machine at {path} (set {variable} to point elsewhere)")
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
