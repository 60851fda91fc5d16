"""Word-level corpora: train/valid/test files, <eos>, <unk>, min-freq / max-vocab, text
defaults, Project Gutenberg files, byte-order marks, directories that are corpora."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from tbptt.data.config import DataConfig, load_dataset
from tbptt.data.corpus import read_text, strip_gutenberg
from tbptt.data.dataset import prepare_corpus
from tbptt.data.documents import DocumentData
from tbptt.errors import DataError

TRAIN = "the cat sat <unk> the mat\nthe dog sat\n\nA cat, the end.\n"
VALID = "the bird sat\nthe cat\n"
TEST = "a <unk> dog sat"  # no final line end: the last line still ends with <eos>


def classic(texts: list[str], min_freq: int = 1, max_vocab: int = 0):
    """An independent reference, as the classic word-level examples read a corpus: every
    line's words plus <eos>; the vocabulary from the first (training) text, <unk> first,
    then by falling count (ties by the word); other words are <unk>."""
    streams = []
    for text in texts:
        words = []
        for line in text.split("\n")[: -1 if text.endswith("\n") else None]:
            words += line.split() + ["<eos>"]
        streams.append(words)
    counts = Counter(streams[0])
    kept = sorted((w for w, c in counts.items() if c >= min_freq and w != "<unk>"),
                  key=lambda w: (-counts[w], w))  # fmt: skip
    itos = ["<unk>", *kept][: max_vocab or None]
    stoi = {w: i for i, w in enumerate(itos)}
    return itos, [[stoi.get(w, 0) for w in s] for s in streams]


@pytest.mark.parametrize("min_freq, max_vocab", [(1, 0), (2, 0), (1, 4)])
def test_train_valid_test_files_match_the_classic_reading(min_freq, max_vocab):
    data = prepare_corpus(TRAIN, VALID, TEST, min_freq=min_freq, max_vocab=max_vocab)
    itos, (train, valid, test) = classic([TRAIN, VALID, TEST], min_freq, max_vocab)
    assert data.vocab.itos == itos
    assert data.train.tolist() == train and data.valid.tolist() == valid
    assert data.test.tolist() == test
    # the corpus's own <unk> is the vocabulary's unknown (one token, index 0) ...
    assert data.vocab.itos.count("<unk>") == 1 and data.train[3] == 0
    # ... and the vocabulary comes from the training text only: "bird" is unknown
    assert "bird" not in data.vocab and data.valid[1] == 0
    assert data.describe()["test_tokens"] == len(test) and data.eos


def test_a_corpus_directory_is_read_as_its_three_files(tmp_path):
    for name, text in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (tmp_path / f"{name}.txt").write_text(text)
    data = load_dataset(DataConfig(path=str(tmp_path), tokens="word"))
    itos, (train, valid, test) = classic([TRAIN, VALID, TEST])
    assert data.vocab.itos == itos and data.test.tolist() == test
    # separate flags give the same corpus
    files = DataConfig(
        train_file=str(tmp_path / "train.txt"),
        valid_file=str(tmp_path / "valid.txt"),
        test_file=str(tmp_path / "test.txt"),
        tokens="word",
    )
    same = load_dataset(files)
    assert same.vocab.itos == itos and torch.equal(same.valid, data.valid)
    (tmp_path / "valid.txt").unlink()
    with pytest.raises(DataError, match="no valid.txt"):
        load_dataset(DataConfig(path=str(tmp_path), tokens="word"))


def test_the_defaults_read_a_users_file_as_it_is(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Hello, World! It's 1895.\nThe End.\n" * 20)
    config = DataConfig(path=str(path), tokens="word").resolved()
    assert config.normalize == "none" and config.eos is True
    data = load_dataset(DataConfig(path=str(path), tokens="word"))
    for token in ("Hello,", "World!", "It's", "1895.", "<eos>"):
        assert token in data.vocab
    chars = load_dataset(DataConfig(path=str(path)))
    assert {"H", ",", "!", "'", "1", "\n"} <= set(chars.vocab.itos)
    assert DataConfig(path=str(path)).resolved().eos is False  # char level: "\n" is a token


def test_the_time_machine_keeps_the_lectures_normalization(time_machine):
    assert DataConfig(path=str(time_machine)).resolved().normalize == "letters"
    assert DataConfig().resolved().normalize == "letters"  # the download
    data = load_dataset(DataConfig(path=str(time_machine)))
    # the lecture's preprocessing, written out independently
    lecture = re.sub("[^A-Za-z]+", " ", time_machine.read_text()).lower().strip()
    assert data.vocab.itos[1:] == sorted(set(lecture), key=lambda c: (-lecture.count(c), c))
    assert len(data.train) + len(data.valid) == len(lecture)


CLEAN = "Chapter 1\n\nIt was a dark night.\nThe end, of course.\n"
HEADER = (
    "The Project Gutenberg eBook of Something\n\nThis eBook is for the use of anyone.\n\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n\n\n"
)
FOOTER = (
    "\n\n*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n\n"
    "Updated editions will replace the previous one.\nSection 1. General Terms of Use\n" * 3
)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("tokens", ["word", "char"])
def test_a_gutenberg_file_with_a_bom_gives_the_clean_texts_tokens(encoding, tokens, tmp_path):
    clean, book = tmp_path / "clean.txt", tmp_path / "book.txt"
    clean.write_text(CLEAN)
    raw = (HEADER + CLEAN + FOOTER).replace("\n", "\r\n").encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw  # Python writes no mark for an explicit byte order
    book.write_bytes(raw)
    expected = load_dataset(DataConfig(path=str(clean), tokens=tokens, valid_fraction=0.2))
    got = load_dataset(
        DataConfig(path=str(book), tokens=tokens, valid_fraction=0.2, strip_gutenberg=True)
    )
    assert got.vocab.itos == expected.vocab.itos
    assert torch.equal(got.train, expected.train) and torch.equal(got.valid, expected.valid)
    without = load_dataset(DataConfig(path=str(book), tokens=tokens, valid_fraction=0.2))
    assert len(without.train) > 2 * len(expected.train)  # the licence was text


def test_gutenberg_stripping_refuses_a_file_without_markers():
    assert strip_gutenberg(HEADER + CLEAN) == CLEAN  # a header alone is enough
    with pytest.raises(DataError, match="no Project Gutenberg header or footer"):
        strip_gutenberg(CLEAN, name="clean.txt")


def test_utf16_without_a_mark_is_named_in_the_error(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("some text here".encode("utf-16-le"))
    with pytest.raises(DataError, match="UTF-16") as e:
        read_text(path)
    assert "\n" not in str(e.value)
    path.write_bytes(b"\xff\xfe" + b"\x00\xd8")  # a mark, then a lone surrogate
    with pytest.raises(DataError, match="UTF-16 byte-order mark but is not valid"):
        read_text(path)


def test_a_directory_of_documents_is_a_corpus_not_a_download_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TBPTT_DATA_DIR", str(cache))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("one document here\n" * 20)
    (docs / "b.txt").write_text("and another one\n" * 20)
    config = DataConfig(path=str(docs), tokens="word")
    assert config.resolved_kind() == "docs"
    data = load_dataset(config)
    assert isinstance(data, DocumentData) and data.documents == 2
    assert not cache.exists() and sorted(p.name for p in docs.iterdir()) == ["a.txt", "b.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no non-empty text file"):
        load_dataset(DataConfig(path=str(empty)))
    assert not cache.exists()


def test_decoding_turns_eos_back_into_line_ends():
    data = prepare_corpus(TRAIN, VALID, TEST)
    for ids in (data.train, data.valid, data.test, data.train[2:9]):
        text = data.decode(ids)
        assert "<eos>" not in text
        assert torch.equal(data.encode(text), ids.long())  # the same tokens back
    assert data.decode(data.valid) == "the <unk> sat\nthe cat\n"
