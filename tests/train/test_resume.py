"""Exact resume: a run stopped anywhere and continued from its checkpoint ends bitwise
where the uninterrupted run ends, with the same metrics lines (``MEASURED_FIELDS`` aside).

In-process tests cover the Trainer's run state for every strategy; the subprocess tests
kill ``tbptt train`` with SIGKILL at a step drawn from a seeded generator (after a metrics
line, half-way through a checkpoint write, or from outside at an arbitrary moment; set
``TBPTT_TEST_SEED`` to draw other steps) and resume it with ``--resume``.
Also here: the guards on the carried state, and the non-finite policy on an exploding model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tbptt.cli import main
from tbptt.errors import CheckpointError, ConfigError, NonFiniteError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import MetricsWriter, TrainConfig, Trainer, read_metrics
from tbptt.train.checkpoint import (
    KEPT_DIR,
    LATEST,
    Checkpointer,
    load_checkpoint,
    nonfinite_entries,
    save_checkpoint,
)
from tbptt.train.trainer import MEASURED_FIELDS

# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy machine torch's
    # thread pool can make them many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(kind="gru", *, vocab=7, hidden=4, dropout=0.1, seed=0) -> RecurrentLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab,
        kind=kind,
        hidden_size=hidden,
        num_layers=1,
        embedding_size=3,
        dropout=dropout,
    )
    return RecurrentLM(config)


def tokens(n=260, vocab=7, seed=0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def make_trainer(strategy, *, sampling="sequential", epochs=2, kind="gru", **config) -> Trainer:
    data = tokens()
    cfg = TrainConfig(
        strategy=strategy, batch_size=3, epochs=epochs, sampling=sampling, seed=1, **config
    )
    return Trainer(tiny_model(kind), data[:220], data[220:], cfg, metrics=MetricsWriter(None))


class _Halt(Exception):
    pass


def stop_at(step):
    def on_step(record):
        if record["step"] == step:
            raise _Halt

    return on_step


def comparable(records):
    return [{k: v for k, v in r.items() if k not in MEASURED_FIELDS} for r in records]


def through_a_file(state, tmp_path):
    """What a resumed process sees: the state written to disk and read with weights_only."""
    path = save_checkpoint({"trainer": state}, tmp_path / "state.pt")
    return load_checkpoint(path)["trainer"]


STRATEGIES = [
    "regular:5",
    "randomized:5",
    "full:8",
    "k1k2:3,7",
    "variable:6",
    "randomized:5,alpha=4",
]


# -- the Trainer's run state -----------------------------------------------------------


# the linear recurrences (tbptt.models.minimal) on the strategies that carry a gradient across
LINEAR_RUNS = [(s, "sequential", k) for k in ("mingru", "minlstm", "lru") for s in STRATEGIES[1:3]]


@pytest.mark.parametrize(
    "strategy, sampling, kind",
    [(s, m, "gru") for s in STRATEGIES for m in ("sequential", "random")] + LINEAR_RUNS,
)
def test_trainer_resumes_bitwise_from_any_step(strategy, sampling, kind, tmp_path):
    reference = make_trainer(strategy, sampling=sampling, kind=kind)
    reference.fit()
    total = reference.step
    stop = random.Random(f"{strategy}{sampling}").randrange(1, total)

    first = make_trainer(strategy, sampling=sampling, kind=kind)
    with pytest.raises(_Halt):
        first.fit(on_step=stop_at(stop))
    state = through_a_file(first.state_dict(), tmp_path)

    torch.manual_seed(12345)  # the resumed process starts with other global random state
    random.seed(12345)
    second = make_trainer(strategy, sampling=sampling, kind=kind)
    second.load_state_dict(state)
    second.fit()

    for (name, p), q in zip(reference.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), f"{name} differs after resuming at step {stop} of {total}"
    lines = comparable(first.metrics.records) + comparable(second.metrics.records)
    assert lines == comparable(reference.metrics.records), f"stopped at step {stop}"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "state_dict"):
        return _same(a.state_dict(), b.state_dict())
    return a == b


@pytest.mark.parametrize("strategy", ["k1k2:3,7", "randomized:5"])
def test_everything_the_trainer_holds_is_saved_or_rebuilt(strategy, tmp_path):
    """A new attribute on Trainer must be added to state_dict (or to REBUILT_ATTRIBUTES)."""
    a = make_trainer(strategy)
    with pytest.raises(_Halt):
        a.fit(on_step=stop_at(7))
    b = make_trainer(strategy)
    b.load_state_dict(through_a_file(a.state_dict(), tmp_path))
    assert set(vars(a)) == set(vars(b))
    for name, value in vars(a).items():
        if name not in Trainer.REBUILT_ATTRIBUTES:
            assert _same(value, getattr(b, name)), (
                f"Trainer.{name} is not restored by load_state_dict: save it in state_dict"
            )
    assert _same(a.model.state_dict(), b.model.state_dict())
    assert _same(a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"])
    assert _same(a.generator.get_state(), b.generator.get_state())
    assert a.stream.position == b.stream.position
    if strategy.startswith("k1k2"):
        assert a.context is not None, "the test should cover a stored lookback context"


def test_a_checkpoint_of_another_configuration_or_model_is_refused(tmp_path):
    state = through_a_file(make_trainer("regular:5").state_dict(), tmp_path)
    other_batch = make_trainer("regular:5")
    other_batch.config = dataclasses.replace(other_batch.config, batch_size=4)
    with pytest.raises(CheckpointError) as e:
        other_batch.load_state_dict(state)
    assert "train.batch_size is 3 there but 4 here" in str(e.value)
    assert "\n" not in str(e.value)

    data = tokens()
    bigger = Trainer(
        tiny_model(hidden=5),
        data[:220],
        data[220:],
        TrainConfig(strategy="regular:5", batch_size=3, seed=1),
    )
    with pytest.raises(
        CheckpointError, match=r"another model: .*shape \(12, 4\) there, \(15, 5\) here"
    ):
        bigger.load_state_dict(state)
    # options that do not change the trajectory so far may differ
    longer = make_trainer("regular:5", epochs=5, nonfinite="skip")
    longer.load_state_dict(state)


# -- guards ----------------------------------------------------------------------------


def test_a_carried_state_of_another_batch_size_is_refused():
    trainer = make_trainer("regular:5")
    with pytest.raises(_Halt):
        trainer.fit(on_step=stop_at(1))
    trainer.state = trainer.model.initial_state(5)  # (L, 5, H): not the 3 streams of the run
    with pytest.raises(
        ConfigError, match=r"batch size 3 needs \(1, 3, 4\).*keep the batch size fixed"
    ):
        trainer.fit()


def test_a_carried_state_that_still_holds_a_graph_is_refused():
    trainer = make_trainer("regular:5")
    with pytest.raises(_Halt):
        trainer.fit(on_step=stop_at(1))
    trainer.state = trainer.state * torch.ones(1, requires_grad=True)  # a graph behind it
    with pytest.raises(ConfigError, match="still holds an autograd graph.*detach"):
        trainer.fit()


class StatefulRNN(nn.Module):
    """A user module with the classic mistake: it keeps its last state, graph and all."""

    def __init__(self, vocab=7, hidden=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.cell = nn.RNNCell(hidden, hidden)
        self.head = nn.Linear(hidden, vocab)
        self.hidden = None

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, self.cell.hidden_size)

    def forward(self, inputs, state, gates=None):
        h = self.hidden if self.hidden is not None else state
        outputs = []
        for x in self.embed(inputs):  # (B, H) per step
            h = self.cell(x, h)
            outputs.append(h)
        self.hidden = h  # should be h.detach(), or not stored at all
        return self.head(torch.stack(outputs)), h  # (T, B, V)


def test_a_module_that_keeps_its_graph_between_windows_gets_a_clear_error():
    data = tokens()
    trainer = Trainer(
        StatefulRNN(), data[:220], data[220:], TrainConfig(strategy="regular:5", batch_size=3)
    )
    with pytest.raises(ConfigError) as e:
        trainer.fit()
    message = str(e.value)
    assert "hidden" in message and "detach" in message and "\n" not in message
    assert trainer.step == 1, "the first window trains; the second one trips"


# -- non-finite values -----------------------------------------------------------------


def exploding_trainer(nonfinite, tmp_path=None):
    """A linear RNN with W_hh = 3 I (spectral radius 3), no clipping: states grow as 3^t,
    and float32 overflows after about 80 steps, so long enough windows give inf/NaN."""
    model = tiny_model("linear", vocab=5, dropout=0.0)
    with torch.no_grad():
        model.recurrent.core.weight_hh_l0.copy_(3.0 * torch.eye(4))
    data = tokens(900, vocab=5)
    config = TrainConfig(
        strategy="regular:30",
        batch_size=2,
        epochs=1,
        clip=0.0,
        lr=1e-3,
        lr_schedule="constant",
        nonfinite=nonfinite,
        seed=0,
    )
    return Trainer(model, data[:800], data[800:], config, metrics=MetricsWriter(None))


def test_nonfinite_stop_names_step_window_and_norm():
    trainer = exploding_trainer("stop")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    snapshots = []
    with pytest.raises(NonFiniteError) as e:
        trainer.fit(
            on_step=lambda r: snapshots.append(
                {k: v.clone() for k, v in trainer.model.state_dict().items()}
            )
        )
    message = str(e.value)
    assert f"step {trainer.step + 1}" in message and "window at row" in message
    assert "gradient norm" in message and "nonfinite='skip'" in message and "\n" not in message
    assert "--" not in message  # the library names options; the command line adds its flags
    assert e.value.options == ("train.lr", "train.clip", "train.nonfinite")
    from tbptt.cli.common import flag_hint

    assert flag_hint(e.value.options) == " (flags: --lr, --clip, --nonfinite)"
    last_good = snapshots[-1] if snapshots else before
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, last_good[k]), f"{k} changed in the step that was refused"
        assert bool(torch.isfinite(v).all())


def test_nonfinite_skip_counts_and_no_checkpoint_holds_nonfinite_values(tmp_path):
    trainer = exploding_trainer("skip")
    saver = Checkpointer(tmp_path, keep=1000)
    trainer.fit(on_step=lambda r: saver.save({"trainer": trainer.state_dict()}, r["step"]))
    steps = [r for r in trainer.metrics.records if r["event"] == "step"]
    skipped = [r for r in steps if r["skipped"]]
    assert skipped and len(skipped) < len(steps), "some windows overflow, some train"
    assert trainer.skipped == len(skipped)
    epoch = [r for r in trainer.metrics.records if r["event"] == "epoch"][0]
    assert epoch["skipped_steps"] == len(skipped) and math.isfinite(epoch["train_loss"])
    files = sorted((tmp_path / KEPT_DIR).iterdir())
    assert len(files) == len(steps)
    for path in files:
        assert nonfinite_entries(load_checkpoint(path)) == [], path.name
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


def test_nonfinite_weights_are_never_written_and_skip_does_not_hide_them(tmp_path):
    trainer = exploding_trainer("skip")
    saver = Checkpointer(tmp_path)
    saver.save({"trainer": trainer.state_dict()}, 0)
    with torch.no_grad():
        trainer.model.head.weight[0, 0] = float("inf")  # as an overflowing step would leave it
    with pytest.raises(NonFiniteError, match=r"model\.head\.weight"):
        saver.save({"trainer": trainer.state_dict()}, 1)
    assert load_checkpoint(tmp_path)["trainer"]["step"] == 0
    with pytest.raises(NonFiniteError, match="parameter head.weight is non-finite.*cannot recover"):
        trainer.fit()


# -- tbptt train killed with SIGKILL, resumed with --resume ----------------------------

WORDS = "the time traveller held in his hand a glittering metallic framework".split()


@pytest.fixture
def text(tmp_path) -> Path:
    g = random.Random(3)
    path = tmp_path / "text.txt"
    path.write_text(" ".join(g.choice(WORDS) for _ in range(260)) + "\n")
    return path


def train_args(text, out, strategy):
    return [
        "train", "--data", str(text), "--out", str(out), "--strategy", strategy,
        "--model", "gru", "--hidden-size", "6", "--num-layers", "1", "--embedding-size", "4",
        "--dropout", "0.1", "--batch-size", "4", "--epochs", "2", "--checkpoint-every", "1",
        "--keep-checkpoints", "2", "--threads", "1", "--no-progress", "--sample-length", "8",
    ]  # fmt: skip


def run_in_process(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def outcome(out: Path):
    weights = load_checkpoint(out / LATEST)["trainer"]["model"]
    summary = json.loads((out / "summary.json").read_text())
    return weights, comparable(read_metrics(out / "metrics.jsonl")), summary["sample"]


# The child runs the real CLI; a small patch makes it SIGKILL itself at a chosen point.
CHILD = textwrap.dedent(
    """
    import io, os, signal, sys, torch
    from tbptt.cli import main
    from tbptt.train import checkpoint, metrics

    mode, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "after-metrics":      # the step's metrics line is written, its checkpoint not yet
        write = metrics.MetricsWriter.write
        def write_then_die(self, record):
            write(self, record)
            if record.get("event") == "step" and record["step"] == at:
                die()
        metrics.MetricsWriter.write = write_then_die
    elif mode == "mid-checkpoint":   # half of the step's checkpoint file is on disk
        save, calls = torch.save, [0]
        def half_then_die(obj, f, *a, **k):
            calls[0] += 1
            if calls[0] < at:
                return save(obj, f, *a, **k)
            buffer = io.BytesIO()
            save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        checkpoint.torch.save = half_then_die
    sys.exit(main(argv))
    """
)


def kill_child(mode, at, argv, out) -> subprocess.CompletedProcess | int:
    command = [sys.executable, "-c", CHILD, mode, str(at), *argv]
    if mode != "external":
        return subprocess.run(command, capture_output=True, text=True, timeout=300).returncode
    # From outside, at whatever moment the process has reached: poll the metrics file.
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_bytes().count(b"\n") >= at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy, mode",
    [
        ("regular:6", "after-metrics"),
        ("randomized:6", "mid-checkpoint"),
        ("full:10", "external"),
    ],
)
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(strategy, mode, text, tmp_path):
    code, err = run_in_process(train_args(text, tmp_path / "reference", strategy))
    assert code == 0, err
    reference = outcome(tmp_path / "reference")
    total = sum(1 for r in reference[1] if r["event"] == "step")
    # A step drawn from a seeded generator: the same on every run, another for another
    # TBPTT_TEST_SEED; every message below names both, so a failure can be replayed.
    seed = int(os.environ.get("TBPTT_TEST_SEED", "0"))
    at = random.Random(f"{seed} {strategy} {mode}").randrange(2, total - 3)
    where = f"{mode} at step {at}, TBPTT_TEST_SEED={seed}"

    out = tmp_path / "killed"
    argv = train_args(text, out, strategy)
    returncode = kill_child(mode, at, argv, out)
    assert returncode == -signal.SIGKILL, f"the child was not killed ({where})"
    written = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").stat().st_size else []
    assert len(written) < len(reference[1]), f"killed before the end ({where})"

    code, err = run_in_process(["train", "--resume", str(out)])
    assert code == 0, f"{err} ({where})"
    weights, lines, sample = outcome(out)
    assert weights.keys() == reference[0].keys()
    for k in weights:
        assert torch.equal(weights[k], reference[0][k]), f"{k} differs ({where})"
    assert lines == reference[1], f"metrics differ ({where})"
    assert sample == reference[2], where
    assert not list((out / KEPT_DIR).glob(".*.tmp")), (
        f"debris of the killed write is left ({where})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_a_window_boundary_with_a_checkpoint_and_resumes(
    signum, text, tmp_path, monkeypatch
):
    strategy = "randomized:6"
    code, err = run_in_process(train_args(text, tmp_path / "reference", strategy))
    assert code == 0, err
    reference = outcome(tmp_path / "reference")

    at = 9
    train_step = Trainer.train_step

    def signal_during_step(self, *args, **kwargs):
        if self.step + 1 == at:
            os.kill(os.getpid(), signum)  # arrives in the middle of a window
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", signal_during_step)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    out = tmp_path / "stopped"
    argv = train_args(text, out, strategy)
    argv[argv.index("--checkpoint-every") + 1] = "epoch"  # the stop itself must write one
    code, err = run_in_process(argv)
    assert code == 128 + signum
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    last = err.strip().splitlines()[-1]
    assert f"step {at}" in last and f"tbptt train --resume {out}" in last
    assert load_checkpoint(out)["trainer"]["step"] == at, "the window in flight was finished"
    monkeypatch.setattr(Trainer, "train_step", train_step)
    # The checkpoint holds the metrics file's length and digest, not its lines: a
    # damaged file is refused in one line, and the run resumes once it is put back.
    kept = (out / "metrics.jsonl").read_bytes()
    (out / "metrics.jsonl").write_text("damaged")
    code, err = run_in_process(["train", "--resume", str(out)])
    assert code == 2 and err.count("\n") == 1 and "metrics.jsonl" in err, err
    (out / "metrics.jsonl").write_bytes(kept)

    code, err = run_in_process(["train", "--resume", str(out)])
    assert code == 0, err
    weights, lines, sample = outcome(out)
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights)
    assert lines == reference[1] and sample == reference[2]


# -- the CLI refuses to continue a run with other settings ------------------------------


@pytest.mark.slow
def test_resume_refuses_other_runs_with_one_line(text, tmp_path):
    out = tmp_path / "run"
    argv = train_args(text, out, "regular:6")
    argv[argv.index("--epochs") + 1] = "1"
    assert run_in_process(argv)[0] == 0

    # --out of an existing run with other settings: refused, naming the difference
    other = argv + ["--lr", "0.01"]
    code, err = run_in_process(other)
    assert code == 2 and err.count("\n") == 1
    assert "train.lr is 0.005 there" in err and "0.01 here" in err

    code, err = run_in_process(["train", "--resume", str(out), "--hidden-size", "9"])
    assert code == 2 and "--hidden-size 9 differs from the run's 6" in err and err.count("\n") == 1

    other_text = tmp_path / "other.txt"
    other_text.write_text("zebra quartz " * 200)
    code, err = run_in_process(argv[:2] + [str(other_text)] + argv[3:])
    assert code == 2 and "another vocabulary" in err and err.count("\n") == 1

    code, err = run_in_process(["train", "--resume", str(tmp_path / "nowhere")])
    assert code == 2 and "no such run directory" in err and err.count("\n") == 1

    # the same run, asked for more epochs: continues from where it ended
    code, err = run_in_process(["train", "--resume", str(out), "--epochs", "2"])
    assert code == 0, err
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1))
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2


# -- CUDA (marked gpu: skipped and listed without one) -----------------------------------


@pytest.mark.gpu
def test_cuda_generators_are_saved_and_restored(tmp_path):
    from tbptt.train.checkpoint import capture_rng, restore_rng

    torch.cuda.manual_seed_all(5)
    state = load_checkpoint(save_checkpoint({"rng": capture_rng()}, tmp_path / "r.pt"))["rng"]
    assert len(state["cuda"]) == torch.cuda.device_count()
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(6)
    restore_rng(state)
    assert torch.equal(torch.rand(4, device="cuda"), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["regular:5", "randomized:5", "k1k2:3,7"])
def test_trainer_resumes_bitwise_on_cuda(strategy, tmp_path):
    """Dropout draws from the CUDA generator; kernels are deterministic when asked to be
    (run with CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment)."""
    torch.use_deterministic_algorithms(True)
    try:
        reference = make_trainer(strategy, device="cuda")
        reference.fit()
        stop = random.Random(strategy).randrange(1, reference.step)
        first = make_trainer(strategy, device="cuda")
        with pytest.raises(_Halt):
            first.fit(on_step=stop_at(stop))
        state = through_a_file(first.state_dict(), tmp_path)
        torch.cuda.manual_seed_all(999)
        second = make_trainer(strategy, device="cuda")
        second.load_state_dict(state)
        second.fit()
    finally:
        torch.use_deterministic_algorithms(False)
    for (name, p), q in zip(reference.model.named_parameters(), second.model.parameters()):
        assert p.is_cuda and torch.equal(p, q), f"{name} differs after resuming at step {stop}"
    lines = comparable(first.metrics.records) + comparable(second.metrics.records)
    assert lines == comparable(reference.metrics.records)


@pytest.mark.slow
def test_resume_honours_an_explicit_flag_even_at_its_default_value(text, tmp_path):
    # The run is saved with --epochs 2 and --lr 0.01; the flags given on resume carry the
    # parser's default values (10 epochs, lr 0.005), which must still count as given.
    out = tmp_path / "run"
    argv = train_args(text, out, "regular:6") + ["--lr", "0.01"]
    assert run_in_process(argv)[0] == 0

    code, err = run_in_process(["train", "--resume", str(out), "--lr", "0.005"])
    assert code == 2 and "--lr 0.005 differs from the run's 0.01" in err and err.count("\n") == 1

    code, err = run_in_process(["train", "--resume", str(out), "--epochs", "10"])
    assert code == 0, err
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "epoch"]
    assert epochs == list(range(1, 11))
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 10
