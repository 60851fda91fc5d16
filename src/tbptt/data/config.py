"""The data section of a run's configuration, and the one function that builds its dataset.

One :class:`DataConfig` describes every kind of data tbptt trains on; its
``kind`` says which fields apply:

========  ==============================================  =======================
kind      source                                          fields used
========  ==============================================  =======================
text      a UTF-8 file (default: The Time Machine)        tokens, normalize
docs      a directory of files, or a file + separator     tokens, normalize, separator
series    a CSV / .npy / .npz file                        target, inputs, horizon,
                                                          series_id, time_column, missing
task      a synthetic task spec (``adding:T=100``)        task, seed
========  ==============================================  =======================

``valid_fraction`` applies to every kind but tasks (which generate their own
validation split).
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass
from pathlib import Path

from tbptt.data.corpus import load_corpus
from tbptt.data.dataset import Dataset, TextData, prepare_text
from tbptt.data.tokenize import NORMALIZERS, TOKENIZERS
from tbptt.errors import ConfigError, DataError

__all__ = ["DataConfig", "DATA_KINDS", "SERIES_SUFFIXES", "load_dataset", "data_digest"]

DATA_KINDS = ("text", "docs", "series", "task")
SERIES_SUFFIXES = (".csv", ".npy", ".npz")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is read (see the module docstring).

    ``kind`` None: inferred -- ``task`` when ``task`` is set, ``docs`` when
    ``documents`` or ``separator`` is, ``series`` for a .csv/.npy/.npz ``path``,
    else ``text``.
    """

    path: str | None = None
    kind: str | None = None
    task: str | None = None
    documents: str | None = None
    separator: str | None = None
    tokens: str = "char"
    normalize: str = "letters"
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
        if self.documents or self.separator:
            return "docs"
        if self.path and Path(self.path).suffix.lower() in SERIES_SUFFIXES:
            return "series"
        return "text"

    def problems(self) -> list[str]:
        """Every invalid option, as phrases (empty when all is well)."""
        out = []
        kind = self.resolved_kind()
        if kind not in DATA_KINDS:
            out.append(f"unknown data kind {kind!r}, expected one of {', '.join(DATA_KINDS)}")
        if self.tokens not in TOKENIZERS:
            out.append(f"unknown token level {self.tokens!r}, expected {' or '.join(TOKENIZERS)}")
        if self.normalize not in NORMALIZERS:
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
        return out


def load_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """The :class:`~tbptt.data.Dataset` ``config`` describes (``seed``: a task's data seed).

    Raises:
        DataError / SpecError / ConfigError: one line saying what is wrong.
    """
    if problems := config.problems():
        raise ConfigError("; ".join(problems))
    kind = config.resolved_kind()
    if kind == "task":
        from tbptt.data.tasks import parse_task

        return parse_task(config.task, seed=seed)
    if kind == "series":
        from tbptt.data.series import prepare_series

        return prepare_series(
            config.path,
            target=list(config.target),
            inputs=list(config.inputs) or None,
            horizon=config.horizon,
            series_id=config.series_id,
            time_column=config.time_column,
            valid_fraction=config.valid_fraction,
            missing=config.missing,
        )
    if kind == "docs":
        from tbptt.data.documents import prepare_documents, read_documents

        source = config.documents or config.path
        if source is None:
            raise DataError(
                "documents need a path: a directory of files, or a file and a separator"
            )
        separator = codecs.decode(config.separator, "unicode_escape") if config.separator else None
        return prepare_documents(
            read_documents(source, separator=separator),
            level=config.tokens,
            normalization=config.normalize,
            valid_fraction=config.valid_fraction,
        )
    text, _ = load_corpus(config.path)
    return prepare_text(
        text,
        level=config.tokens,
        normalization=config.normalize,
        valid_fraction=config.valid_fraction,
    )


def data_digest(data: Dataset) -> str:
    """SHA-1 of what a run trains on: its splits' tensors (and a text's vocabulary)."""
    h = hashlib.sha1()
    if isinstance(data, TextData):
        h.update("\x00".join(data.vocab.itos).encode("utf-8", "surrogatepass"))
    for split in (data.train_split(), data.valid_split()):
        for t in (split.inputs, split.targets, split.starts, split.mask):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
            h.update(str(None if t is None else (t.dtype, tuple(t.shape))).encode())
    return h.hexdigest()
