"""One window forward and backward, and the gradient of a whole sequence under a strategy.

Shapes: inputs (T, B) or (T, B, F); targets (T, B) or (T, B, D); resets, mask (T, B)
bool; outputs (T, B, O). The loss of the outputs is the objective's
(:mod:`tbptt.train.objectives`; default: next-token cross-entropy).

:func:`run_window` is what the trainer and :func:`sequence_gradient` both run
for a window, so everything a :class:`~tbptt.truncation.Window` can ask for is
implemented once:

- **lookback** (TBPTT(k1, k2)): the window's own rows are preceded by the
  trailing rows of earlier windows (a :class:`Context`: their inputs and
  per-stream resets, and the detached state entering them), run again with
  their losses masked out, so the window's losses reach back that far;
- **checkpoint**: the rows are run in segments of that many steps, each under
  :class:`SegmentCheckpoint` (during the forward no graph is kept inside a
  segment, only the states at segment edges; each segment runs again during
  backward with the random state it first ran with, so dropout masks repeat),
  and each segment's loss is summed inside it so no (T, B, V) logits outlive
  their segment either. Gradients reach the parameters through ``.grad``
  (the segment's own backward accumulates there), so call ``backward()``, not
  ``torch.autograd.grad``, on a checkpointed window's loss;
- **resets**: per-stream "a document starts here" masks, passed to the model,
  which zeroes those streams' state before that step (no gradient crosses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tbptt.train.objectives import LanguageModel, Objective
from tbptt.tree import State, detach_state, flatten_state, map_state, unflatten_state
from tbptt.truncation import Strategy, Window

__all__ = [
    "Context",
    "SegmentCheckpoint",
    "WindowResult",
    "run_window",
    "window_loss",
    "sequence_gradient",
]


@dataclass
class Context:
    """The trailing rows a lookback window runs again.

    Attributes:
        state: the detached state entering the first row.
        inputs: (T', B, ...) the rows' inputs.
        resets: (T', B) bool, or None (no stream restarts in them).
    """

    state: State
    inputs: torch.Tensor
    resets: torch.Tensor | None = None

    def to(self, device) -> Context:
        move = lambda t: t.to(device)  # noqa: E731
        resets = self.resets.to(device) if self.resets is not None else None
        return Context(map_state(move, self.state), self.inputs.to(device), resets)

    def state_dict(self) -> dict:
        return {
            "state": map_state(lambda t: t.detach().cpu(), self.state),
            "inputs": self.inputs.cpu(),
            "resets": self.resets.cpu() if self.resets is not None else None,
        }

    @classmethod
    def from_state_dict(cls, d: dict | None, device=None) -> Context | None:
        if d is None:
            return None
        ctx = cls(d["state"], d["inputs"], d.get("resets"))
        return ctx.to(device) if device is not None else ctx


@dataclass
class WindowResult:
    """What :func:`run_window` returns.

    Attributes:
        loss_sum: scalar, the sum of the window's row losses (lookback rows excluded).
        state: the state after the window's last row (still attached to the graph).
        context: what the next window's lookback needs (None when the window asks for none).
    """

    loss_sum: torch.Tensor
    state: State
    context: Context | None


# -- pieces ----------------------------------------------------------------------------


def _call(model, inputs, state, gates, resets):
    # Models that know nothing of resets keep working when there are none.
    if resets is None:
        return model(inputs, state, gates)
    return model(inputs, state, gates, resets=resets)


class SegmentCheckpoint(torch.autograd.Function):
    """Activation checkpointing for one segment: ``run(*tensors) -> outputs``.

    Forward runs ``run`` without a graph and keeps only its input tensors (the
    state entering the segment) and the random-number state. Backward runs it
    again with a graph from detached copies of those inputs under the same
    random state, backpropagates the incoming gradients through that graph (the
    parameters' gradients accumulate in ``.grad``) and returns the inputs'
    gradients to the previous segment. ``anchor`` is a scalar that requires
    grad, so a backward node exists even when no input tensor requires grad.
    """

    @staticmethod
    def forward(ctx, run, anchor, *tensors):
        ctx.run = run
        ctx.cpu_rng = torch.get_rng_state()
        devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
        ctx.cuda_rng = {d: torch.cuda.get_rng_state(d) for d in devices}
        ctx.save_for_backward(*tensors)
        with torch.no_grad():
            return tuple(run(*tensors))

    @staticmethod
    def backward(ctx, *grads):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        with torch.random.fork_rng(devices=list(ctx.cuda_rng)):
            torch.set_rng_state(ctx.cpu_rng)
            for d, rng in ctx.cuda_rng.items():
                torch.cuda.set_rng_state(rng, d)
            with torch.enable_grad():
                outputs = ctx.run(*inputs)
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, *(i.grad if i.requires_grad else None for i in inputs))


def _forward_loss(model, objective, inputs, targets, mask, state, gates, resets, segment: int):
    """(sum of row losses, final state) over rows (T, B); checkpointed when ``segment`` > 0."""
    T = inputs.shape[0]
    if segment <= 0 or not torch.is_grad_enabled():
        outputs, state = _call(model, inputs, state, gates, resets)  # (T, B, O)
        return objective.loss_sum(outputs, targets, mask), state
    total = None
    for start in range(0, T, segment):
        stop = min(T, start + segment)
        g = gates[start:stop] if gates is not None else None
        r = resets[start:stop] if resets is not None else None
        m = mask[start:stop] if mask is not None else None
        flat, spec = flatten_state(state)

        def run(*tensors, x=inputs[start:stop], y=targets[start:stop], m=m, g=g, r=r, spec=spec):
            outputs, new_state = _call(model, x, unflatten_state(spec, list(tensors)), g, r)
            new_flat, new_spec = flatten_state(new_state)
            run.spec = new_spec
            return (objective.loss_sum(outputs, y, m), *new_flat)

        # The anchor requires grad so a backward node is recorded even when the incoming
        # state does not (a fresh or detached state).
        anchor = torch.ones((), requires_grad=True)
        loss, *new_flat = SegmentCheckpoint.apply(run, anchor, *flat)
        state = unflatten_state(run.spec, new_flat)
        total = loss if total is None else total + loss
    return total, state


# -- one window ------------------------------------------------------------------------


def run_window(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: State | None,
    window: Window,
    *,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    context: Context | None = None,
    objective: Objective | None = None,
) -> WindowResult:
    """Run one window (forward only; the caller calls backward).

    Args:
        model: a :class:`~tbptt.models.RecurrentModel`:
            ``model(inputs, state, gates[, resets=]) -> (outputs (T, B, O), state)``.
        inputs: (T, B) ids or (T, B, F) features, the window's own rows (T = ``window.length``).
        targets: (T, B) ids or (T, B, D) values.
        state: the state entering the window, used as it is (the caller detaches or resets it).
        window: the plan; its gates, lookback and checkpoint are honoured here.
        resets: (T, B) bool, True where a stream starts afresh before that row.
        mask: (T, B) bool, the loss counts only where True (None: everywhere).
        context: the trailing rows of earlier windows (for ``window.lookback``); None at a
            stream start. When the window has a lookback and a context, ``state`` is not used:
            the run starts from the context's stored state.
        objective: the loss (default: next-token cross-entropy).

    Returns:
        :class:`WindowResult`.
    """
    objective = objective or _LM
    gates = list(window.gates) if window.gates is not None else None
    lookback = 0
    if window.lookback > 0 and context is not None and context.inputs.shape[0] > 0:
        c_inputs, c_resets, start_state = context.inputs, context.resets, context.state
        excess = c_inputs.shape[0] - window.lookback
        if excess > 0:  # a context longer than asked for: advance its state without a graph
            with torch.no_grad():
                r = c_resets[:excess] if c_resets is not None else None
                _, start_state = _call(model, c_inputs[:excess], start_state, None, r)
            c_inputs = c_inputs[excess:]
            c_resets = c_resets[excess:] if c_resets is not None else None
        lookback = c_inputs.shape[0]
        state = detach_state(start_state)
        before, own = (lookback, inputs.shape[1]), inputs.shape[:2]
        if c_resets is not None or resets is not None:
            c_resets = c_resets if c_resets is not None else _falses(before, inputs.device)
            w_resets = resets if resets is not None else _falses(own, inputs.device)
            resets = torch.cat([c_resets, w_resets])  # (lookback + T, B)
        # The lookback rows run again for their state only: their losses are masked out.
        w_mask = mask if mask is not None else ~_falses(own, inputs.device)
        mask = torch.cat([_falses(before, inputs.device), w_mask])  # (lookback + T, B)
        targets = torch.cat([targets.new_zeros((lookback, *targets.shape[1:])), targets])
        inputs = torch.cat([c_inputs, inputs])  # (lookback + T, B, ...)
        if gates is not None:
            gates = [1.0] * lookback + gates
    if window.lookback <= 0:
        loss_sum, state = _forward_loss(
            model, objective, inputs, targets, mask, state, gates, resets, window.checkpoint
        )
        return WindowResult(loss_sum, state, None)

    def part(rows: slice, state, gates):
        return _forward_loss(
            model,
            objective,
            inputs[rows],
            targets[rows],
            mask[rows] if mask is not None else None,
            state,
            gates,
            resets[rows] if resets is not None else None,
            window.checkpoint,
        )

    # Split the run where the next window's context starts, to store the state entering it.
    keep = min(window.lookback, inputs.shape[0])
    split = inputs.shape[0] - keep
    loss_sum = None
    if split > 0:
        loss_sum, state = part(slice(0, split), state, gates[:split] if gates else None)
    next_context = Context(
        detach_state(state), inputs[split:], resets[split:] if resets is not None else None
    )
    # gates[split] sits on the edge into the tail: the tail call applies it to the incoming state.
    tail_loss, state = part(slice(split, None), state, gates[split:] if gates else None)
    loss_sum = tail_loss if loss_sum is None else loss_sum + tail_loss
    return WindowResult(loss_sum, state, next_context)


def _falses(shape, device) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.bool, device=device)


_LM = LanguageModel()


def window_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: State | None,
    window: Window,
    *,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objective: Objective | None = None,
) -> tuple[torch.Tensor, State]:
    """Run one window and return (sum of row losses, final state).

    ``state`` is used as it is (the caller detaches or resets it); the
    window's gates shape the gradient inside.
    """
    result = run_window(
        model, inputs, targets, state, window, resets=resets, mask=mask, objective=objective
    )
    return result.loss_sum, result.state


def sequence_gradient(
    model: nn.Module,
    strategy: Strategy,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    state: State | None = None,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objective: Objective | None = None,
) -> list[torch.Tensor]:
    """The strategy's estimate of the gradient of the sequence's mean row loss, at fixed weights.

    Runs the windows the strategy plans over inputs (T, B[, F]), carrying (detached)
    state between them (and, for lookback strategies, the context), and sums the
    windows' gradients without any optimizer step. Every row's loss is
    divided by T * B, so for ``full`` this is the exact gradient of the mean
    loss, and for an unbiased strategy its expectation is. (Learning-rate
    factors and per-window loss lengths only rescale an optimizer step; at
    fixed weights every row keeps the weight 1 / (T B).) ``resets`` (T, B)
    bool marks per-stream restarts, ``mask`` (T, B) bool the rows whose loss
    counts. Returns one tensor per parameter that requires grad
    (``model.parameters()`` order); the parameters' ``.grad`` are left as they were.
    """
    generator = generator or torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    # Accumulate with backward() into .grad, not autograd.grad(): a checkpointed segment
    # runs its own backward, which reaches the parameters only through .grad.
    kept = [p.grad for p in params]
    for p in params:
        p.grad = None
    total_steps, batch_size = inputs.shape[:2]
    scale = 1.0 / (total_steps * batch_size)
    position = 0
    context = None
    while position < total_steps:
        window = strategy.plan(total_steps - position, generator)
        rows = slice(position, position + window.length)
        if window.reset or state is None:
            state = _fresh_state(model, batch_size)
            context = None
        result = run_window(
            model,
            inputs[rows],
            targets[rows],
            detach_state(state),
            window,
            resets=resets[rows] if resets is not None else None,
            mask=mask[rows] if mask is not None else None,
            context=context,
            objective=objective,
        )
        (result.loss_sum * scale).backward()
        state, context = detach_state(result.state), result.context
        position = rows.stop
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, g in zip(params, kept):
        p.grad = g
    return grads


def _fresh_state(model: nn.Module, batch_size: int) -> State | None:
    init = getattr(model, "initial_state", None)
    return init(batch_size) if init is not None else None
