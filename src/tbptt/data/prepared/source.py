"""Text read a block at a time: decoded, normalized and tokenized as :mod:`tbptt.data.dataset`
does it for a whole text in memory, and resumable from the start of any block.

A :class:`TextSource` is one text file or a directory of documents. Iterating it yields
:class:`Item` s, one per block of at most :data:`BLOCK` bytes read: the tokens the block
completes (code points for characters, strings for words), whether a ``<doc>`` token
comes first, and the :class:`Cursor` the block starts at. ``items(cursor)`` starts over
from any such cursor and yields exactly the items that followed it the first time, so a
later pass can re-read a part of the input without reading what comes before it.

The tokens are those of ``tokenize(normalize(text), level, eos=eos)`` for the whole text
(with the line end a text without one gets for ``<eos>``), or, for documents, those of
:func:`~tbptt.data.documents.prepare_documents`; tests check this block by block against
the in-memory functions.
"""

from __future__ import annotations

import codecs
import logging
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tbptt.data.corpus import absent
from tbptt.data.documents import document_files
from tbptt.data.prepared.format import is_prepared
from tbptt.data.tokenize import TOKENIZERS, normalize, tokenize
from tbptt.errors import DataError

__all__ = ["BLOCK", "DOC_POINT", "Cursor", "Item", "TextSource"]

log = logging.getLogger(__name__)

BLOCK = 1 << 23  # bytes read at a time: bounds the temporary memory of one block
DOC_POINT = 0x110000  # character level: the code point standing for <doc> (above Unicode)
_LETTERS = frozenset(string.ascii_letters)
# Byte-order marks, longest first (UTF-32's little-endian mark starts with UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True)
class Cursor:
    """Where a pass over the source stands at the start of a block.

    ``file``: index into the source's files; ``offset``: byte offset in it; ``decoder``:
    the incremental decoder's state (a character cut by the block edge); ``started`` /
    ``pending`` / ``last``: the normalized text so far has content / owes one space
    before its next content / ends with this character; ``carry``: word level, the
    unfinished word at the end of the previous block.
    """

    file: int = 0
    offset: int = 0
    encoding: str = "utf-8"
    decoder: tuple = (b"", 0)
    started: bool = False
    pending: bool = False
    last: str = ""
    carry: str = ""


@dataclass(frozen=True)
class Item:
    """The tokens one block completes: ``doc`` (a ``<doc>`` token first) and ``tokens``
    ((n,) uint8 / uint32 code points, or n strings); ``len(item)`` counts both."""

    cursor: Cursor
    doc: bool
    tokens: np.ndarray | list[str]
    bytes: int  # bytes of input this item read

    def __len__(self) -> int:
        return int(self.doc) + len(self.tokens)


def _space_making(ch: str, keep_lines: bool) -> bool:
    """Whether ``normalize(..., "letters")`` turns ``ch`` into (part of) a space."""
    return ch not in _LETTERS and not (keep_lines and ch == "\n")


class TextSource:
    """One text file (``documents=False``) or every non-hidden file under a directory, in
    sorted path order (``documents=True``, one document each), read a block at a time.

    ``level``, ``normalization`` and ``eos`` as for :func:`~tbptt.data.prepare_text`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        level: str = "char",
        normalization: str = "letters",
        eos: bool = False,
        documents: bool = False,
        block: int = BLOCK,
    ):
        if level not in TOKENIZERS:
            raise DataError(f"unknown tokenizer {level!r}; expected one of {', '.join(TOKENIZERS)}")
        normalize("", normalization)  # refuses an unknown normalization
        self.path = Path(path).expanduser()
        self.level = level
        self.normalization = normalization
        self.eos = eos and level == "word"
        self.documents = documents
        self.block = block
        self.skipped: list[str] = []  # documents: prepared subdirectories, not read
        self.files = self._files()
        self.sizes = [f.stat().st_size for f in self.files]
        # documents: whether each file is one (it has content after normalization)
        self.opens = [self._has_content(i) for i in range(len(self.files))] if documents else None
        if not documents and not any(text.strip() for _, text, _, _ in self._blocks(0, Cursor())):
            raise DataError(f"data file {self.path} is empty; pass a file with text in it")
        if documents and not any(self.opens):
            raise DataError(
                f"directory {self.path} holds no file with text in it (after normalization "
                f"{normalization!r}); pass a directory of documents"
            )

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def _files(self) -> list[Path]:
        path = self.path
        if not path.exists():
            raise DataError(f"data path {path} {absent(path)}; pass a text file or a directory")
        if not self.documents:
            if path.is_dir():
                raise DataError(
                    f"{path} is a directory; pass a text file, or prepare it as documents"
                )
            return [path]
        if not path.is_dir():
            raise DataError(
                f"documents are read from a directory (one file per document); {path} is a file"
            )
        if is_prepared(path):
            raise DataError(
                f"{path} was written by tbptt prepare: it is a preparation, not documents; "
                "train on it as it is, or prepare the directory of documents it came from"
            )
        files, self.skipped = document_files(path)
        if self.skipped:
            log.info("skipping %s under %s: prepared, not documents", self.skipped, path)
        return files

    # -- decoding ----------------------------------------------------------------------

    def _blocks(self, i: int, cursor: Cursor) -> Iterator[tuple[Cursor, str, int, bool]]:
        """(cursor at the block, decoded text, bytes read, last block) of file ``i`` from
        ``cursor``; the cursor's text state is the caller's to fill in."""
        path = self.files[i]
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, also on early exit)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from e
        with f:
            offset, encoding = cursor.offset, cursor.encoding
            f.seek(offset)
            decoder = codecs.getincrementaldecoder(encoding)()
            decoder.setstate(cursor.decoder)
            while True:
                at = replace(cursor, file=i, offset=offset, encoding=encoding)
                at = replace(at, decoder=decoder.getstate())
                raw = f.read(self.block)
                final = len(raw) < self.block
                start = 0
                if offset == 0:
                    for bom, codec in _BOMS:
                        if raw.startswith(bom):
                            encoding, start = codec, len(bom)
                            decoder = codecs.getincrementaldecoder(codec)()
                            break
                if encoding == "utf-8" and b"\x00" in raw:
                    raise DataError(
                        f"data file {path} looks binary (it contains NUL bytes); pass UTF-8 "
                        "text (UTF-16 and UTF-32 files need their byte-order mark)"
                    )
                try:
                    text = decoder.decode(raw[start:], final=final)
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"data file {path} is not {encoding.upper()} text (invalid byte near "
                        f"offset {offset + start + e.start}); convert it to UTF-8 or pass "
                        "another file"
                    ) from e
                yield at, text, len(raw), final
                offset += len(raw)
                if final:
                    return

    def _has_content(self, i: int) -> bool:
        """Whether document ``i`` holds a token after normalization (word level: a word)."""
        letters = self.normalization == "letters"
        for _, text, _, _ in self._blocks(i, Cursor(file=i)):
            if letters and any(ch in _LETTERS for ch in text):
                return True
            if not letters and (
                text.strip() if self.level == "word" else text.strip(" \t\n\r\v\f")
            ):
                return True
        return False

    # -- normalizing and tokenizing ----------------------------------------------------

    def _normalized(self, text: str, cursor: Cursor) -> tuple[str, Cursor]:
        """``text`` normalized as a piece of the whole (the spaces at its edges decided by
        what came before and what comes after), and the text state after it."""
        if self.normalization == "none" or not text:
            return text, replace(
                cursor, started=cursor.started or bool(text), last=text[-1:] or cursor.last
            )
        keep = self.eos
        core = normalize(text, "letters", keep_lines=keep)  # no spaces at its edges
        lead, trail = _space_making(text[0], keep), _space_making(text[-1], keep)
        if not core:  # only spaces: owed before the next content
            return "", replace(cursor, pending=cursor.pending or lead or trail)
        out = (" " if cursor.started and (cursor.pending or lead) else "") + core
        return out, replace(cursor, started=True, pending=trail, last=core[-1])

    def _tokens(
        self, text: str, final: bool, cursor: Cursor
    ) -> tuple[np.ndarray | list[str], Cursor]:
        if self.level == "char":
            if text.isascii():
                return np.frombuffer(text.encode("ascii"), dtype=np.uint8), cursor
            raw = text.encode("utf-32-le", "surrogatepass")
            return np.frombuffer(raw, dtype=np.uint32), cursor
        text = cursor.carry + text
        carry = ""
        if not final:  # cut after the last whitespace: no word split between blocks
            cut = len(text)
            while cut and not text[cut - 1].isspace():
                cut -= 1
            text, carry = text[:cut], text[cut:]
        return tokenize(text, "word", eos=self.eos), replace(cursor, carry=carry)

    def items(self, cursor: Cursor | None = None) -> Iterator[Item]:
        """The items from ``cursor`` (default: the start) to the end of the source."""
        cursor = cursor or Cursor()
        for i in range(cursor.file, len(self.files)):
            if self.documents and not self.opens[i]:
                continue
            if i != cursor.file:
                cursor = Cursor(file=i)
            doc = self.documents and cursor.offset == 0
            for at, text, read, final in self._blocks(i, cursor):
                at = replace(
                    at,
                    started=cursor.started,
                    pending=cursor.pending,
                    last=cursor.last,
                    carry=cursor.carry,
                )
                out, cursor = self._normalized(text, at)
                tokens, cursor = self._tokens(out, final, cursor)
                if (
                    final
                    and self.eos
                    and not self.documents
                    and cursor.started
                    and cursor.last != "\n"
                ):
                    tokens = [*tokens, *tokenize("\n", "word", eos=True)]  # the last line's end
                yield Item(at, doc, tokens, read)
                doc = False
