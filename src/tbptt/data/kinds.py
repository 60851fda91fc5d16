"""The registry of data kinds: how each is recognized, which options it reads, how it loads.

A :class:`~tbptt.data.config.DataConfig` names its source; the first kind of
:data:`KINDS` whose ``detect`` accepts it reads it. Each kind states the options
(``DataConfig`` fields) it uses: an option set to anything but its default on a
kind that does not use it is refused, naming the option and why, so a flag is
never silently ignored. A prepared directory's options are the ones it was made
with (its ``meta.json``): repeating them is fine, asking for others is refused,
and the configuration records them. A new kind is one module in ``tbptt/data/``
that builds a :class:`Kind`, plus its line in :data:`KINDS`.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tbptt.data.corpus import corpus_files, load_corpus, read_text, strip_gutenberg
from tbptt.data.dataset import Dataset, prepare_corpus, prepare_text
from tbptt.data.prepared.format import META, is_prepared
from tbptt.errors import DataError

if TYPE_CHECKING:
    from tbptt.data.config import DataConfig

__all__ = ["Kind", "KINDS", "kind_of", "family_of", "applied_options"]

SERIES_SUFFIXES = (".csv", ".npy", ".npz")
_TOKEN_OPTIONS = frozenset({"tokens", "normalize", "eos", "min_freq", "max_vocab"})
_SERIES_OPTIONS = frozenset(
    {
        "target",
        "inputs",
        "horizon",
        "series_id",
        "time_column",
        "missing",
        "valid_fraction",
        "direct",
        "season",
        "categorical",
        "calendar",
        "warm_up",
    }
)


@dataclass(frozen=True)
class Kind:
    """One kind of data.

    Attributes:
        name: its name in configurations (``DataConfig.kind``) and messages.
        what: the kind in words, for messages ("a time series").
        family: what a trained model reads ("text", "series", "task"): a run may be
            evaluated or resumed on another kind of the same family (a text and its
            preparation), never of another.
        options: the ``DataConfig`` fields it reads (besides its source).
        why: for an option it does not read, why not (default: "it does not read it").
        detect: whether a configuration names data of this kind.
        load: ``(config, seed) -> Dataset``.
    """

    name: str
    what: str
    family: str
    options: frozenset[str]
    detect: Callable[[DataConfig], bool]
    load: Callable[[DataConfig, int], Dataset]
    why: str = "it does not read it"


def _source(config: DataConfig) -> str | None:
    return config.path or config.documents


def _load_text(config: DataConfig, seed: int) -> Dataset:
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
        data = prepare_corpus(texts["train"], texts["valid"], texts.get("test"), **words)
    else:
        text, path = load_corpus(config.path, cache_dir=config.cache_dir)
        if config.strip_gutenberg:
            text = strip_gutenberg(text, name=str(path))
        data = prepare_text(text, valid_fraction=config.valid_fraction, **words)
    data.gutenberg_stripped = config.strip_gutenberg
    return data


def _read(path: Path, gutenberg: bool) -> str:
    text = read_text(path)
    return strip_gutenberg(text, name=str(path)) if gutenberg else text


def _load_docs(config: DataConfig, seed: int) -> Dataset:
    from tbptt.data.documents import prepare_documents, read_documents

    source = config.documents or config.path
    if source is None:
        raise DataError("documents need a path: a directory of files, or a file and a separator")
    separator = codecs.decode(config.separator, "unicode_escape") if config.separator else None
    documents = read_documents(source, separator=separator)
    if config.strip_gutenberg:
        documents = [strip_gutenberg(d, name=f"document {i}") for i, d in enumerate(documents)]
    data = prepare_documents(
        documents,
        level=config.tokens,
        normalization=config.normalize,
        valid_fraction=config.valid_fraction,
        min_freq=config.min_freq,
        max_vocab=config.max_vocab,
        eos=config.eos,
    )
    data.gutenberg_stripped = config.strip_gutenberg
    return data


def _load_series(config: DataConfig, seed: int) -> Dataset:
    from tbptt.data.series import prepare_series

    return prepare_series(config.path, **config.series_options())


def _load_task(config: DataConfig, seed: int) -> Dataset:
    from tbptt.data.tasks import parse_task

    return parse_task(config.task, seed=seed)


def _load_prepared(config: DataConfig, seed: int) -> Dataset:
    from dataclasses import replace

    from tbptt.data.prepared import load_prepared

    data = load_prepared(_source(config))
    family, made = prepared_options(_source(config))
    if family == "series":  # the labels and the table it was prepared from, for forecasts
        data = replace(
            data,
            source=_meta_source(_source(config)),
            series_id=made.get("series_id"),
            time_column=_meta_field(_source(config), "time_column") or made.get("time_column"),
        )
    return data


def _meta_source(path) -> str | None:
    source = _meta_field(path, "source")
    return (
        source.get("path")
        if isinstance(source, dict) and isinstance(source.get("path"), str)
        else None
    )


def _meta_field(path, key: str):
    """``meta.json``'s ``key`` of a prepared directory (None: absent or unreadable; a
    preparation is checked whole when it is loaded)."""
    try:
        meta = json.loads((Path(path).expanduser() / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get(key) if isinstance(meta, dict) else None


def _is_series(config: DataConfig) -> bool:
    return bool(config.path) and Path(config.path).suffix.lower() in SERIES_SUFFIXES


def _is_docs(config: DataConfig) -> bool:
    if config.documents or config.separator:
        return True
    path = Path(config.path).expanduser() if config.path else None
    return bool(path and path.is_dir() and not config.train_file and corpus_files(path) is None)


#: In the order they are tried; the last (text) takes whatever the others do not.
KINDS: tuple[Kind, ...] = (
    Kind(
        "task", "a synthetic task", "task", frozenset({"task"}),
        lambda c: bool(c.task), _load_task,
        why="a task generates its own splits and needs no file",
    ),
    Kind(
        "prepared", "a prepared directory", "prepared", frozenset(),
        lambda c: bool(_source(c)) and is_prepared(_source(c)), _load_prepared,
        why="tbptt prepare fixed how it was read; prepare it again to read it otherwise",
    ),
    Kind(
        "docs", "documents", "text",
        _TOKEN_OPTIONS | {"separator", "strip_gutenberg", "valid_fraction"},
        _is_docs, _load_docs,
    ),
    Kind(
        "series", "a time series", "series", _SERIES_OPTIONS, _is_series, _load_series,
        why="a time series is read as numbers, not as text",
    ),
    Kind(
        "text", "a text", "text",
        _TOKEN_OPTIONS
        | {"strip_gutenberg", "valid_fraction", "train_file", "valid_file", "test_file"},
        lambda c: True, _load_text,
    ),
)  # fmt: skip


def kind_of(config: DataConfig) -> Kind:
    """The kind ``config`` names (``config.kind``, else the first whose ``detect`` accepts it).

    Raises:
        DataError: an unknown ``kind``.
    """
    if config.kind is not None:
        for kind in KINDS:
            if kind.name == config.kind:
                return kind
        names = ", ".join(k.name for k in KINDS)
        raise DataError(f"unknown data kind {config.kind!r}, expected one of {names}")
    return next(kind for kind in KINDS if kind.detect(config))


def prepared_options(path: str | Path) -> tuple[str, dict]:
    """(family, options) of a prepared directory: what it holds ("text" or "series") and the
    ``DataConfig`` options it was made with (from its ``meta.json``; {} when unreadable:
    loading it then says why)."""
    try:
        meta = json.loads((Path(path).expanduser() / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "text", {}
    if not isinstance(meta, dict):
        return "text", {}
    if meta.get("kind") == "series":
        options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
        made = {k: v for k, v in options.items() if k in _SERIES_OPTIONS}
        for key in ("target", "inputs"):
            if isinstance(made.get(key), list):
                made[key] = tuple(made[key])
        if made.get("inputs") is None:
            made["inputs"] = ()
        return "series", made
    made = {
        "tokens": meta.get("level"),
        "normalize": meta.get("normalize"),
        "eos": meta.get("eos"),
        "min_freq": meta.get("min_freq", 1),
        "max_vocab": meta.get("max_vocab", 0),
        "valid_fraction": meta.get("valid_fraction"),
        "strip_gutenberg": False,  # tbptt prepare reads the text as it is
    }
    return "text", {k: v for k, v in made.items() if v is not None}


def family_of(config: DataConfig) -> str:
    """What a model trained on ``config``'s data reads: "text", "series" or "task"."""
    kind = kind_of(config)
    return prepared_options(_source(config))[0] if kind.name == "prepared" else kind.family


def applied_options(config: DataConfig) -> tuple[DataConfig, list[tuple[str, str]]]:
    """``config`` as its kind reads it, and the options it sets that its kind does not read.

    The result drops (to their defaults) the options the kind ignores, so a saved
    configuration records only what was used; a prepared directory's options become
    the ones it was made with. Each refused option comes with the reason, e.g.
    ``("valid_fraction", "... was prepared with 0.1; ...")``.
    """
    from dataclasses import replace

    kind = kind_of(config)
    defaults = {f.name: f.default for f in fields(config)}
    always = {"path", "kind", "documents", "cache_dir"}
    used = set(kind.options) | always
    fixed: dict = {}
    if kind.name == "prepared":
        _, fixed = prepared_options(_source(config))
        used |= set(fixed)
    refused = []
    for name in sorted(defaults):
        value, default = getattr(config, name), defaults[name]
        if name in fixed:
            if value not in (default, fixed[name]) and not _same(value, fixed[name]):
                refused.append(
                    (
                        name,
                        f"{_source(config)} was prepared with {name} {fixed[name]!r}, not "
                        f"{value!r}; {kind.why}",
                    )
                )
        elif name not in used and value != default and not _trivial(name, value, kind):
            refused.append((name, f"{name} does not apply to {kind.what}: {kind.why}"))
    if (
        kind.name == "text"
        and config.train_file
        and config.valid_fraction != defaults["valid_fraction"]
    ):
        refused.append(
            ("valid_fraction", "valid_fraction does not apply to separate files: the "
             "validation split is its own file")
        )  # fmt: skip
    changes = {n: defaults[n] for n in defaults if n not in used and n != "kind"}
    changes.update(fixed)
    return replace(config, **changes), refused


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def _trivial(name: str, value, kind: Kind) -> bool:
    """Values that ask for nothing a kind could ignore: a resolved text default (``eos``
    False, ``normalize``) saved with an older run of another kind."""
    return (name == "eos" and value is False) or (name == "normalize" and value == "none")
