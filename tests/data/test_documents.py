"""Document corpora: reading, the <doc> boundary token, and (T, B) reset masks laid out like the tokens."""

import pytest
import torch

from tbptt.data.documents import (
    DOC,
    prepare_documents,
    read_documents,
)
from tbptt.data.streams import RandomStream, SequentialStream, StreamData
from tbptt.errors import DataError


def test_read_a_directory_in_path_order_skipping_hidden_and_empty_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / ".hidden").write_text("never")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    assert read_documents(tmp_path) == ["first", "second", "third"]


def test_read_a_file_cut_at_a_separator(tmp_path):
    f = tmp_path / "all.txt"
    f.write_text("one\n\n\ntwo\n\n\n\n\n\nthree")
    assert [d.strip() for d in read_documents(f, separator="\n\n\n")] == ["one", "two", "three"]


@pytest.mark.parametrize("what, match", [("missing", "does not exist"), ("file", "separator"), ("emptydir", "no non-empty")])  # fmt: skip
def test_bad_document_sources_are_refused(what, match, tmp_path):
    path = {"missing": tmp_path / "nope", "file": tmp_path / "f.txt", "emptydir": tmp_path / "d"}[
        what
    ]
    if what == "file":
        path.write_text("text")
    if what == "emptydir":
        path.mkdir()
    with pytest.raises(DataError, match=match):
        read_documents(path)


def test_each_document_starts_with_the_boundary_token():
    data = prepare_documents(["ab", "cde", "f"], valid_fraction=0.0)
    doc = data.vocab.stoi[DOC]
    assert data.decode(data.train.tolist()) == "<doc>ab<doc>cde<doc>f"
    assert data.train_starts.tolist() == [
        True,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        False,
    ]
    assert torch.equal(data.train_starts, data.train == doc)
    assert data.documents == 3


def test_the_split_keeps_the_masks_aligned():
    data = prepare_documents(["abc"] * 10, valid_fraction=0.2)
    doc = data.vocab.stoi[DOC]
    assert len(data.valid) == 8 and len(data.valid_starts) == 8
    assert torch.equal(data.valid_starts, data.valid == doc)


def _data():
    docs = ["the time", "traveller", "for so", "it will be convenient", "to speak of him"]
    return prepare_documents(docs, valid_fraction=0.0)


def test_sequential_windows_carry_their_own_reset_masks():
    data = _data()
    doc = data.vocab.stoi[DOC]
    stream = SequentialStream(data.train_split(), 3)
    seen = 0
    while (batch := stream.next(4)) is not None:
        assert batch.resets.shape == batch.inputs.shape
        assert torch.equal(batch.resets, batch.inputs == doc)  # stream b resets at its own <doc>
        seen += int(batch.resets.sum())
    assert seen == int((stream.data[:-1] == doc).sum()) >= 2


def test_random_windows_carry_their_own_reset_masks():
    data = _data()
    doc = data.vocab.stoi[DOC]
    stream = RandomStream(data.train_split(), 4, torch.Generator().manual_seed(0))
    batch = stream.next(9)
    assert batch.reset and torch.equal(batch.resets, batch.inputs == doc)


def test_starts_must_match_the_tokens():
    with pytest.raises(DataError, match=r"starts to be a bool tensor of shape \(20,\)"):
        StreamData(torch.zeros(20, dtype=torch.long), starts=torch.zeros(19, dtype=torch.bool))
