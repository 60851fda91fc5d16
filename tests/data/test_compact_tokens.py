"""A corpus is indexed into compact token ids, without a Python object per token.

The reference is the naive pipeline: a list of tokens, ``Vocab(training tokens)``,
``vocab.encode(tokens)``.
"""

from __future__ import annotations

import random
import sys
import tracemalloc

import pytest
import torch

from tbptt.data.dataset import prepare_text
from tbptt.data.documents import DOC, prepare_documents
from tbptt.data.tokenize import _NON_LETTERS, Vocab, compact_dtype, normalize, tokenize

tokenize_module = sys.modules["tbptt.data.tokenize"]  # (tbptt.data.tokenize is also a function)


def naive(text: str, level: str, normalization: str, valid_fraction: float, min_freq: int = 1):
    tokens = list(text) if level == "char" else text.split()
    if normalization == "letters":
        text = _NON_LETTERS.sub(" ", text).lower().strip()
        tokens = list(text) if level == "char" else text.split()
    n_valid = int(round(len(tokens) * valid_fraction))
    vocab = Vocab(tokens[: len(tokens) - n_valid], min_freq=min_freq)
    return vocab, vocab.encode(tokens)


def random_text(rng: random.Random, n: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("normalization", ["letters", "none"])
def test_ids_and_vocabulary_equal_the_naive_pipeline(level, normalization, monkeypatch):
    monkeypatch.setattr(tokenize_module, "_PIECE", 5)  # many pieces, words cut at their ends
    rng = random.Random(0)
    for _ in range(30):
        text = random_text(rng, rng.randint(3, 60), "abAB é\n,.😀xyz  ")
        if len(tokenize(normalize(text, normalization), level)) < 2:
            continue
        min_freq = rng.choice([1, 2])
        ref_vocab, ref_ids = naive(text, level, normalization, 0.2, min_freq)
        data = prepare_text(
            text, level=level, normalization=normalization, valid_fraction=0.2, min_freq=min_freq
        )
        assert data.vocab.itos == ref_vocab.itos
        assert torch.equal(torch.cat([data.train, data.valid]).long(), ref_ids)


def test_letters_normalization_equals_the_regular_expression(monkeypatch):
    monkeypatch.setattr(tokenize_module, "_PIECE", 7)
    rng = random.Random(1)
    for _ in range(500):
        text = random_text(rng, rng.randint(0, 40), "aZb é,\n\t  x😀Q")
        assert normalize(text, "letters") == _NON_LETTERS.sub(" ", text).lower().strip()


def test_token_ids_take_the_smallest_integer_type():
    assert compact_dtype(28) == torch.uint8 and compact_dtype(256) == torch.uint8
    assert compact_dtype(257) == torch.int16 and compact_dtype(40_000) == torch.int32
    data = prepare_text("the time machine " * 50, level="char")
    assert data.train.dtype == torch.uint8 and data.valid.dtype == torch.uint8
    # the splits the trainer reads are int64 ids, as the embedding and the loss need
    assert data.train_split().inputs.dtype == torch.uint8  # the split stays compact
    from tbptt.data.streams import SequentialStream

    window = SequentialStream(data.train_split(), 2).next(5)
    assert window.inputs.dtype == window.targets.dtype == torch.int64  # a window is widened
    words = " ".join(f"w{i}" for i in range(300)) * 2
    assert prepare_text(words, level="word", normalization="none").train.dtype == torch.int16


def test_indexing_a_corpus_costs_a_few_bytes_per_character():
    # Python-side allocations while indexing a 1 MB text (the tensors' storage, one byte per
    # token, is not traced): a list of one-character strings alone costs 8 bytes per character
    # and the ids as Python ints ~36 more; the piecewise indexing keeps a few copies of the text.
    rng = random.Random(2)
    words = ["".join(rng.choices("etaoinshrdlu", k=rng.randint(1, 8))) for _ in range(500)]
    text = " ".join(rng.choices(words, k=200_000))[:1_000_000]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        data = prepare_text(text, level="char")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    tokens = len(data.train) + len(data.valid)
    assert tokens == len(text)
    assert peak / tokens < 4.0, f"{peak / tokens:.1f} Python bytes per character"
    # one byte per token: both splits are views of one (N,) uint8 storage
    assert data.train.untyped_storage().nbytes() == tokens
    assert data.valid.untyped_storage().data_ptr() == data.train.untyped_storage().data_ptr()


def test_documents_keep_their_boundaries_and_ids():
    docs = ["ab ba", "cab", "x"]
    data = prepare_documents(docs, level="char", normalization="none", valid_fraction=0.25)
    tokens = [DOC, *"ab ba", DOC, *"cab", DOC, "x"]
    n_valid = int(round(len(tokens) * 0.25))
    vocab = Vocab(tokens[: len(tokens) - n_valid])
    if DOC not in vocab:
        vocab = Vocab(itos=[*vocab.itos, DOC])
    assert data.vocab.itos == vocab.itos
    assert torch.equal(torch.cat([data.train, data.valid]).long(), vocab.encode(tokens))
    starts = torch.cat([data.train_starts, data.valid_starts])
    assert starts.tolist() == [t == DOC for t in tokens] and data.documents == 3
    # <doc> only in the validation tail is appended to the vocabulary, its ids kept
    late = prepare_documents(
        ["abcabcabc", "ab"], level="char", normalization="none", valid_fraction=0.3
    )
    assert (
        late.vocab.itos[-1] == DOC and int(late.valid[late.valid_starts][0]) == len(late.vocab) - 1
    )
