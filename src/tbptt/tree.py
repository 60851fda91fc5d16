"""Nested states and payloads: one walker for tensors in tuples, lists and dicts.

A recurrent state is a tensor or a (nested) tuple / list / dict of tensors:
(L, B, H) for GRU, ``(hidden, cell)`` for LSTM, whatever a user's module
returns. Checkpoint payloads are the same kind of tree with numbers and
strings among the leaves. Every walk over such a tree in tbptt goes through
this module:

    map_state(fn, state)       the same structure, fn applied to every tensor
    detach_state(state)        every tensor detached (a gradient gate xi = 0)
    state_tensors(state)       the tensors, in a fixed order
    flatten_state(state)       (tensors, spec) ... unflatten_state(spec, tensors)
    describe_state(state)      structure, shapes and dtypes, for error messages
    cpu_copy(tree)             detached CPU clones of every tensor, other leaves kept
    leaves(tree)               (dotted key, leaf) for every leaf
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = [
    "State",
    "map_state",
    "detach_state",
    "state_tensors",
    "flatten_state",
    "unflatten_state",
    "describe_state",
    "cpu_copy",
    "leaves",
]

State = Any  # a tensor, None, or a tuple / list / dict of states


def _map(fn: Callable[[Any], Any], tree: Any, strict: bool) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(_map(fn, s, strict) for s in tree)
    if isinstance(tree, list):
        return [_map(fn, s, strict) for s in tree]
    if isinstance(tree, dict):
        return {k: _map(fn, v, strict) for k, v in tree.items()}
    if tree is None or not strict:
        return tree
    raise TypeError(
        f"Expected a state made of tensors (or tuples, lists, dicts of them), got {type(tree).__name__}"
    )


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of a (nested) state, keeping its structure.

    Raises:
        TypeError: a leaf is neither a tensor nor None.
    """
    return _map(fn, state, strict=True)


def detach_state(state: State) -> State:
    """``detach()`` every tensor of a state (xi = 0)."""
    return map_state(torch.Tensor.detach, state)


def state_tensors(state: State) -> list[torch.Tensor]:
    """The tensors of a (nested) state, in a fixed order (depth first, dicts by insertion)."""
    return flatten_state(state)[0]


def flatten_state(state: State) -> tuple[list[torch.Tensor], Any]:
    """A state's tensors in a fixed order, and a spec that :func:`unflatten_state` rebuilds it from."""
    if isinstance(state, torch.Tensor):
        return [state], "T"
    if state is None:
        return [], None
    if isinstance(state, (tuple, list)):
        flat, specs = [], []
        for s in state:
            f, sp = flatten_state(s)
            flat += f
            specs.append((None, len(f), sp))
        return flat, (type(state), specs)
    if isinstance(state, dict):
        flat, specs = [], []
        for k, s in state.items():
            f, sp = flatten_state(s)
            flat += f
            specs.append((k, len(f), sp))
        return flat, (dict, specs)
    raise TypeError(
        f"Expected a state made of tensors (or tuples, lists, dicts of them), got {type(state).__name__}"
    )


def unflatten_state(spec: Any, flat: list[torch.Tensor]) -> State:
    """The state :func:`flatten_state` described by ``spec``, built from ``flat``."""
    if spec == "T":
        return flat[0]
    if spec is None:
        return None
    kind, specs = spec
    parts, i = [], 0
    for key, n, sp in specs:
        parts.append((key, unflatten_state(sp, flat[i : i + n])))
        i += n
    if kind is dict:
        return dict(parts)
    return kind(part for _, part in parts)


def describe_state(state: State) -> str:
    """``(tensor(2, 3, 4) float32, tensor(2, 3, 4) float32)``: structure, shapes and dtypes."""
    if isinstance(state, torch.Tensor):
        return f"tensor{tuple(state.shape)} {str(state.dtype).removeprefix('torch.')}"
    if state is None:
        return "None"
    if isinstance(state, tuple):
        return (
            "("
            + ", ".join(describe_state(s) for s in state)
            + ("," if len(state) == 1 else "")
            + ")"
        )
    if isinstance(state, list):
        return "[" + ", ".join(describe_state(s) for s in state) + "]"
    if isinstance(state, dict):
        return "{" + ", ".join(f"{k!r}: {describe_state(v)}" for k, v in state.items()) + "}"
    return type(state).__name__


def cpu_copy(tree: Any) -> Any:
    """A copy of nested containers with every tensor detached, cloned and moved to the CPU;
    other leaves (numbers, strings) are kept as they are."""
    return _map(lambda t: t.detach().to("cpu", copy=True), tree, strict=False)


def leaves(tree: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) for every leaf of nested dicts, lists and tuples (``a.b[0]``)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{key}[{i}]")
    else:
        yield key, tree
