"""The trainer's guards: checks that turn classic misuse into one error naming the fix.

- :func:`check_detached` and :func:`check_state_shapes`: the carried state must be
  the state entering the next window (no autograd graph left on it, the window's
  batch size);
- :func:`freed_graph_error`: a module that keeps its state between calls, met as
  the 'backward through the graph a second time' error;
- :func:`check_finite_weights`: under ``nonfinite="skip"``, weights that are
  already NaN/inf, which no skipped step can bring back.

The trainer calls them; they only inspect and raise.
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import ConfigError, NonFiniteError
from tbptt.tree import State, state_tensors
from tbptt.truncation import Strategy

__all__ = [
    "check_detached",
    "check_state_shapes",
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


def check_state_shapes(state: State, want: list[tuple[int, ...]], batch_size: int) -> None:
    """Refuse a carried state whose tensor shapes are not ``want``, those of a fresh state
    of ``batch_size`` streams (the batch changed between windows)."""
    got = [tuple(t.shape) for t in state_tensors(state)]
    if got != want:
        raise ConfigError(
            f"the carried state has shape {_shapes(got)} but a window of batch size "
            f"{batch_size} needs {_shapes(want)}; keep the batch size fixed between windows, "
            "or set trainer.state = None (or a state from model.initial_state(batch_size))"
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
    """Under ``nonfinite="skip"``: refuse to go on once the weights themselves are NaN/inf
    (an earlier step overflowed them), since skipping cannot bring them back.

    ``epoch`` and ``step``: the 1-based epoch and step the message names.
    """
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(
                f"parameter {name} is non-finite at epoch {epoch}, step "
                f"{step}: an earlier step overflowed the weights and skipping cannot "
                "recover; lower the learning rate or set a gradient clip, and resume from an "
                "earlier checkpoint",
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


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(s) for s in shapes) if shapes else "(no tensors)"
