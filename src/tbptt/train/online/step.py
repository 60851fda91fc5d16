"""One step of any recurrent model as a pure function of flat parameters and a flat state.

The generic online estimators differentiate the model's step with respect to its
parameters and its incoming state (batched reverse products recorded by autograd;
SnAp's pattern search with ``torch.func``), so they need the step as a function of
flat tensors, not a module::

    loss_t, s_t = step(θ, s_{t-1}, rows)

θ (P,) is every trainable parameter of the model, flattened in
``model.named_parameters()`` order; s (B, S) is the state of the B streams,
each stream's tensors flattened into S numbers (an LSTM's hidden and cell of
every layer, a user module's nested state). The model runs through
``torch.func.functional_call`` on a window of rows (one, or the U rows between two
optimizer steps), so every :class:`~tbptt.models.RecurrentModel` works: the built-in
RNN/GRU/LSTM (on its autograd step path, which every mode of AD can differentiate)
and a user's :class:`~tbptt.models.custom.StatefulModule`.

Shapes: inputs (U, B) or (U, B, F), targets (U, B) or (U, B, D), mask (U, B)
bool or None; the state's batch is on dimension ``batch_dim`` of every tensor
(the model's own ``batch_dim``, default -2).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.func import functional_call

from tbptt.train.objectives import Objective
from tbptt.tree import State, flatten_state, unflatten_state

__all__ = ["StepFunction", "readout"]


def _batch_dim(model: nn.Module) -> int:
    for m in (model, getattr(model, "core", None)):
        if m is not None and hasattr(m, "batch_dim"):
            return int(m.batch_dim)
    return -2  # (L, B, H) and (B, H) states


def readout(model: nn.Module, state: State, inputs: torch.Tensor) -> torch.Tensor | None:
    """The outputs (1, B, O) of a step whose new state is ``state``, from the state (and the
    step's inputs (1, B[, F])) alone; None when the model does not say how.

    The built-in models read their last layer (a linear-recurrent LRU layer also reads its
    input, through the layers below); a :class:`~tbptt.models.custom.CustomLM` whose module
    has ``readout(state) -> (B, H)`` puts its head behind it; any model may define
    ``readout(state, inputs) -> (1, B, O)`` itself.
    """
    from tbptt.models.custom import CustomLM
    from tbptt.models.lm import RecurrentNet
    from tbptt.models.minimal import LinearRecurrent

    if isinstance(model, RecurrentNet):
        rec = model.recurrent
        if isinstance(rec, LinearRecurrent):
            x = model.embed(inputs)  # (1, B, I)
            H = rec.hidden_size
            for layer in range(rec.num_layers):
                h = state[layer].unsqueeze(0)  # (1, B, S)
                if rec.kind == "lru":
                    x = rec.layers[layer].readout(torch.complex(h[..., :H], h[..., H:]), x)
                else:
                    x = h
        else:
            h = state[0] if rec.kind == "lstm" else state
            x = h[-1].unsqueeze(0)  # (1, B, H)
        return model.head(model.drop_output(x))
    if isinstance(model, CustomLM) and hasattr(model.core.module, "readout"):
        return model.head(model.core.module.readout(state)).reshape(1, *inputs.shape[1:2], -1)
    own = getattr(model, "readout", None)
    if callable(own):
        return own(state, inputs)
    return None


class _Readout(nn.Module):
    """``model``'s readout as a module, so ``functional_call`` can swap its parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, state, inputs):
        return readout(self.model, state, inputs)


class StepFunction:
    """``model`` as ``(θ, s, row) -> (loss sum over the row's streams, new s)``.

    Args:
        model: a recurrent model (``model(inputs, state, gates) -> (outputs, state)``,
            ``initial_state(batch_size)``).
        objective: the loss of the outputs.
    """

    def __init__(self, model: nn.Module, objective: Objective):
        self.model = model
        self.objective = objective
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.num_parameters = sum(self.sizes)  # P
        self.batch_dim = _batch_dim(model)
        accepts = inspect.signature(model.forward).parameters
        # The built-in layers' per-step loop recorded by autograd (forward-mode AD reaches it).
        self._kwargs = {"path": "autograd"} if "path" in accepts else {}
        self._spec = None  # the state's structure, from the first flatten
        self._leaf_shapes: list[tuple[int, ...]] = []  # each leaf without its batch dimension
        self._leaf_dims: list[int] = []
        self._readout: _Readout | None = None

    # -- parameters ---------------------------------------------------------------------

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters, in θ's order."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def theta(self) -> torch.Tensor:
        """θ (P,): the current weights, detached."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def unflatten_parameters(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: t.view(shape)
            for n, t, shape in zip(self.names, theta.split(self.sizes), self.shapes)
        }

    def split_gradient(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A (P,) vector as one tensor per parameter (``parameters()`` order)."""
        return [t.view(shape) for t, shape in zip(flat.split(self.sizes), self.shapes)]

    # -- state --------------------------------------------------------------------------

    def flatten(self, state: State) -> torch.Tensor:
        """s (B, S): each stream's state tensors flattened and concatenated."""
        tensors, spec = flatten_state(state)
        dims = [self.batch_dim % t.dim() for t in tensors]
        moved = [t.movedim(d, 0) for t, d in zip(tensors, dims)]  # (B, ...) each
        if self._spec is None:
            self._spec = spec
            self._leaf_dims = dims
            self._leaf_shapes = [tuple(t.shape[1:]) for t in moved]
        B = moved[0].shape[0]
        return torch.cat([t.reshape(B, -1) for t in moved], dim=1)  # (B, S)

    def unflatten(self, flat: torch.Tensor) -> State:
        """The model's state from s (B, S) (the inverse of :meth:`flatten`)."""
        sizes = [math.prod(shape) for shape in self._leaf_shapes]
        B = flat.shape[0]
        parts = [
            t.reshape(B, *shape).movedim(0, d)
            for t, shape, d in zip(flat.split(sizes, dim=1), self._leaf_shapes, self._leaf_dims)
        ]
        return unflatten_state(self._spec, parts)

    def initial(self, batch_size: int) -> torch.Tensor:
        """s_0 (B, S): the model's initial state, flattened."""
        return self.flatten(self.model.initial_state(batch_size))

    # -- the readout --------------------------------------------------------------------

    def has_readout(self) -> bool:
        """Whether the model's outputs can be computed from its new state (:func:`readout`)."""
        from tbptt.models.custom import CustomLM
        from tbptt.models.lm import RecurrentNet

        if isinstance(self.model, RecurrentNet):
            return True
        if isinstance(self.model, CustomLM):
            return hasattr(self.model.core.module, "readout")
        return callable(getattr(self.model, "readout", None))

    def readout_loss(self, theta, flat_state, inputs, targets, mask) -> torch.Tensor:
        """The row's loss sum from θ (P,) and the new state s_t (B, S) (:func:`readout`)."""
        if self._readout is None:
            self._readout = _Readout(self.model)
        params = {f"model.{n}": t for n, t in self.unflatten_parameters(theta).items()}
        outputs = functional_call(self._readout, params, (self.unflatten(flat_state), inputs))
        return self.objective.loss_sum(outputs, targets, mask)

    # -- the step -----------------------------------------------------------------------

    def __call__(
        self,
        theta: torch.Tensor,
        flat_state: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum of the row, s_t (B, S)) from θ (P,), s_{t-1} (B, S) and one row."""
        params = self.unflatten_parameters(theta)
        state = self.unflatten(flat_state)
        outputs, new_state = functional_call(
            self.model, params, (inputs, state, None), self._kwargs
        )  # (1, B, O)
        loss = self.objective.loss_sum(outputs, targets, mask)
        return loss, self.flatten(new_state)
