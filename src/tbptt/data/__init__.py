"""Data layer: corpora, tokenizers, vocabulary, time series, synthetic tasks, and the streams
they become (one split type, one batch type)."""

from tbptt.data.corpus import (
    TIME_MACHINE,
    RemoteFile,
    default_data_dir,
    fetch,
    load_corpus,
    read_text,
)
from tbptt.data.custom import StreamDataset
from tbptt.data.dataset import (
    Dataset,
    DataShape,
    TextData,
    prepare_text,
    unigram_perplexity,
)
from tbptt.data.streams import (
    Batch,
    RandomStream,
    SequentialStream,
    Stream,
    StreamData,
    batchify,
    split_stream,
)
from tbptt.data.tokenize import NORMALIZERS, TOKENIZERS, Vocab, normalize, tokenize

__all__ = [
    "TIME_MACHINE",
    "RemoteFile",
    "default_data_dir",
    "fetch",
    "load_corpus",
    "read_text",
    "DataShape",
    "Dataset",
    "StreamDataset",
    "TextData",
    "unigram_perplexity",
    "prepare_text",
    "Batch",
    "Stream",
    "StreamData",
    "RandomStream",
    "SequentialStream",
    "batchify",
    "split_stream",
    "NORMALIZERS",
    "TOKENIZERS",
    "Vocab",
    "normalize",
    "tokenize",
]
