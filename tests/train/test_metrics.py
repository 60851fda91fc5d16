"""The metrics writer: bounded memory, whole lines on a full disk, the position a checkpoint
stores; reading a long file back in bounded memory."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest

from tbptt.errors import CheckpointError
from tbptt.train.metrics import MetricsWriter, read_metrics


def step(i: int) -> dict:
    return {"event": "step", "step": i, "loss": 1.0 / i}


def test_the_records_in_memory_are_bounded_and_the_file_has_them_all(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, tail=10)
    for i in range(1, 1001):
        writer.write(step(i))
        if i % 100 == 0:
            writer.write({"event": "epoch", "epoch": i // 100})
    writer.close()
    steps = [r["step"] for r in writer.records if r["event"] == "step"]
    assert 10 <= len(steps) <= 20 and steps == list(range(1001 - len(steps), 1001))
    assert [r["epoch"] for r in writer.records if r["event"] == "epoch"] == list(range(1, 11))
    assert len(read_metrics(path)) == 1010
    assert len(MetricsWriter(None).records) == 0  # without tail every record is kept:
    memory = MetricsWriter(None)
    for i in range(1, 101):
        memory.write(step(i))
    assert len(memory.records) == 100


def test_position_is_the_length_and_digest_of_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for i in range(1, 6):
        writer.write(step(i))
    data = path.read_bytes()
    assert writer.position() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    writer.close()
    again = MetricsWriter(path, append=True)  # a resumed run continues the digest
    again.write(step(6))
    data = path.read_bytes()
    assert again.position() == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]


def test_a_line_the_disk_refuses_is_cut_off_and_named(tmp_path, monkeypatch):
    import tbptt.train.metrics as metrics

    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write(step(1))

    def half_then_full(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics, "write_all", half_then_full)
    with pytest.raises(CheckpointError) as e:
        writer.write(step(2))
    assert str(e.value) == f"cannot write {path}: No space left on device"
    assert path.read_text() == json.dumps(step(1)) + "\n", "no half line is left"


def test_reading_back_thins_the_steps_evenly_in_bounded_memory(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for i in range(1, 10_001):
        writer.write(step(i))
        if i % 2500 == 0:
            writer.write({"event": "epoch", "epoch": i // 2500})
    writer.close()
    records = read_metrics(path, max_steps=300)
    steps = [r["step"] for r in records if r["event"] == "step"]
    assert 150 <= len(steps) <= 300
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert len(gaps) == 1 and steps[0] == 1  # evenly spaced, from the first step
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2, 3, 4]
