"""What every online estimator shares: the carried state, resets, one step's loss gradient.

An estimator carries, per stream, the model's state s (B, S) and some form of
its sensitivity J = ds/dθ. :meth:`OnlineEstimator.step` consumes one row: it
returns the row's loss sum and the estimate of its gradient with respect to
θ (P,), ∂l_t/∂θ + ∂l_t/∂s_{t-1} J_{t-1}, and moves s and J one step on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import vjp

from tbptt.train.objectives import Objective
from tbptt.train.online.step import StepFunction
from tbptt.tree import State

__all__ = ["OnlineEstimator"]


class OnlineEstimator:
    """Base of :class:`~tbptt.train.online.rtrl.RTRL`, SnAp and UORO.

    Subclasses implement ``_start(batch_size)`` (fresh sensitivities),
    ``_reset(keep)`` (zero the sensitivities of the streams where ``keep`` (B,) is 0),
    ``_advance(s, row, generator) -> (loss, gradient (P,), new s)``, ``_clear()`` (drop every
    carried sensitivity, keep nothing a non-finite step may have poisoned) and
    ``_tensors()`` / ``_load(dict)`` for the run state.
    """

    name = ""

    def __init__(self, model: nn.Module, objective: Objective):
        self.fn = StepFunction(model, objective)
        self.s: torch.Tensor | None = None  # (B, S)

    @property
    def state(self) -> State | None:
        """The model's carried state (detached), in the model's own structure."""
        return None if self.s is None else self.fn.unflatten(self.s)

    def start(self, state: State) -> None:
        """Begin streams at ``state`` (the model's state structure), with zero sensitivity."""
        self.s = self.fn.flatten(state).detach()
        self._start(self.s.shape[0])

    def step(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        resets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One row: inputs (1, B[, F]), targets (1, B[, D]), mask/resets (1, B) bool.

        Returns (the row's loss sum, scalar; the gradient estimate of that sum, (P,)).
        """
        if self.s is None:
            raise RuntimeError("call start(state) before step()")
        if resets is not None and bool(resets.any()):
            keep = (~resets[0]).to(self.s.dtype)  # (B,)
            self.s = self.s * keep[:, None]
            self._reset(keep)
        loss, grad, s_new = self._advance(self.s, (inputs, targets, mask), generator)
        self.s = s_new.detach()
        return loss.detach(), grad.detach()

    def reset(self) -> None:
        """Forget the carried state and every sensitivity (the next window calls ``start``).

        For a step whose loss or gradient was not finite: its state and sensitivities
        may hold NaN or inf, and carried on they would poison every later step.
        """
        self.s = None
        self._clear()

    # -- pieces the estimators share -----------------------------------------------------

    def _loss_and_vjp(self, theta, s, row):
        """(loss, s_new, vjp_fn): one forward; ``vjp_fn((dloss, ds_new)) -> (dθ, ds)``."""
        inputs, targets, mask = row
        (loss, s_new), vjp_fn = vjp(lambda th, st: self.fn(th, st, inputs, targets, mask), theta, s)
        return loss, s_new, vjp_fn

    # -- run state -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The carried state and sensitivities, as CPU tensors (None before ``start``)."""
        if self.s is None:
            return {"s": None}
        tensors = {k: v.cpu() if v is not None else None for k, v in self._tensors().items()}
        return {"s": self.s.cpu(), **tensors}

    def load_state_dict(self, d: dict, device=None) -> None:
        if d.get("s") is None:
            self.s = None
            return
        self.s = d["s"].to(device)
        # the state's structure (for unflatten) comes from a fresh state of the model
        self.fn.initial(self.s.shape[0])
        self._load({k: v.to(device) if v is not None else None for k, v in d.items() if k != "s"})

    def _start(self, batch_size: int) -> None:
        raise NotImplementedError

    def _reset(self, keep: torch.Tensor) -> None:
        raise NotImplementedError

    def _advance(self, s, row, generator):
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _tensors(self) -> dict:
        raise NotImplementedError

    def _load(self, d: dict) -> None:
        raise NotImplementedError
