"""The data section of a run's configuration, and the one function that builds its dataset.

One :class:`DataConfig` describes every kind of data tbptt trains on; its
``kind`` says which fields apply:

========  ==============================================  =======================
kind      source                                          fields used
========  ==============================================  =======================
text      a text file (default: The Time Machine), or     tokens, normalize, eos,
          train / valid / test files (or a directory      min_freq, max_vocab,
          holding train.txt, valid.txt, test.txt)         strip_gutenberg
docs      a directory of files, or a file + separator     tokens, normalize, separator
series    a CSV / .npy / .npz file                        target, inputs, horizon,
                                                          series_id, time_column, missing
task      a synthetic task spec (``adding:T=100``)        task, seed
prepared  a directory made by ``tbptt prepare`` (a        none: its meta.json holds
          memory-mapped token file, docs/prepared.md)     the token options
========  ==============================================  =======================

``valid_fraction`` applies to every kind but tasks (which generate their own
validation split) and separate validation files.

Text defaults (``None`` fields, fixed by :meth:`DataConfig.resolved`): The Time
Machine (the lecture's data) is read with the lecture's normalization
(``letters``); any other text as it is (``none``). Word level has an
end-of-line token ``<eos>``, character level none (the line end is a character).
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from tbptt.data.corpus import corpus_files, is_time_machine, load_corpus, read_text, strip_gutenberg
from tbptt.data.dataset import Dataset, TextData, prepare_corpus, prepare_text
from tbptt.data.prepared import PreparedText, is_prepared, load_prepared
from tbptt.data.tokenize import NORMALIZERS, TOKENIZERS
from tbptt.errors import ConfigError, DataError

__all__ = ["DataConfig", "DATA_KINDS", "SERIES_SUFFIXES", "load_dataset", "data_digest"]

DATA_KINDS = ("text", "docs", "series", "task", "prepared")
SERIES_SUFFIXES = (".csv", ".npy", ".npz")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is read (see the module docstring).

    ``kind`` None: inferred -- ``task`` when ``task`` is set, ``docs`` when
    ``documents`` or ``separator`` is (or ``path`` is a directory without a
    ``train.txt``), ``series`` for a .csv/.npy/.npz ``path``, else ``text``.
    ``normalize`` and ``eos`` None: the text defaults (module docstring).
    ``train_file`` / ``valid_file`` / ``test_file``: a corpus in separate files
    (the vocabulary comes from ``train_file`` only). ``min_freq`` / ``max_vocab``
    (0: no limit): rarer tokens are ``<unk>``. ``cache_dir``: where The Time
    Machine is downloaded (None: ``$TBPTT_DATA_DIR`` or ``~/.cache/tbptt``).
    """

    path: str | None = None
    kind: str | None = None
    task: str | None = None
    documents: str | None = None
    separator: str | None = None
    tokens: str = "char"
    normalize: str | None = None
    train_file: str | None = field(default=None, metadata={"resumable": True})
    valid_file: str | None = field(default=None, metadata={"resumable": True})
    test_file: str | None = field(default=None, metadata={"resumable": True})
    eos: bool | None = None
    min_freq: int = 1
    max_vocab: int = 0
    strip_gutenberg: bool = False
    cache_dir: str | None = field(default=None, metadata={"resumable": True})
    target: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    horizon: int = 1
    series_id: str | None = None
    time_column: str | None = None
    missing: str = "error"
    valid_fraction: float = 0.1

    def resolved_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        if self.task:
            return "task"
        if (self.path or self.documents) and is_prepared(self.path or self.documents):
            return "prepared"
        if self.documents or self.separator:
            return "docs"
        if self.path and Path(self.path).suffix.lower() in SERIES_SUFFIXES:
            return "series"
        if self.path and Path(self.path).expanduser().is_dir() and not self.train_file:
            return "text" if corpus_files(self.path) is not None else "docs"
        return "text"

    def split_files(self) -> dict[str, Path] | None:
        """``{"train", "valid"[, "test"]}`` files of a corpus given in separate files (the
        ``*_file`` fields, or a ``path`` directory holding train.txt ...), else None."""
        if self.train_file:
            files = {"train": self.train_file, "valid": self.valid_file, "test": self.test_file}
            return {k: Path(v).expanduser() for k, v in files.items() if v}
        if self.path and Path(self.path).expanduser().is_dir():
            return corpus_files(self.path)
        return None

    def series_options(self) -> dict:
        """The keywords of :func:`~tbptt.data.series.prepare_series` this section sets."""
        return {
            "target": list(self.target),
            "inputs": list(self.inputs) or None,
            "horizon": self.horizon,
            "series_id": self.series_id,
            "time_column": self.time_column,
            "valid_fraction": self.valid_fraction,
            "missing": self.missing,
        }

    def reading(self, path: str) -> DataConfig:
        """This configuration with ``path`` read in place of its data: a file given to a run
        trained on separate files becomes its test file (the vocabulary still comes from the
        training file); any other run reads ``path`` as its file, folder or documents."""
        files = self.split_files()
        if files is not None and not Path(path).expanduser().is_dir():
            return replace(
                self,
                path=None,
                train_file=str(files["train"]),
                valid_file=str(files["valid"]),
                test_file=path,
            )
        if self.train_file:
            return replace(self, path=path, train_file=None, valid_file=None, test_file=None)
        return replace(self, **{"documents" if self.documents else "path": path})

    def resolved(self) -> DataConfig:
        """This configuration with the text defaults fixed: ``normalize`` (``letters`` for
        The Time Machine, ``none`` for any other text) and ``eos`` (on for word level)."""
        changes = {}
        if self.normalize is None:
            lecture = self.resolved_kind() == "text" and (
                (self.path is None and not self.train_file)
                or (self.path is not None and is_time_machine(self.path))
            )
            changes["normalize"] = "letters" if lecture else "none"
        if self.eos is None:
            changes["eos"] = self.tokens == "word"
        return replace(self, **changes) if changes else self

    def problems(self) -> list[str]:
        """Every invalid option, as phrases (empty when all is well)."""
        out = []
        kind = self.resolved_kind()
        if kind not in DATA_KINDS:
            out.append(f"unknown data kind {kind!r}, expected one of {', '.join(DATA_KINDS)}")
        if self.tokens not in TOKENIZERS:
            out.append(f"unknown token level {self.tokens!r}, expected {' or '.join(TOKENIZERS)}")
        if self.normalize is not None and self.normalize not in NORMALIZERS:
            out.append(
                f"unknown normalization {self.normalize!r}, expected {' or '.join(NORMALIZERS)}"
            )
        if not 0.0 <= self.valid_fraction < 1.0:
            out.append(f"valid fraction must be in [0, 1), got {self.valid_fraction}")
        if self.horizon < 1:
            out.append(f"forecast horizon must be >= 1, got {self.horizon}")
        if self.missing not in ("error", "drop", "ffill"):
            out.append(
                f"unknown missing-value policy {self.missing!r}, expected error, drop or ffill"
            )
        if kind == "series" and not self.target:
            out.append("a time series needs its target column(s)")
        if kind != "series" and (self.target or self.inputs or self.series_id):
            out.append(f"target / input / series-id columns apply to a time series, not to {kind}")
        if self.task and self.path:
            out.append("give a task or a data file, not both")
        if self.eos and self.tokens != "word":
            out.append(
                "an end-of-line token applies to word level (a character's line end is a token)"
            )
        if self.min_freq < 1:
            out.append(f"minimum token frequency must be >= 1, got {self.min_freq}")
        if self.max_vocab < 0 or self.max_vocab == 1:
            out.append(f"maximum vocabulary must be >= 2 (0: no limit), got {self.max_vocab}")
        if self.train_file and not self.valid_file:
            out.append("a training file needs a validation file too")
        if (self.valid_file or self.test_file) and not self.train_file:
            out.append("validation and test files need a training file too")
        if self.train_file and (self.path or self.documents or self.task):
            out.append("give training/validation files or a data path, not both")
        if self.train_file and kind != "text":
            out.append(f"training/validation files are text, not {kind}")
        return out


def load_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """The :class:`~tbptt.data.Dataset` ``config`` describes (``seed``: a task's data seed).

    Raises:
        DataError / SpecError / ConfigError: one line saying what is wrong.
    """
    if problems := config.problems():
        raise ConfigError("; ".join(problems))
    config = config.resolved()
    kind = config.resolved_kind()
    if kind == "prepared":  # tokenized by tbptt prepare: its own level and vocabulary
        return load_prepared(config.path or config.documents)
    if kind == "task":
        from tbptt.data.tasks import parse_task

        return parse_task(config.task, seed=seed)
    if kind == "series":
        from tbptt.data.series import prepare_series

        return prepare_series(config.path, **config.series_options())
    if kind == "docs":
        from tbptt.data.documents import prepare_documents, read_documents

        source = config.documents or config.path
        if source is None:
            raise DataError(
                "documents need a path: a directory of files, or a file and a separator"
            )
        separator = codecs.decode(config.separator, "unicode_escape") if config.separator else None
        documents = read_documents(source, separator=separator)
        if config.strip_gutenberg:
            documents = [strip_gutenberg(d, name=f"document {i}") for i, d in enumerate(documents)]
        return prepare_documents(
            documents,
            level=config.tokens,
            normalization=config.normalize,
            valid_fraction=config.valid_fraction,
            min_freq=config.min_freq,
            max_vocab=config.max_vocab,
            eos=config.eos,
        )
    words = dict(
        level=config.tokens,
        normalization=config.normalize,
        min_freq=config.min_freq,
        max_vocab=config.max_vocab,
        eos=config.eos,
    )
    files = config.split_files()
    if files is not None:
        texts = {k: _read(path, config.strip_gutenberg) for k, path in files.items()}
        return prepare_corpus(texts["train"], texts["valid"], texts.get("test"), **words)
    text, path = load_corpus(config.path, cache_dir=config.cache_dir)
    if config.strip_gutenberg:
        text = strip_gutenberg(text, name=str(path))
    return prepare_text(text, valid_fraction=config.valid_fraction, **words)


def _read(path: Path, gutenberg: bool) -> str:
    text = read_text(path)
    return strip_gutenberg(text, name=str(path)) if gutenberg else text


def data_digest(data: Dataset) -> str:
    """SHA-1 of what a run trains on: its splits' tensors (and a text's vocabulary); for a
    prepared corpus, of its vocabulary, split and token file's SHA-256 (no pass over it)."""
    if isinstance(data, PreparedText):
        return data.digest()
    h = hashlib.sha1()
    if isinstance(data, TextData):
        h.update("\x00".join(data.vocab.itos).encode("utf-8", "surrogatepass"))
    splits = [data.train_split(), data.valid_split()]
    if isinstance(data, TextData) and data.test is not None:
        splits.append(data.test_split())
    for split in splits:
        for t in (split.inputs, split.targets, split.starts, split.mask):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
            h.update(str(None if t is None else (t.dtype, tuple(t.shape))).encode())
    return h.hexdigest()
