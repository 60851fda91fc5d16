"""The trainer's guards: checks that turn classic misuse into one error naming the fix.

- :func:`check_detached`, :func:`check_state_shapes` and :func:`check_context_batch`:
  the carried state (and a lookback context) must be the state entering the next
  window (no autograd graph left on it; the structure, shapes and dtypes of a fresh
  state of the window's batch size);
- :func:`freed_graph_error`: a module that keeps its state between calls, met as
  the 'backward through the graph a second time' error;
- :func:`check_finite_weights`: weights that are already NaN/inf (checked when a
  step is skipped and at the end of every epoch), which no later step can bring back.

The trainer calls them; they only inspect and raise.
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import ConfigError, DataError, NonFiniteError
from tbptt.tree import State, state_tensors
from tbptt.truncation import Strategy

__all__ = [
    "check_detached",
    "check_state_shapes",
    "check_context_batch",
    "state_signature",
    "freed_graph_error",
    "check_finite_weights",
    "graph_holders",
]


def check_detached(state: State, strategy: Strategy) -> None:
    """Refuse a carried state that still holds an autograd graph (stored without
    ``detach()``), which ``strategy`` would cut at the window's start."""
    if not getattr(strategy, "keeps_graph", False):
        held = [t for t in state_tensors(state) if t.grad_fn is not None]
        if held:
            raise ConfigError(
                f"the carried state still holds an autograd graph (grad_fn "
                f"{type(held[0].grad_fn).__name__}) but {strategy.spec} cuts it at every "
                "window; store the state detached (trainer.state = detach_state(state)) or "
                "set trainer.state = None to start from a fresh state"
            )


def state_signature(state: State) -> tuple:
    """What a carried state must keep between windows: its nesting (tuples and lists
    alike) and every tensor's shape and dtype."""
    if isinstance(state, torch.Tensor):
        return (tuple(state.shape), state.dtype)
    if isinstance(state, (tuple, list)):
        return ("seq", tuple(state_signature(s) for s in state))
    if isinstance(state, dict):
        return ("map", tuple((k, state_signature(v)) for k, v in state.items()))
    return (type(state).__name__,)


def check_state_shapes(state: State, want: tuple, batch_size: int, *, what: str = "state") -> None:
    """Refuse a carried state whose structure, shapes or dtypes differ from ``want``, the
    :func:`state_signature` of a fresh state of ``batch_size`` streams (the batch changed
    between windows, or a state was set by hand from another model or dtype).

    ``what``: how the message names the state (``state``, ``lookback context's state``).
    """
    if state_signature(state) != want:
        raise ConfigError(
            f"the carried {what} is {_describe(state_signature(state))} but a window of batch size "
            f"{batch_size} needs {_describe(want)}; keep the batch size fixed between windows, "
            "or set trainer.state = None (or a state from model.initial_state(batch_size))"
        )


def check_context_batch(rows: torch.Tensor, batch_size: int) -> None:
    """Refuse a lookback context (TBPTT(k1, k2)) whose rows (T', B', ...) were stored for
    another batch size than the window's."""
    if rows.dim() < 2 or rows.shape[1] != batch_size:
        raise ConfigError(
            f"the lookback context holds rows of shape {tuple(rows.shape)} but a window of "
            f"batch size {batch_size} needs (T', {batch_size}, ...); keep the batch size fixed "
            "between windows, or set trainer.context = None"
        )


def check_carried(state: State, context, strategy: Strategy, want: tuple, batch_size: int) -> None:
    """Refuse a carried state that cannot be the state entering a window of ``batch_size``.

    Two classic mistakes: a state whose batch size differs from the window's (the batch
    changed between windows), and a state that still holds an autograd graph (stored
    without ``detach()``), which keeps every earlier window's graph alive and makes the
    next backward reach into freed graphs. ``want``: a fresh state's signature;
    ``context``: a lookback strategy's rows the window runs again (or None).
    """
    check_detached(state, strategy)
    check_state_shapes(state, want, batch_size)
    if context is not None:  # TBPTT(k1, k2): the rows the window runs again
        check_context_batch(context.inputs, batch_size)
        check_state_shapes(context.state, want, batch_size, what="lookback context's state")


def check_window_fits(stream, strategy: Strategy, rows: int) -> int:
    """The strategy's reference window length on ``stream``; refused when not one window
    fits its steps (an epoch of no window would train nothing)."""
    need = strategy.reference_length(stream.steps)
    if stream.steps < max(1, need):
        raise DataError(
            f"the training split has {rows} rows: {stream.batch_size} streams of "
            f"{stream.steps} steps, shorter than one {strategy.spec} window of {need} "
            "steps; use more data, a smaller batch size or a shorter window"
        )
    return need


def check_in_order(strategy: Strategy, sampling: str, needs_order: bool) -> None:
    """Online strategies carry sensitivities with the state, and adaptive truncation measures
    its bias on the stream: both follow it in order (``needs_order``), never random windows."""
    if needs_order and sampling == "random":
        raise ConfigError(
            f"{strategy.spec} follows the stream in order (its state is never cut, or its "
            "bias is measured on it), got random sampling; use sequential sampling",
            options=("train.sampling", "train.strategy"),
        )


def freed_graph_error(model: nn.Module) -> ConfigError:
    """The error to raise for 'backward through the graph a second time' from ``model``:
    it names the module attributes holding a graph, and the fix."""
    holders = graph_holders(model)
    where = (
        f" (module attribute{'s' if len(holders) > 1 else ''} {', '.join(holders[:3])} "
        "hold(s) tensors with an autograd graph)"
        if holders
        else ""
    )
    return ConfigError(
        "the model reuses a state from an earlier window whose graph was already freed"
        f"{where}; return the state from forward() and let the trainer carry it, or "
        "detach what the module keeps between calls (self.hidden = h.detach())"
    )


def check_finite_weights(model: nn.Module, *, epoch: int, step: int) -> None:
    """Refuse to go on once the weights themselves are NaN/inf (a step overflowed them):
    no later step can bring them back, whether non-finite steps stop or are skipped.

    ``epoch`` and ``step``: the 1-based epoch and step the message names.
    """
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(
                f"parameter {name} is non-finite at epoch {epoch}, step "
                f"{step}: a step overflowed the weights, and stopping at or skipping later "
                "steps cannot recover them; lower the learning rate or set a gradient clip, "
                "and resume from an earlier checkpoint",
                options=("train.lr", "train.clip"),
            )


def graph_holders(model: nn.Module) -> list[str]:
    """``module.attribute`` names of plain tensor attributes that carry an autograd graph."""
    found = []
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, torch.Tensor) and v.grad_fn is not None for v in values):
                found.append(f"{prefix}.{key}" if prefix else key)
    return found


def _describe(signature: tuple) -> str:
    """:func:`state_signature` in words: ``((1, 3, 4) float32, (1, 3, 4) float32)``."""
    if len(signature) == 2 and isinstance(signature[1], torch.dtype):
        return f"{signature[0]} {str(signature[1]).removeprefix('torch.')}"
    if signature[0] == "seq":
        return "(" + ", ".join(_describe(s) for s in signature[1]) + ")"
    if signature[0] == "map":
        return "{" + ", ".join(f"{k!r}: {_describe(s)}" for k, s in signature[1]) + "}"
    return str(signature[0])
