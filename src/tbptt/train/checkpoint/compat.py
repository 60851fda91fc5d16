"""Whether a saved run may be continued: :func:`check_compatible` compares configurations."""

from __future__ import annotations

import logging
from typing import Any

from tbptt.errors import CheckpointError

__all__ = ["check_compatible", "flatten_keys", "same_value"]

log = logging.getLogger(__name__)


def flatten_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_keys(v, key))
        else:
            out[key] = v
    return out


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)  # NaN equals NaN here
    return a == b


def check_compatible(
    saved: dict, current: dict, *, ignore: tuple[str, ...] = (), source: str = "the checkpoint"
) -> None:
    """Refuse to continue a run whose configuration differs from the saved one.

    ``saved`` and ``current`` are nested dicts (``{"model": {...}, "train": {...}}``),
    compared key by key after flattening to dotted keys (``model.hidden_size``).
    Keys in ``ignore`` (dotted, or a prefix ending in ``.``) may differ. A key
    present on one side only is not compared: it is an option one version of
    tbptt has and the other lacks (new options default to the old behaviour).

    Raises:
        CheckpointError: one line naming every differing key and both values.
    """
    a, b = flatten_keys(saved), flatten_keys(current)

    def ignored(key: str) -> bool:
        return any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore)

    missing = object()
    diffs: list[str] = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        x, y = a.get(key, missing), b.get(key, missing)
        if x is missing or y is missing:
            log.info("%s: %s is set on one side only; not compared", source, key)
        elif not same_value(x, y):
            diffs.append(f"{key} is {x!r} there but {y!r} here")
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(
            f"{source} belongs to another run: {'; '.join(diffs[:3])}{more}; "
            "resume with the same settings, or start a new run in another directory"
        )
