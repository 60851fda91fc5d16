"""Metrics as JSON lines: one object per line, flushed as written, readable by any script."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "read_metrics"]


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity: write them as strings a reader can still parse.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Append records to a JSON-lines file (or keep them in memory when ``path`` is None)."""

    def __init__(self, path: str | Path | None, *, append: bool = False):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = []
        self._file = (
            open(self.path, "a" if append else "w", encoding="utf-8") if self.path else None
        )

    def write(self, record: dict) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a JSON-lines metrics file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
