"""Checkpoint files: atomic writes (also when killed half-way), rotation, safe loading,
refusal of non-finite payloads and of other runs' checkpoints, random generator state."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tbptt.errors import CheckpointError, ConfigError, NonFiniteError
from tbptt.train.checkpoint import (
    FORMAT,
    KEPT_DIR,
    LATEST,
    Checkpointer,
    capture_rng,
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    nonfinite_entries,
    parse_interval,
    restore_rng,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def payload(value: float) -> dict:
    return {
        "weights": torch.full((3, 2), value),
        "step": int(value),
        "nested": [{"h": (torch.zeros(2),)}],
    }


def test_round_trip_and_format(tmp_path):
    path = save_checkpoint(payload(1.0), tmp_path / "a.pt")
    got = load_checkpoint(path)
    assert got["format"] == FORMAT and got["step"] == 1
    assert torch.equal(got["weights"], torch.ones(3, 2))
    assert not list(tmp_path.glob(".*.tmp"))


class _Trap:
    """Unpickling this would create a marker file: proof that loading ran code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": _Trap(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize(
    "content, what",
    [(b"", "cannot read"), (b"not a zip file at all", "cannot read"), (None, "not a tbptt")],
)
def test_bad_files_give_one_line(tmp_path, content, what):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"something": 1}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert what in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_an_exception_half_way_through_a_write_keeps_the_previous_file(tmp_path):
    path = save_checkpoint(payload(1.0), tmp_path / "c.pt")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        # big tensor first, so part of the new file is on disk when pickling fails
        save_checkpoint({"big": torch.zeros(100_000), "boom": Boom()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is removed"


KILL_HALF_WAY = textwrap.dedent(
    """
    import os, signal, sys, torch
    from tbptt.train import checkpoint as ck

    directory = sys.argv[1]
    saver = ck.Checkpointer(directory, keep=2)
    saver.save({"weights": torch.full((4,), 1.0)}, step=1)   # the good, previous checkpoint

    from tbptt.train.checkpoint import files
    def write_half_then_die(fd, data):
        os.write(fd, data[: len(data) // 2])                 # half the new file on disk ...
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)                  # ... and the process dies
    files.write_all = write_half_then_die
    saver.save({"weights": torch.full((4,), 2.0), "big": torch.zeros(200_000)}, step=2)
    """
)


def test_a_process_killed_half_way_through_a_write_leaves_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_HALF_WAY, str(run)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = list((run / KEPT_DIR).glob(".step-*.tmp"))
    assert leftovers and leftovers[0].stat().st_size > 0, "the write really was cut half-way"
    # The interrupted write left no file under a checkpoint's name: the previous one loads.
    path, got = latest_checkpoint(run)
    assert torch.equal(got["weights"], torch.full((4,), 1.0))
    assert torch.equal(load_checkpoint(run)["weights"], torch.full((4,), 1.0))
    assert torch.equal(load_checkpoint(run / LATEST)["weights"], torch.full((4,), 1.0))
    # The next save cleans the debris of the interrupted one.
    Checkpointer(run, keep=2).save({"weights": torch.full((4,), 3.0)}, step=3)
    assert not list((run / KEPT_DIR).glob(".*.tmp"))


def test_rotation_keeps_the_last_n_and_latest_points_at_the_newest(tmp_path):
    saver = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3, 4, 5):
        saver.save(payload(float(step)), step)
    kept = sorted(p.name for p in (tmp_path / KEPT_DIR).iterdir())
    assert kept == ["step-000000004.pt", "step-000000005.pt"]
    assert load_checkpoint(tmp_path / LATEST)["step"] == 5
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000005.pt",
        "step-000000004.pt",
        LATEST,
    ]
    with pytest.raises(ConfigError):
        Checkpointer(tmp_path, keep=0)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    saver = Checkpointer(tmp_path, keep=3)
    saver.save(payload(1.0), 1)
    saver.save(payload(2.0), 2)
    newest = tmp_path / KEPT_DIR / "step-000000002.pt"
    data = newest.read_bytes()
    (tmp_path / LATEST).unlink()
    newest.write_bytes(data[: len(data) // 2])  # e.g. a copy that was cut off
    path, got = latest_checkpoint(tmp_path)
    assert got["step"] == 1 and path.name == "step-000000001.pt"
    for p in list_checkpoints(tmp_path):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint in .* loads"):
        latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_non_finite_payloads_are_refused_and_the_previous_file_kept(tmp_path):
    path = save_checkpoint(payload(1.0), tmp_path / "c.pt")
    bad = payload(1.0)
    bad["nested"][0]["h"] = (torch.tensor([0.0, float("nan")]),)
    bad["opt"] = {"exp_avg": torch.tensor([float("inf")])}
    assert nonfinite_entries(bad) == ["nested[0].h[0]", "opt.exp_avg"]
    with pytest.raises(NonFiniteError, match=r"nested\[0\]\.h\[0\], opt\.exp_avg"):
        save_checkpoint(bad, path)
    assert load_checkpoint(path)["step"] == 1
    # integers and plain numbers are not tensors of weights: an infinite limit is fine
    assert nonfinite_entries({"limit": float("inf"), "n": torch.arange(3)}) == []


def test_check_compatible_names_every_difference_in_one_line():
    saved = {"model": {"hidden_size": 8, "kind": "gru"}, "train": {"lr": 0.1, "epochs": 3}}
    check_compatible(
        saved,
        {"model": {"hidden_size": 8, "kind": "gru"}, "train": {"lr": 0.1, "epochs": 9}},
        ignore=("train.epochs",),
    )
    with pytest.raises(CheckpointError) as e:
        check_compatible(
            saved,
            {"model": {"hidden_size": 16, "kind": "lstm"}, "train": {"lr": 0.1}},
            ignore=("train.",),
        )
    msg = str(e.value)
    assert "model.hidden_size is 8 there but 16 here" in msg
    assert "model.kind is 'gru'" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("200", (200, 0.0)),
        ("5steps", (5, 0.0)),
        ("30s", (0, 30.0)),
        ("10m", (0, 600.0)),
        ("1.5h", (0, 5400.0)),
        ("epoch", (0, 0.0)),
        ("off", (0, 0.0)),
        ("0", (0, 0.0)),
    ],
)
def test_parse_interval(text, expected):
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["soon", "-3", "1.5", "10d", "s"])
def test_parse_interval_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="interval"):
        parse_interval(text)


def test_interval_by_steps_and_by_clock(tmp_path):
    now = [0.0]
    by_steps = Checkpointer(tmp_path, every_steps=3, clock=lambda: now[0])
    assert [by_steps.due(s) for s in (1, 2, 3)] == [False, False, True]
    by_steps.mark(3)
    assert not by_steps.due(5) and by_steps.due(6)
    by_time = Checkpointer(tmp_path, every_seconds=10.0, clock=lambda: now[0])
    assert not by_time.due(100)
    now[0] = 10.0
    assert by_time.due(100)
    assert not Checkpointer(tmp_path).due(10**6)


def test_random_generators_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng()
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpoint_files_are_readable_outputs(tmp_path):
    path = save_checkpoint(payload(1.0), tmp_path / "c.pt")
    assert os.stat(path).st_mode & 0o644 == 0o644


# -- a full disk, bit rot ----------------------------------------------------------------


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EIO, errno.EACCES])
def test_a_write_the_disk_refuses_is_one_line_and_keeps_the_previous_file(
    tmp_path, monkeypatch, errno_
):
    from tbptt.train.checkpoint import files

    path = save_checkpoint(payload(1.0), tmp_path / "c.pt")

    def refused(fd, data):
        os.write(fd, data[: len(data) // 3])  # part of the file reached the disk
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(files, "write_all", refused)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(payload(2.0), path)
    assert str(e.value) == f"cannot write {path}: {os.strerror(errno_)}"
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], "no temporary file is left"


def test_torchs_runtime_error_around_a_full_disk_is_one_line(tmp_path, monkeypatch):
    path = save_checkpoint(payload(1.0), tmp_path / "c.pt")

    def full(obj, f, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from e

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=r"c\.pt: No space left on device$"):
        save_checkpoint(payload(2.0), path)
    assert load_checkpoint(path)["step"] == 1 and len(list(tmp_path.iterdir())) == 1


def _flip_a_bit_of(path: Path, value: float) -> None:
    """Flip one bit inside the stored bytes of the tensor full of ``value``, in place (the
    same inode: ``checkpoint.pt``, a hard link to it, rots with it)."""
    data = path.read_bytes()
    at = data.index(torch.full((6,), value).numpy().tobytes()) + 9
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([data[at] ^ 0x10]))


def test_a_flipped_bit_in_the_tensor_data_is_detected(tmp_path):
    path = save_checkpoint(payload(1.25), tmp_path / "c.pt")
    assert torch.load(path, weights_only=True)["step"] == 1  # the file is torch's, readable
    _flip_a_bit_of(path, 1.25)
    got = torch.load(path, weights_only=True)  # torch itself does not notice ...
    assert not torch.equal(got["weights"], torch.full((3, 2), 1.25))
    with pytest.raises(CheckpointError, match="is damaged: its SHA-256 digest does not match"):
        load_checkpoint(path)  # ... the digest does


def test_bit_rot_in_the_newest_checkpoint_falls_back_with_one_line(tmp_path, caplog):
    saver = Checkpointer(tmp_path, keep=3)
    saver.save(payload(1.25), 1)
    saver.save(payload(2.25), 2)
    _flip_a_bit_of(tmp_path / KEPT_DIR / "step-000000002.pt", 2.25)  # and checkpoint.pt
    with caplog.at_level("WARNING", logger="tbptt.train.checkpoint"):
        path, got = latest_checkpoint(tmp_path)
    assert path.name == "step-000000001.pt" and got["step"] == 1
    skipped = [r.getMessage() for r in caplog.records if "skipping damaged" in r.getMessage()]
    assert len(skipped) == 1, skipped  # the step file and its link are one file: one line
    assert "step-000000002.pt is damaged" in skipped[0]


def test_a_file_without_a_digest_still_loads(tmp_path):
    # Checkpoints written before digests existed: torch's archive alone.
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, **payload(1.0)}, path)
    assert load_checkpoint(path)["step"] == 1


def test_a_damaged_checkpoint_and_its_link_are_reported_once(tmp_path, caplog):
    saver = Checkpointer(tmp_path, keep=1)
    saver.save(payload(1.0), 1)
    with open(tmp_path / KEPT_DIR / "step-000000001.pt", "r+b") as f:
        f.truncate(200)  # in place: checkpoint.pt, a hard link to it, is cut too
    with caplog.at_level("WARNING", logger="tbptt.train.checkpoint"):
        with pytest.raises(CheckpointError, match="no checkpoint in .* loads"):
            latest_checkpoint(tmp_path)
    skipped = [r for r in caplog.records if "skipping damaged" in r.getMessage()]
    assert len(skipped) == 1


@pytest.mark.parametrize(
    "content",
    [
        bytes(random.Random(0).getrandbits(8) for _ in range(512)),
        __import__("pickle").dumps({"format": "something else", "weights": [1, 2, 3]}, protocol=2),
    ],
    ids=["random-bytes", "pickle"],
)
def test_a_foreign_file_is_refused_without_torchs_weights_only_advice(tmp_path, content):
    path = tmp_path / "foreign.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert len(message.splitlines()) == 1, message
    assert "not a readable tbptt checkpoint" in message
    assert "weights_only" not in message and "weights-only" not in message.lower()
