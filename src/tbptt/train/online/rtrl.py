"""Real-time recurrent learning (Williams & Zipser 1989) and SnAp-N (Menick et al. 2020).

RTRL carries the exact sensitivity of every stream's state to every parameter,
J_t = ds_t/dθ, and updates it every step::

    J_t = D_t + A_t J_{t-1}          A_t = ∂f/∂s_{t-1} (B, S, S),  D_t = ∂f/∂θ (B, S, P)

Two engines compute it:

- **closed form** (:mod:`tbptt.train.online.dense`) for the built-in RNN / GRU /
  LSTM stacks: A_t, D_t from the step's own gate activations, batched over
  streams, J (B, S, P_s) only for the parameters that reach the state;
- **torch.func** for every other model (a user's module, zoneout, tied weights):
  the model's own step as a function of a flat θ (``torch.func.functional_call``),
  one forward recorded by autograd, then B·S reverse products in batches
  (``is_grads_batched``; a cotangent e_i on stream b gives row i of both of that
  stream's Jacobians, the loss's cotangent the gradient), J (P, B, S). Plain
  autograd rather than a ``torch.func`` transform: on small models the transforms'
  per-op cost was most of the time (influence balancing: 2x).

The gradient of step t's loss is ∂l_t/∂θ + ∂l_t/∂s_{t-1} · J_{t-1} (the same
as ∂l_t/∂θ|_{s_t} + ∂l_t/∂s_t · J_t).

**Several rows at once** (the ``torch.func`` engine). Between two optimizer steps
(``rtrl:update_every=U``) the weights do not change, so the rows' gradients sum to the
gradient of the stretch's loss L = Σ_t l_t through everything before it, and the
same algebra holds for the stretch as for one step: with f the model run over the
U rows from s_{t0} (one call of the model, not U)::

    Σ_t g_t = ∂L/∂θ + ∂L/∂s_{t0} · J_{t0}            J_{t0+U} = ∂f/∂θ + ∂f/∂s_{t0} J_{t0}

backpropagation inside the stretch, exact sensitivities across stretches (the hybrid
of Williams & Zipser 1990 and Schmidhuber 1992): the same gradient as U single steps,
in one forward, one reverse pass and one batch of B·S reverse products instead of U
of each, at the cost of the stretch's activations (at most :data:`WINDOW_ROWS` rows at
a time; a reset starts a new stretch). It relies on the model contract: U rows in one
call are U steps of the recurrence.

**SnAp-N** (Menick et al. 2020) keeps J only on the entries (parameter p,
state unit i) that N steps of the recurrence can connect, starting from the
units p writes to directly: a fixed pattern M_N, M_1 = nz(D)ᵀ, M_{n+1} = M_n ∨
nz(A) M_n. As the paper defines it, the mask is part of the update and each
step's gradient reads the masked J::

    J̃_t = (D_t + A_t J̃_{t-1}) ⊙ M          gradient of step t: ∂l_t/∂θ|_{s_t} + ∂l_t/∂s_t · J̃_t

so it needs the loss as a function of the new state s_t (the readout): the
built-in models have one, and a user's module can give one (a ``readout(state)``
method on the module inside :class:`~tbptt.models.custom.CustomLM`, or
``readout(state, inputs)`` on the model). For an element-wise recurrence M_1
is closed under the recurrence and SnAp-1 is RTRL; once N steps connect every
unit, M_N is full and SnAp-N is RTRL again.

**snap-lagged:N** is the variant this package shipped as ``snap:N`` before:
the mask applied to J after each step's gradient, so the gradient of step t is
∂l_t/∂θ + ∂l_t/∂s_{t-1} · J̃_{t-1} and each loss sees one unmasked step of the
recurrence (D_t + A_t J̃_{t-1}). It is closer to RTRL than SnAp-N (one more
step of exact influence) for the same memory, and it needs no readout, so it
works on every model; docs/online.md compares both with RTRL.

Cost per step, B streams, S state values per stream, P parameters (P_s of them
reaching the state):

==============  ==========================================  ==========================
engine          time                                        memory (the guard's count)
==============  ==========================================  ==========================
closed form     A J: B S² P_s (per layer: its rows, the     2.25 B S P_s (J, the next
                columns of it and below) + O(B S P_s)       one, temporaries)
torch.func      B S reverse products of one step (~ 2 B S   5 B S P + 3 vjp chunks (J,
                c, c ≈ P B) + A J (B S² P)                  D, A J, their sum, D^T)
==============  ==========================================  ==========================

SnAp stores J dense and masked (its cost is RTRL's, its value the estimator's).
Exact RTRL that would not fit is refused before anything is allocated
(:func:`check_rtrl_memory`, counting the cgroup's limit as well as the machine's).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from tbptt.errors import ConfigError
from tbptt.train.budget import available_memory
from tbptt.train.memory import cgroup_headroom
from tbptt.train.objectives import Objective
from tbptt.train.online.base import OnlineEstimator, ReverseProducts
from tbptt.train.online.dense import dense_engine

__all__ = ["RTRL", "SnAp", "SnApLagged", "available_bytes", "check_rtrl_memory", "rtrl_bytes"]

CHUNK_VALUES = 1 << 22  # values per chunk of vmapped cotangents (32 MB of float64)
WINDOW_ROWS = 64  # the most rows the torch.func engine runs in one pass
# Measured peaks (tests/train/test_online_nonfinite.py, docs/online.md): the torch.func
# engine holds J, D, A J, their sum and the permuted D (about 5 copies of P x B x S values),
# and at small sizes its vmapped reverse products dominate instead (about 7 chunks of
# CHUNK_VALUES); the closed form J, the next J's buffer and the step's temporaries (about
# 2.25 copies of B x S x P_s).
COPIES = 5
CHUNK_COPIES = 7
CLOSED_COPIES = 2.25


def rtrl_bytes(
    num_parameters: int,
    batch_size: int,
    state_size: int,
    itemsize: int,
    copies: float = COPIES,
    floor: float | None = None,
) -> float:
    """Bytes RTRL's sensitivities take: about ``copies`` x P x B x S values, or ``floor``
    bytes if more (default: the torch.func engine's vmapped chunks when ``copies`` is its own)."""
    if floor is None:
        floor = CHUNK_COPIES * CHUNK_VALUES * itemsize if copies == COPIES else 0.0
    return max(copies * num_parameters * batch_size * state_size * itemsize, floor)


def available_bytes(device="cpu") -> int | None:
    """What a run may still allocate: the device's free memory and, on CPU, the room left
    under the process's cgroup limit (the smaller; None when neither is known)."""
    free = available_memory(device)
    if torch.device(device).type != "cpu":
        return free
    room = cgroup_headroom()
    if room is None:
        return free
    return room if free is None else min(free, room)


def check_rtrl_memory(
    num_parameters: int,
    batch_size: int,
    state_size: int,
    itemsize: int,
    device="cpu",
    *,
    available: int | None = None,
    copies: float = COPIES,
) -> float:
    """Refuse, before allocating, sensitivities that would not fit; returns the estimate.

    Raises:
        ConfigError: one line with the estimate, the memory available and what to do.
    """
    need = rtrl_bytes(num_parameters, batch_size, state_size, itemsize, copies)
    free = available if available is not None else available_bytes(device)
    if free is not None and need > 0.8 * free:
        raise ConfigError(
            f"exact RTRL needs about {need / 1e9:.1f} GB for its sensitivities "
            f"({num_parameters} parameters x {batch_size} streams x {state_size} state values "
            f"x {itemsize} bytes x {copies:g}) and {free / 1e9:.1f} GB are available (the "
            "smaller of the machine's free memory and the process's cgroup limit); use uoro "
            "(memory P + B S), a smaller hidden size or fewer streams (batch size)",
            options=("train.strategy", "model.hidden_size", "train.batch_size"),
        )
    return need


class RTRL(OnlineEstimator):
    """Exact forward-mode sensitivities (see the module docstring).

    Args:
        model: a recurrent model.
        objective: the loss of its outputs.
        available: bytes available for the sensitivities (default: measured).
        engine: ``"auto"`` (closed form where it covers the model) or ``"func"``.
    """

    name = "rtrl"
    mask_first = True  # SnAp: the mask before the step's gradient (Menick et al.)

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        *,
        available: int | None = None,
        engine: str = "auto",
    ):
        super().__init__(model, objective)
        if engine not in ("auto", "func"):
            raise ValueError(f"Expected engine 'auto' or 'func', got {engine!r}")
        self.available = available
        self.engine = dense_engine(model, self.fn) if engine == "auto" else None
        self.J: torch.Tensor | None = None  # (B, S, P_s) closed form, (P, B, S) torch.func
        self._spare: torch.Tensor | None = None  # the closed form's next J

    # -- sizes ---------------------------------------------------------------------------

    def memory_estimate(self, batch_size: int, state_size: int, itemsize: int) -> tuple:
        """(P counted, copies) of :func:`rtrl_bytes` for this engine (SnAp's mask: + S P)."""
        if self.engine is not None:
            return self.engine.columns, CLOSED_COPIES
        return self.fn.num_parameters, COPIES

    def check_memory(self, batch_size: int, state: torch.Tensor) -> float:
        P, copies = self.memory_estimate(batch_size, state.shape[1], state.element_size())
        return check_rtrl_memory(
            P,
            batch_size,
            state.shape[1],
            state.element_size(),
            state.device,
            available=self.available,
            copies=copies,
        )

    # -- run state -----------------------------------------------------------------------

    def _start(self, batch_size: int) -> None:
        self.check_memory(batch_size, self.s)
        S = self.s.shape[1]
        if self.engine is not None:
            self.J = self.s.new_zeros((batch_size, S, self.engine.columns))
            self._spare = torch.zeros_like(self.J)
        else:
            self.J = self.s.new_zeros((self.fn.num_parameters, batch_size, S))

    def _reset(self, keep: torch.Tensor) -> None:
        if self.engine is not None:
            self.J.mul_(keep[:, None, None])
        else:
            self.J = self.J * keep[None, :, None]

    def _clear(self) -> None:
        self.J = self._spare = None

    def _tensors(self) -> dict:
        return {"J": self.J}

    def _load(self, d: dict) -> None:
        self.J = d["J"]
        self._spare = torch.zeros_like(self.J) if self.engine is not None else None

    # -- the step ------------------------------------------------------------------------

    def rows_at_once(self, batch_size: int) -> int:
        """The ``torch.func`` engine takes a stretch of rows in one pass (module docstring)."""
        return WINDOW_ROWS if self.engine is None else 1

    def _mask(self, row) -> torch.Tensor | None:
        return None  # RTRL keeps every entry

    def _advance(self, s, row, generator):
        if self.engine is not None:
            mask = self._mask(row)
            loss, grad, s_new = self.engine.step(
                s, self.J, self._spare, row, mask=mask, published=self.mask_first
            )
            self.J, self._spare = self._spare, self.J
            return loss, grad, s_new
        theta = self.fn.theta()
        loss, grad, s_new, self.J = self._columns(theta, s, row, self.J)
        return loss, grad, s_new

    def _columns(self, theta, s, row, J):
        """One forward, then reverse-mode products: (loss, gradient (P,), s_t, J_t (P, B, S)).

        ``row``: one row, or a stretch of U rows at the same weights (module docstring).
        A cotangent e_i on stream b's new state gives row i of that stream's
        ∂f/∂θ (P,) and of its ∂f/∂s (S,) at once (streams do not mix), so B vmapped
        batches of S vjps give D (B, S, P) and A (B, S, S); then J_t = A J_{t-1} + D.
        The gradient is the lagged form, ∂l_t/∂θ + ∂l_t/∂s_{t-1} J_{t-1}.
        """
        B, S = s.shape
        P = theta.shape[0]
        U = row[0].shape[0]
        loss, s_new, leaves = self._recorded(theta, s, row)
        chunk = max(1, CHUNK_VALUES // (P + U * B * S))  # a stretch's graph per cotangent
        graph = ReverseProducts((loss, s_new), leaves, chunk)
        if B * B * S * S <= CHUNK_VALUES:  # every stream's rows and the loss's in one batch
            d_loss, d_s = self._cotangents(B, S, s)
            g_theta, g_s = graph.products(d_loss.to(loss.dtype), d_s, last=True)
            D = g_theta[1:].view(B, S, P)  # (1 + B S, P), (1 + B S, B, S) above
            A = g_s[1:].view(B, S, B, S).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (B, S, S)
            grad = g_theta[0] + torch.mv(J.reshape(P, -1), g_s[0].reshape(-1))  # (P,)
        else:  # stream by stream: S cotangents of (B, S) each
            one = torch.ones(1, dtype=loss.dtype, device=loss.device)
            g_theta, g_s = graph.products(one, torch.zeros_like(s_new).unsqueeze(0))
            grad = g_theta[0] + torch.mv(J.reshape(P, -1), g_s[0].reshape(-1))  # (P,)
            D = s.new_empty((B, S, P))
            A = s.new_empty((B, S, S))
            eye = torch.eye(S, dtype=s.dtype, device=s.device)
            zeros = torch.zeros(S, dtype=loss.dtype, device=loss.device)
            for b in range(B):
                cotangents = s.new_zeros((S, B, S))
                cotangents[:, b, :] = eye  # e_i on stream b, for every i
                D[b], ds = graph.products(zeros, cotangents, last=b == B - 1)  # (S, P), (S, B, S)
                A[b] = ds[:, b, :]  # (S_out, S_in)
        loss, s_new = loss.detach(), s_new.detach()
        # J_t = A J + D, stream by stream: (B, P, S) = D^T + J_b A^T, kept as (P, B, S)
        new = torch.baddbmm(D.transpose(1, 2), J.transpose(0, 1), A.transpose(1, 2)).transpose(0, 1)
        return loss, grad, s_new, new


class SnAp(RTRL):
    """SnAp-N as Menick et al. (2020) define it (see the module docstring).

    Args:
        order: N >= 1.

    Raises:
        ConfigError: the model has no readout (its loss as a function of the new state)
            and no closed-form engine; ``snap-lagged:N`` works on every model.
    """

    name = "snap"
    mask_first = True

    def __init__(self, model: nn.Module, objective: Objective, *, order: int, **kw):
        super().__init__(model, objective, **kw)
        self.order = order
        self.pattern: torch.Tensor | None = None  # closed form (S, P_s); torch.func (P, 1, S)
        self.recurrence: torch.Tensor | None = None  # (S, S) bool, nz(∂f/∂s)
        self.known: torch.Tensor | None = None  # (P,) bool: the column's pattern is found
        if self.engine is None and self.mask_first and not self.fn.has_readout():
            raise ConfigError(
                f"snap:{order} (SnAp-N as Menick et al. define it) takes each step's gradient "
                f"from the masked sensitivity of the new state, so it needs the loss as a "
                f"function of that state, which {type(model).__name__} does not give; add a "
                f"readout(state) method to your module (outputs of a step from its new state), "
                f"or use snap-lagged:{order} (the mask after each step's gradient)",
                options=("train.strategy",),
            )

    def _tensors(self) -> dict:
        return {
            "J": self.J,
            "pattern": self.pattern,
            "recurrence": self.recurrence,
            "known": self.known,
        }

    def _load(self, d: dict) -> None:
        super()._load(d)
        self.pattern = d["pattern"]
        self.recurrence, self.known = d["recurrence"], d["known"]

    def rows_at_once(self, batch_size: int) -> int:
        return 1  # the mask acts at every step

    def _mask(self, row) -> torch.Tensor:
        if self.pattern is None:
            self.pattern = self.engine.pattern(self.order, self.s.dtype, self.s.device)
        return self.pattern

    def _advance(self, s, row, generator):
        if self.engine is not None:
            return super()._advance(s, row, generator)
        theta = self.fn.theta()
        if self.pattern is None:
            self._find_pattern(theta, s, row)
        loss, grad, s_new, new = self._columns(theta, s, row, self.J)  # new: (P, B, S)
        # A parameter whose direct influence only shows with some inputs (an embedding row
        # of a token not seen yet) has an unknown column until then; its J column is still
        # zero (masked), so its first non-zero column is its direct pattern ∂f/∂θ_p.
        fresh = ~self.known & (new != 0).flatten(1).any(dim=1)  # (P,)
        if bool(fresh.any()):
            self.pattern[fresh] = self._closure((new[fresh] != 0).any(dim=1)).unsqueeze(1)
            self.known |= fresh
        self.J = new * self.pattern
        if self.mask_first:  # the published gradient: from s_t and the masked J_t
            inputs, targets, mask = row
            readout = lambda th, st: self.fn.readout_loss(th, st, inputs, targets, mask)  # noqa: E731
            _, vjp_fn = vjp(readout, theta, s_new)
            g_theta, g_s = vjp_fn(torch.ones_like(loss))
            grad = g_theta + torch.einsum("bs,pbs->p", g_s, self.J)
        return loss, grad, s_new

    def _closure(self, direct: torch.Tensor) -> torch.Tensor:
        """M_N (k, S) in J's dtype from M_1 = ``direct`` (k, S) bool."""
        reach = direct
        recur_t = self.recurrence.t().to(self.J.dtype)
        for _ in range(self.order - 1):
            reach = reach | ((reach.to(self.J.dtype) @ recur_t) != 0)
        return reach.to(self.J.dtype)

    def _find_pattern(self, theta, s, row, points: int = 2) -> None:
        """nz(∂f/∂s) and M_N at random weights and states (OR of ``points``).

        Random points, not the current ones, so a weight or state that happens to be zero
        (a zero initial state) does not hide an edge of the recurrence.
        """
        inputs, targets, mask = row
        g = torch.Generator().manual_seed(0)
        P, S = theta.shape[0], s.shape[1]
        direct = torch.zeros(P, S, dtype=torch.bool, device=s.device)
        recur = torch.zeros(S, S, dtype=torch.bool, device=s.device)
        state_of = lambda th, st: self.fn(th, st, inputs, targets, mask)[1]  # noqa: E731
        eye = torch.eye(S, dtype=s.dtype, device=s.device)
        for _ in range(points):
            th = theta + 0.1 * torch.randn(theta.shape, generator=g).to(theta)
            st = 0.5 * torch.randn(s.shape, generator=g).to(s)
            d = RTRL._columns(self, th, st, row, s.new_zeros((P, *s.shape)))[3]
            direct |= (d != 0).any(dim=1)  # (P, S)
            # ∂f/∂s is block-diagonal over streams: one tangent e_i for every stream at once
            cols = vmap(
                lambda v, th=th, st=st: jvp(
                    state_of, (th, st), (torch.zeros_like(th), v.expand_as(st))
                )[1],
                randomness="same",
            )(eye)  # (S_in, B, S_out)
            recur |= (cols != 0).any(dim=1).t()  # (S_out, S_in)
        self.recurrence = recur
        self.known = direct.any(dim=1)  # (P,)
        self.pattern = self._closure(direct).unsqueeze(1)  # (P, 1, S)


class SnApLagged(SnAp):
    """``snap-lagged:N``: SnAp's mask applied after each step's gradient (module docstring)."""

    name = "snap-lagged"
    mask_first = False
