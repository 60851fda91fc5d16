import pytest
import torch

from tbptt.data import (
    RandomStream,
    SequentialStream,
    Vocab,
    batchify,
    normalize,
    prepare_text,
    split_stream,
    tokenize,
)
from tbptt.errors import ConfigError, DataError


@pytest.mark.parametrize("lengths", [[3], [1, 2, 5], [7, 7, 7, 7, 7, 7, 7, 7, 7]])
def test_concatenated_windows_give_back_each_streams_slice(lengths):
    tokens = torch.arange(103)
    B = 4
    stream = SequentialStream(tokens, B)
    rows = 103 // B
    inputs, targets, resets = [], [], []
    i = 0
    while (batch := stream.next(lengths[i % len(lengths)])) is not None:
        inputs.append(batch.inputs)
        targets.append(batch.targets)
        resets.append(batch.reset)
        i += 1
    x, y = torch.cat(inputs), torch.cat(targets)
    for b in range(B):
        column = tokens[b * rows : (b + 1) * rows]  # stream b is a contiguous slice of the corpus
        assert torch.equal(x[:, b], column[:-1])
        assert torch.equal(y[:, b], column[1:])
    assert resets[0] and not any(resets[1:])
    stream.restart()
    assert stream.next(2).reset


def test_batchify_layout_and_errors():
    data = batchify(torch.arange(10), 3)  # (3, 3): the last token is dropped
    assert data.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(DataError, match="smaller batch size"):
        batchify(torch.arange(5), 4)
    with pytest.raises(DataError):
        batchify(torch.arange(5), 0)


def test_random_stream_windows_are_corpus_slices_with_fresh_state():
    tokens = torch.arange(200)
    g = torch.Generator().manual_seed(0)
    stream = RandomStream(tokens, 5, g)
    total = 0
    while (batch := stream.next(8)) is not None:
        assert batch.reset
        assert torch.equal(batch.targets[:-1], batch.inputs[1:])
        assert torch.equal(batch.inputs[1:] - batch.inputs[:-1], torch.ones_like(batch.inputs[1:]))
        total += batch.inputs.shape[0]
    assert total == stream.steps
    g2 = torch.Generator().manual_seed(0)
    again = RandomStream(tokens, 5, g2).next(8)
    assert torch.equal(
        again.inputs, RandomStream(tokens, 5, torch.Generator().manual_seed(0)).next(8).inputs
    )


def test_lecture_normalization_and_tokenizers():
    assert normalize("The Time-Machine, 1895!\nIt") == "the time machine it"
    assert normalize("Ünïcode ok", "none") == "Ünïcode ok"
    assert tokenize("ab c", "char") == ["a", "b", " ", "c"]
    assert tokenize("ab  c\nd", "word") == ["ab", "c", "d"]
    with pytest.raises(ConfigError):
        tokenize("x", "byte")


def test_vocab_unknown_and_order():
    v = Vocab("aabbbc", min_freq=2)
    assert v.itos == ["<unk>", "b", "a"]
    assert v.encode("abcz").tolist() == [2, 1, 0, 0]
    assert v.decode([1, 2]) == "ba"


def test_prepare_text_split_is_contiguous_and_vocab_from_train():
    text = "abcabcabcabcabcabcabcabcabcxyz"
    data = prepare_text(text, level="char", normalization="none", valid_fraction=0.1)
    assert len(data.train) == 27 and len(data.valid) == 3
    assert data.decode(data.train) == text[:27]
    assert data.valid.tolist() == [0, 0, 0]  # x, y, z never seen in training -> <unk>
    assert split_stream(torch.arange(10), 0.3)[1].tolist() == [7, 8, 9]
    with pytest.raises(DataError, match="token"):
        prepare_text("!!! ???", level="char")
