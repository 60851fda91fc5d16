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
prepared  a directory made by ``tbptt prepare`` (a        the ones it was made with
          memory-mapped token file, docs/prepared.md)     (meta.json): repeated or
                                                          left out, never others
========  ==============================================  =======================

``valid_fraction`` applies to every kind but tasks (which generate their own
validation split) and separate validation files. An option a kind does not read
is refused, naming it and why (:mod:`tbptt.data.kinds`); a run records only the
options its kind read.

Text defaults (``None`` fields, fixed by :meth:`DataConfig.resolved`): The Time
Machine (the lecture's data) is read with the lecture's normalization
(``letters``); any other text as it is (``none``). Word level has an
end-of-line token ``<eos>``, character level none (the line end is a character).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from tbptt.data.corpus import corpus_files, is_time_machine
from tbptt.data.dataset import Dataset, TextData
from tbptt.data.kinds import KINDS, SERIES_SUFFIXES, applied_options, kind_of
from tbptt.data.prepared import PreparedText
from tbptt.data.tokenize import NORMALIZERS, TOKENIZERS
from tbptt.errors import ConfigError, DataError

__all__ = ["DataConfig", "DATA_KINDS", "SERIES_SUFFIXES", "load_dataset", "data_digest"]

DATA_KINDS = tuple(kind.name for kind in KINDS)


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
    direct: bool = False
    season: int | None = None
    categorical: tuple[str, ...] = ()
    calendar: tuple[str, ...] = ()
    warm_up: int = 1000

    def resolved_kind(self) -> str:
        """The name of the kind that reads this data (:func:`tbptt.data.kinds.kind_of`)."""
        return kind_of(self).name

    def refused_options(self) -> tuple[str, ...]:
        """The dotted keys (``data.horizon``) of the options this data's kind does not read."""
        try:
            return tuple(f"data.{name}" for name, _ in applied_options(self)[1])
        except DataError:
            return ()

    def applied(self) -> DataConfig:
        """This configuration as its kind reads it: the options the kind ignores at their
        defaults, a prepared directory's options the ones it was made with (what a run
        records).

        Raises:
            ConfigError: an option that does not apply, naming it and why.
        """
        config, refused = applied_options(self)
        if refused:
            raise ConfigError(
                "; ".join(why for _, why in refused),
                options=tuple(f"data.{name}" for name, _ in refused),
            )
        return config

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
            "direct": self.direct,
            "season": self.season,
            "categorical": list(self.categorical),
            "calendar": list(self.calendar),
            "warm_up": self.warm_up,
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
        kind = self.resolved_kind()
        if kind not in ("text", "docs"):  # the text defaults are a text's
            return self
        if self.normalize is None:
            lecture = kind == "text" and (
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
        kind = self.resolved_kind()  # a source it cannot read raises its own DataError
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
        if self.season is not None and self.season < 0:
            out.append(f"season must be >= 0 rows (0: none), got {self.season}")
        if self.warm_up < 0:
            out.append(f"warm-up must be >= 0 rows, got {self.warm_up}")
        if self.missing not in ("error", "drop", "ffill"):
            out.append(
                f"unknown missing-value policy {self.missing!r}, expected error, drop or ffill"
            )
        if kind == "series" and not self.target:
            out.append("a time series needs its target column(s)")
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
        if not out:
            out += [why for _, why in applied_options(self)[1]]
        return out


def load_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """The :class:`~tbptt.data.Dataset` ``config`` describes (``seed``: a task's data seed),
    read by its kind (:mod:`tbptt.data.kinds`).

    Raises:
        DataError / SpecError / ConfigError: one line saying what is wrong.
    """
    if problems := config.problems():
        raise ConfigError("; ".join(problems), options=_problem_options(config))
    config = config.resolved().applied()
    return kind_of(config).load(config, seed)


def _problem_options(config: DataConfig) -> tuple[str, ...]:
    return config.refused_options()


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
