"""What every online estimator shares: the carried state, resets, one step's loss gradient.

An estimator carries, per stream, the model's state s (B, S) and some form of
its sensitivity J = ds/dθ. :meth:`OnlineEstimator.step` consumes one row: it
returns the row's loss sum and the estimate of its gradient with respect to
θ (P,), ∂l_t/∂θ + ∂l_t/∂s_{t-1} J_{t-1}, and moves s and J one step on.
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.train.objectives import Objective
from tbptt.train.online.step import StepFunction
from tbptt.tree import State

__all__ = ["OnlineEstimator", "ReverseProducts", "stretches"]


def stretches(T: int, resets: torch.Tensor | None, longest: int) -> list[tuple[int, int]]:
    """Rows 0..T split into (start, end) stretches of at most ``longest`` rows, each reset
    row (``resets`` (T, B) bool, any stream) starting a stretch."""
    cuts = [0] + ([t for t in range(1, T) if bool(resets[t].any())] if resets is not None else [])
    out = []
    for a, b in zip(cuts, [*cuts[1:], T]):
        out += [(i, min(i + longest, b)) for i in range(a, b, longest)]
    return out


class ReverseProducts:
    """Batched reverse products of a recorded graph: for cotangents (N, ...) of its
    ``outputs``, the products with respect to its ``inputs``, (N, ...) each, ``chunk``
    cotangents at a time (``is_grads_batched``); the graph is freed by the ``last`` call."""

    def __init__(self, outputs, inputs, chunk: int):
        self.outputs, self.inputs, self.chunk = outputs, inputs, chunk

    def products(self, *cotangents, last: bool = False):
        N = cotangents[0].shape[0]
        parts = []
        for a in range(0, N, self.chunk):
            parts.append(
                torch.autograd.grad(
                    self.outputs,
                    self.inputs,
                    [c[a : a + self.chunk] for c in cotangents],
                    retain_graph=not (last and a + self.chunk >= N),
                    is_grads_batched=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
            )
        return tuple(torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts))


class OnlineEstimator:
    """Base of :class:`~tbptt.train.online.rtrl.RTRL`, SnAp and UORO.

    Subclasses implement ``_start(batch_size)`` (fresh sensitivities),
    ``_reset(keep)`` (zero the sensitivities of the streams where ``keep`` (B,) is 0),
    ``_advance(s, row, generator) -> (loss, gradient (P,), new s)`` (a row of one step, or of
    up to :meth:`rows_at_once` steps where the estimator says it can), ``_clear()`` (drop every
    carried sensitivity, keep nothing a non-finite step may have poisoned) and
    ``_tensors()`` / ``_load(dict)`` for the run state.
    """

    name = ""

    def __init__(self, model: nn.Module, objective: Objective):
        self.fn = StepFunction(model, objective)
        self.s: torch.Tensor | None = None  # (B, S)
        self._cotangent_key = self._cotangent = None  # :meth:`_cotangents`, made once per shape

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
        grad, loss = self.rows(inputs, targets, mask=mask, resets=resets, generator=generator)
        return loss, grad

    def rows(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        resets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (T, B[, F]) one after another from the carried state, at the same weights:
        (the sum of the rows' gradient estimates (P,), the rows' loss sum). ``mask``,
        ``resets`` (T, B) bool.

        The result is the sum of :meth:`step` over the rows. An estimator that can take
        several rows in one pass says how many (:meth:`rows_at_once`); a stretch never
        holds a reset after its first row.
        """
        if self.s is None:
            raise RuntimeError("call start(state) before step() or rows()")
        T = inputs.shape[0]
        longest = self.rows_at_once(inputs.shape[1])
        total = loss_sum = None
        for a, b in stretches(T, resets, longest):
            if resets is not None and bool(resets[a].any()):
                self._restart(resets[a])
            row = (inputs[a:b], targets[a:b], mask[a:b] if mask is not None else None)
            loss, grad, s_new = self._advance(self.s, row, generator)
            self.s = s_new.detach()
            total = grad.detach() if total is None else total + grad.detach()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        return total, loss_sum

    def rows_at_once(self, batch_size: int) -> int:
        """How many rows :meth:`_advance` may take in one call (1: one row at a time)."""
        return 1

    def _restart(self, resets: torch.Tensor) -> None:
        """Zero the state and sensitivities of the streams where ``resets`` (B,) is set."""
        keep = (~resets).to(self.s.dtype)  # (B,)
        self.s = self.s * keep[:, None]
        self._reset(keep)

    def reset(self) -> None:
        """Forget the carried state and every sensitivity (the next window calls ``start``).

        For a step whose loss or gradient was not finite: its state and sensitivities
        may hold NaN or inf, and carried on they would poison every later step.
        """
        self.s = None
        self._clear()

    # -- pieces the estimators share -----------------------------------------------------

    def _cotangents(self, B: int, S: int, like: torch.Tensor, free: int = 0, every: bool = True):
        """Cotangents for :class:`ReverseProducts` of (loss, s_new): (d_loss (N,), d_s (N, B, S)),
        N = 1 + ``free`` (+ B S with ``every``): row 0 the loss's (1, 0), then ``free`` zero
        rows the caller fills, then e_k on every state value (stream b, unit i at 1 + free +
        b S + i). Made once per shape and reused (a caller writes its free rows each step)."""
        key = (B, S, free, every, like.dtype, like.device)
        if self._cotangent_key != key:
            n = B * S if every else 0
            d_loss = like.new_zeros(1 + free + n)
            d_loss[0] = 1.0
            d_s = like.new_zeros(1 + free + n, B * S)
            d_s[1 + free :].fill_diagonal_(1.0)
            self._cotangent_key, self._cotangent = key, (d_loss, d_s.view(-1, B, S))
        return self._cotangent

    def _recorded(self, theta, s, row):
        """One forward of ``row`` from θ (P,) and s (B, S) as autograd leaves, recorded by
        autograd (no ``torch.func`` transform: its per-op cost dominates small models):
        (loss, s_new, (θ leaf, s leaf))."""
        inputs, targets, mask = row
        with torch.enable_grad():
            th, st = theta.detach().requires_grad_(True), s.detach().requires_grad_(True)
            loss, s_new = self.fn(th, st, inputs, targets, mask)
        return loss, s_new, (th, st)

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
