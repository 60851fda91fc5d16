"""Prepared corpora: streaming preparation equals in-memory tokenization, the splits are views
of the memory map, and every damaged or foreign preparation is refused in one line."""

import errno
import json
import tracemalloc

import numpy as np
import pytest
import torch

from tbptt.data import RandomStream, SequentialStream, prepare_text, read_text
from tbptt.data.config import DataConfig, data_digest, load_dataset
from tbptt.data.documents import prepare_documents, read_documents
from tbptt.data.prepared import load_prepared, prepare, prepare_series_file, read_meta
from tbptt.data.prepared import write as prepared_write
from tbptt.data.series import prepare_series
from tbptt.errors import TbpttError

# Runs of spaces and punctuation, capitals, CRLF, tabs, non-ASCII letters (2- and 4-byte
# UTF-8, cut by small blocks), blank lines, and no line end at the very end.
TRICKY = (
    "  The Time  Traveller (for so it will be convenient to speak of him)\r\n"
    "was expounding a recondite matter to us.\tHis grey eyes shone — and twinkled,\n\n"
    "  Übermensch café naïve 😀 emoji   end.  \n"
    "   \n"
    "one two  three, four. Five six seven eight nine ten eleven twelve thirteen"
)


def _same(prepared, reference, starts=False):
    assert prepared.vocab.itos == reference.vocab.itos
    assert torch.equal(prepared.train.long(), reference.train.long())
    assert torch.equal(prepared.valid.long(), reference.valid.long())
    if starts:
        assert torch.equal(prepared.train_starts, reference.train_starts)
        assert torch.equal(prepared.valid_starts, reference.valid_starts)
    ours, theirs = prepared.baselines(), reference.baselines()
    assert ours.keys() == theirs.keys()
    if theirs:
        assert ours["unigram"]["ppl"] == pytest.approx(theirs["unigram"]["ppl"], rel=1e-12)


@pytest.mark.parametrize(
    "level,normalization,eos",
    [
        ("char", "letters", False),
        ("char", "none", False),
        ("word", "letters", True),
        ("word", "none", True),
        ("word", "none", False),
    ],
)
@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_streaming_preparation_equals_the_in_memory_one(tmp_path, level, normalization, eos, block):
    path = tmp_path / "text.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (TRICKY * 3).encode())  # with a byte-order mark
    out = tmp_path / "prepared"
    options = dict(level=level, normalization=normalization, eos=eos, valid_fraction=0.2)
    prepare(path, out, block=block, **options)
    _same(load_prepared(out), prepare_text(read_text(path), **options))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_text_with_a_byte_order_mark_is_decoded_as_read_text_does(tmp_path, encoding):
    path = tmp_path / "text.txt"
    path.write_bytes(TRICKY.encode(encoding))  # with its byte-order mark
    prepare(path, tmp_path / "p", level="char", normalization="none", block=10)
    _same(load_prepared(tmp_path / "p"), prepare_text(read_text(path), normalization="none"))


@pytest.mark.parametrize(
    "min_freq,max_vocab,valid_fraction", [(2, 0, 0.1), (1, 9, 0.3), (1, 0, 0.0)]
)
def test_vocabulary_options_and_split_match(
    tmp_path, small_text, min_freq, max_vocab, valid_fraction
):
    options = dict(level="word", normalization="none", min_freq=min_freq, max_vocab=max_vocab)
    prepare(small_text, tmp_path / "p", block=100, valid_fraction=valid_fraction, **options)
    reference = prepare_text(read_text(small_text), valid_fraction=valid_fraction, **options)
    _same(load_prepared(tmp_path / "p"), reference)


@pytest.mark.parametrize(
    "level,normalization,eos", [("char", "letters", False), ("word", "none", True)]
)
def test_documents_equal_the_in_memory_documents(tmp_path, level, normalization, eos):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    pieces = TRICKY.split("\n")
    for i, piece in enumerate(pieces):
        (docs / ("sub" if i % 2 else "") / f"{i:02d}.txt").write_text(piece * 2)
    (docs / ".hidden.txt").write_text("never read")
    (docs / "zz-blank.txt").write_text(" \n\t ")  # no document
    options = dict(level=level, normalization=normalization, eos=eos, valid_fraction=0.25)
    prepare(docs, tmp_path / "p", documents=True, block=11, **options)
    prepared = load_prepared(tmp_path / "p")
    reference = prepare_documents(read_documents(docs), **options)
    _same(prepared, reference, starts=True)
    assert prepared.documents == reference.documents
    # the state resets where documents start, in training windows as in memory
    a = SequentialStream(prepared.train_split(), 2).next(9)
    b = SequentialStream(reference.train_split(), 2).next(9)
    assert torch.equal(a.resets, b.resets) and torch.equal(a.inputs, b.inputs)


def test_splits_are_views_of_the_map_and_windows_are_the_same(tmp_path, small_text):
    prepare(small_text, tmp_path / "p", level="char", normalization="none")
    prepared = load_prepared(tmp_path / "p")
    reference = prepare_text(read_text(small_text), level="char", normalization="none")
    # one storage, the file's size: nothing copied, the map is the storage
    storage = prepared.train.untyped_storage()
    assert storage.data_ptr() == prepared.valid.untyped_storage().data_ptr()
    assert storage.nbytes() == (tmp_path / "p" / "tokens.bin").stat().st_size
    stream = SequentialStream(prepared.train_split(), 3)
    assert stream.data.untyped_storage().data_ptr() == storage.data_ptr()  # laid without a copy
    expected = SequentialStream(reference.train_split(), 3)
    for length in (5, 1, 35, 8):
        a, b = stream.next(length), expected.next(length)
        assert a.inputs.dtype == torch.int64 and a.inputs.is_contiguous()
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = RandomStream(prepared.train_split(), 4, g1).next(6)
    b = RandomStream(reference.train_split(), 4, g2).next(6)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_preparing_streams_the_input(tmp_path):
    # 64 KB blocks: the Python and NumPy memory of preparing 1 MB and 4 MB is the same (a few
    # blocks), not a multiple of the input as holding its text or ids would be
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    rng = np.random.default_rng(0)
    peaks = []
    for megabytes in (1, 4):
        text = " ".join(words[i] for i in rng.integers(0, len(words), 170_000 * megabytes))
        path = tmp_path / f"{megabytes}.txt"
        path.write_text(text + "\n")
        del text
        tracemalloc.start()
        try:
            prepare(path, tmp_path / f"p{megabytes}", level="char", block=1 << 16)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    size = path.stat().st_size
    assert size > 3_500_000
    assert peaks[1] < 1.3 * peaks[0], f"{peaks[0] / 1e6:.2f} MB, then {peaks[1] / 1e6:.2f} MB"
    assert peaks[1] < size / 4, f"{peaks[1] / 1e6:.1f} MB allocated for {size / 1e6:.1f} MB"


def test_config_finds_a_prepared_directory(tmp_path, small_text):
    prepare(small_text, tmp_path / "p", level="word", normalization="none")
    data = load_dataset(DataConfig(path=str(tmp_path / "p")))
    assert data.level == "word" and data.describe()["prepared"] == str(tmp_path / "p")
    assert DataConfig(path=str(tmp_path / "p")).resolved_kind() == "prepared"
    # the digest comes from meta.json (no pass over the tokens) and follows the file
    first = data_digest(data)
    prepare(small_text, tmp_path / "q", level="word", normalization="none", valid_fraction=0.2)
    assert data_digest(load_prepared(tmp_path / "q")) != first
    assert data_digest(load_prepared(tmp_path / "p")) == first


# -- bad input -------------------------------------------------------------------------


@pytest.fixture
def prepared(tmp_path, small_text):
    prepare(small_text, tmp_path / "p", level="char", normalization="letters")
    return tmp_path / "p"


def _refused(path, *words):
    with pytest.raises(TbpttError) as e:
        load_prepared(path)
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_a_changed_byte_fails_the_checksum(prepared):
    bin_ = prepared / "tokens.bin"
    raw = bytearray(bin_.read_bytes())
    raw[len(raw) // 2] ^= 1
    bin_.write_bytes(bytes(raw))
    _refused(prepared, "SHA-256", "tokens.bin", "tbptt prepare")
    load_prepared(prepared, verify_checksum=False)  # asked not to check: read as it is


def test_a_truncated_file_is_refused(prepared):
    bin_ = prepared / "tokens.bin"
    bin_.write_bytes(bin_.read_bytes()[:-10])
    _refused(prepared, "truncated", "tokens.bin")


def test_missing_or_damaged_meta_is_refused(prepared, tmp_path):
    meta = json.loads((prepared / "meta.json").read_text())
    (prepared / "meta.json").write_text("{not json")
    _refused(prepared, "meta.json", "cannot be read")
    (prepared / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    _refused(prepared, "version 99")
    (prepared / "meta.json").write_text(json.dumps({**meta, "train_tokens": "many"}))
    _refused(prepared, "train_tokens")
    (prepared / "meta.json").unlink()
    _refused(prepared, "no meta.json")
    _refused(tmp_path / "nowhere", "does not exist")
    (prepared / "meta.json").write_text(json.dumps(meta))
    (prepared / "tokens.bin").unlink()
    _refused(prepared, "tokens.bin is missing")


def test_an_existing_output_is_kept_unless_replacing_a_preparation(tmp_path, small_text, prepared):
    before = read_meta(prepared)
    with pytest.raises(TbpttError, match="already holds a prepared corpus"):
        prepare(small_text, prepared, level="word", normalization="none")
    assert read_meta(prepared) == before
    prepare(small_text, prepared, level="word", normalization="none", overwrite=True)
    assert read_meta(prepared)["level"] == "word"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("mine")
    with pytest.raises(TbpttError, match="not an empty directory"):
        prepare(small_text, tmp_path / "other", overwrite=True)


def test_a_failed_write_leaves_nothing_behind(tmp_path, small_text, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepared_write, "_write_ids", full)
    with pytest.raises(TbpttError, match="cannot write .*: No space left on device"):
        prepare(small_text, tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]


@pytest.mark.parametrize(
    "content,words",
    [
        (b"a\x00b", "NUL"),
        (b"caf\xe9 au lait", "not UTF-8"),
        (b" \n ", "is empty"),
        (b"!", "has 1 char token"),
    ],
)
def test_unreadable_input_is_refused(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(TbpttError, match=words):
        prepare(path, tmp_path / "p", normalization="none")
    assert not (tmp_path / "p").exists()


# -- time series -----------------------------------------------------------------------


@pytest.fixture
def series_csv(tmp_path):
    rng = np.random.default_rng(5)
    lines = ["day,site,temp,wind"]
    for site in ("a", "b"):
        for day in range(40):
            lines.append(f"{day},{site},{rng.normal(10, 3):.3f},{rng.uniform(0, 9):.2f}")
    path = tmp_path / "weather.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_series_preparation_equals_the_in_memory_series(tmp_path, series_csv):
    options = dict(target=["temp"], inputs=["temp", "wind"], horizon=2, series_id="site")
    prepare_series_file(series_csv, tmp_path / "p", **options)
    prepared = load_prepared(tmp_path / "p")
    reference = prepare_series(series_csv, **options)
    for a, b in ((prepared.train, reference.train), (prepared.valid, reference.valid)):
        assert a.inputs.dtype == torch.float32 and torch.equal(a.inputs, b.inputs)
        assert torch.equal(a.targets, b.targets) and torch.equal(a.starts, b.starts)
    assert prepared.baselines() == reference.baselines()
    assert prepared.valid_index == reference.valid_index
    assert prepared.targets_scaler == reference.targets_scaler
    assert data_digest(prepared) == data_digest(reference)  # a CSV run resumes from it
    raw = bytearray((tmp_path / "p" / "targets.bin").read_bytes())
    raw[5] ^= 1
    (tmp_path / "p" / "targets.bin").write_bytes(bytes(raw))
    _refused(tmp_path / "p", "SHA-256", "targets.bin")
    (tmp_path / "p" / "inputs.bin").write_bytes(b"\0" * 8)
    _refused(tmp_path / "p", "inputs.bin has 8 bytes", "truncated")
