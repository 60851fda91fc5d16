"""Prepared corpora: a text (or a directory of documents) tokenized once into a
memory-mapped token file, for corpora larger than memory.

:func:`prepare` streams the input a block at a time (two passes: the vocabulary, then
the ids) into a directory holding ``tokens.bin`` (the ids, uint8 / uint16 / uint32 by
vocabulary size), ``starts.bin`` for documents, ``meta.json`` (vocabulary, counts,
SHA-256 of each file and of the vocabulary) and the marker ``.tbptt-prepared`` naming the
files it wrote (the only ones it ever removes), written atomically; :func:`load_prepared`
checks it and returns a :class:`~tbptt.data.TextData` whose splits are views of the map. ``tbptt prepare`` and
``tbptt train --data DIR`` are the command line's way to the same; docs/prepared.md
has the format, the memory and the throughput. :func:`prepare_series_file` stores a time
series' standardized pairs the same way (float32 maps; the table is read in memory once).
"""

from tbptt.data.prepared.directory import OutputExists
from tbptt.data.prepared.format import (
    MARKER,
    file_dtype,
    is_prepared,
    read_meta,
    verify,
    written_files,
)
from tbptt.data.prepared.load import PreparedText, load_prepared
from tbptt.data.prepared.series import prepare_series_file
from tbptt.data.prepared.source import TextSource
from tbptt.data.prepared.write import prepare

__all__ = [
    "prepare",
    "prepare_series_file",
    "load_prepared",
    "PreparedText",
    "TextSource",
    "file_dtype",
    "is_prepared",
    "read_meta",
    "verify",
    "written_files",
    "MARKER",
    "OutputExists",
]
