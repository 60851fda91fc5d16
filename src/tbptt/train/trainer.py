"""The training loop: the only place that calls ``backward()`` and ``optimizer.step()``.

Per epoch, until the stream is exhausted::

    window = strategy.plan(steps left, generator)       # length, gates, reset, lr factor
    batch  = stream.next(window.length)                 # inputs, targets, resets, mask (T, B, ...)
    state  = zeros if batch.reset or window.reset else detach(carried state)
    outputs, state = model(batch.inputs, state, window.gates, resets=batch.resets)
                    # via engine.run_window: lookback (k1k2), checkpointing, per-stream resets
    loss = objective.loss_sum(outputs, batch.targets, batch.mask) / (B * K)
                    # K: window.loss_length or the strategy's reference_length
    loss.backward(); clip by global norm; check finite; optimizer.step()
    carried state = detach(state)

The run's whole state -- model, optimizer, carried hidden state, stream
position, epoch and step counters, and every random generator -- is returned
by :meth:`Trainer.state_dict` so a run can be checkpointed and resumed exactly.
Saving and restoring it is :mod:`tbptt.train.runstate`; the checks that the
carried state and the weights are sound are :mod:`tbptt.train.guards`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from tbptt.data.streams import RandomStream, SequentialStream, StreamData, as_stream_data
from tbptt.errors import ConfigError, NonFiniteError
from tbptt.train.adaptive import adapt
from tbptt.train.budget import check_full_memory
from tbptt.train.config import TrainConfig, build_optimizer, scheduled_lr
from tbptt.train.engine import Context, run_window
from tbptt.train.evaluate import evaluate, validation_batch
from tbptt.train.guards import (
    check_carried,
    check_finite_weights,
    check_in_order,
    check_window_fits,
    freed_graph_error,
    state_signature,
)
from tbptt.train.metrics import MetricsWriter
from tbptt.train.objectives import Objective, default_objective, make_objective
from tbptt.train.online import build_estimator, online_window
from tbptt.train.runstate import RunState
from tbptt.tree import State, detach_state
from tbptt.truncation import Strategy, Window, parse_strategy
from tbptt.truncation.adaptive import AdaptiveTruncation
from tbptt.truncation.online import OnlineStrategy

__all__ = ["Trainer", "MEASURED_FIELDS"]

# Metrics fields measured from the machine (wall clock, memory), not computed from the
# run: two runs of the same seed -- or a run and its resumed copy -- differ only in these.
MEASURED_FIELDS = frozenset({"seconds", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb"})

log = logging.getLogger(__name__)


class Trainer(RunState):
    """Trains ``model`` on a stream under a truncation strategy, for an objective.

    Args:
        model: a :class:`~tbptt.models.RecurrentModel` (``model(inputs, state, gates,
            *, resets) -> (outputs, state)`` and ``initial_state(batch_size)``), e.g.
            :class:`tbptt.models.RecurrentLM` or your module in a
            :class:`~tbptt.models.custom.StatefulModule`.
        train: the training split, a :class:`~tbptt.data.StreamData` (token ids or
            float features, next-token or aligned targets) or a (N,) token tensor.
            Where its ``starts`` mark documents, series or episodes, each window
            carries a (T, B) ``resets`` mask and every stream resets its state at its
            own boundaries; its ``mask`` says which rows' losses count.
        valid: the validation split, the same way (may be empty: no evaluation).
        config: the options.
        strategy: the truncation strategy (default: parsed from ``config.strategy``).
        objective: the loss and metrics, an :class:`~tbptt.train.objectives.Objective`,
            a registry name or a per-row loss function (default: next-token
            cross-entropy for a next-token split, classification for integer
            targets, regression for float targets).
        metrics: where step and epoch records go (None: kept in memory only).

    The run's state is saved and restored by :meth:`state_dict` and
    :meth:`load_state_dict` (from :class:`~tbptt.train.runstate.RunState`).
    """

    def __init__(
        self,
        model: nn.Module,
        train: StreamData | torch.Tensor,
        valid: StreamData | torch.Tensor,
        config: TrainConfig,
        *,
        strategy: Strategy | None = None,
        objective: Objective | str | Callable | None = None,
        metrics: MetricsWriter | None = None,
    ):
        config.check()
        self.config = config
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        if strategy is None:
            strategy = parse_strategy(config.strategy)
        elif strategy.spec != config.strategy:
            raise ConfigError(
                f"the strategy {strategy.spec} differs from the configuration's "
                f"{config.strategy}; build the TrainConfig with strategy=strategy.spec"
            )
        self.strategy: Strategy = strategy
        self.generator = torch.Generator().manual_seed(config.seed)
        split = as_stream_data(train).to(self.device)
        valid = as_stream_data(valid)
        self.objective: Objective = (
            make_objective(objective) if objective is not None else default_objective(split)
        )
        if config.sampling == "random":
            self.stream = RandomStream(split, config.batch_size, self.generator)
        else:
            self.stream = SequentialStream(split, config.batch_size)
        self.reference_length = check_window_fits(self.stream, self.strategy, len(split))
        # A full-sequence window whose graph cannot fit is refused before the first step.
        check_full_memory(self.model, self.strategy, self.stream, objective=self.objective)
        self.optimizer = build_optimizer(config, self.model.parameters())
        # Online strategies carry sensitivities with the state (an exact RTRL that cannot fit
        # is refused here, before the first step); they and adaptive truncation need the
        # stream in order.
        in_order = isinstance(strategy, (OnlineStrategy, AdaptiveTruncation))
        check_in_order(strategy, config.sampling, in_order)
        self.online = (
            build_estimator(strategy, self.model, self.objective, batch_size=config.batch_size)
            if isinstance(strategy, OnlineStrategy)
            else None
        )
        self.metrics = metrics or MetricsWriter(None)
        self.valid_batch = validation_batch(split, valid, config.eval_batch_size, self.device)
        self.state: State | None = None
        self._state_shapes: dict[int, tuple] = {}  # batch size -> a fresh state's signature
        # Lookback strategies (TBPTT(k1, k2)): the trailing rows the next window runs again.
        self.context: Context | None = None
        self._zero_counters()  # epoch, step, skipped and the epoch's sums (RunState)

    # -- one step ----------------------------------------------------------------------

    def train_step(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        window: Window,
        reset: bool,
        *,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict:
        """Forward, backward, clip and step on one window; returns its metrics record.

        ``resets`` (T, B) bool: per-stream document starts inside the window;
        ``mask`` (T, B) bool: the rows whose loss counts (None: all).
        """
        model, opt = self.model, self.optimizer
        model.train()
        batch_size = inputs.shape[1]
        if self.online is not None:  # rtrl, uoro, snap: the gradient carried forward in time
            loss_sum, state, context = self._online_gradient(
                inputs, targets, window, reset, resets, mask
            )
        else:
            loss_sum, state, context = self._window_gradient(
                inputs, targets, window, reset, resets, mask
            )
        max_norm = self.config.clip if self.config.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        loss_value, norm_value = torch.stack(
            [loss_sum.detach(), grad_norm.detach().to(loss_sum.dtype)]
        ).tolist()
        rows = inputs.shape[0] * batch_size
        counted = rows if mask is None else int(mask.sum())
        loss_value, counted, rows = self._step_totals(loss_value, counted, rows)
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        lr = self.current_lr() * window.lr_scale
        if finite:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            self.state = detach_state(state)
            self.context = context
        elif self.config.nonfinite == "skip":
            check_finite_weights(self.model, epoch=self.epoch + 1, step=self.step + 1)
            self.skipped += 1
            self._epoch_skipped += 1
            self.state = None  # a non-finite state would poison every later window
            self.context = None
            if self.online is not None:  # its sensitivities too: the estimator starts afresh
                self.online.reset()
        else:
            raise NonFiniteError(
                f"non-finite {'loss' if not math.isfinite(loss_value) else 'gradient'} at epoch "
                f"{self.epoch + 1}, step {self.step + 1} (window at row {self.stream.position - inputs.shape[0]}, "
                f"gradient norm {norm_value:g}); no step was taken. Lower the learning rate, "
                "set a gradient clip, or skip non-finite steps (nonfinite='skip')",
                options=("train.lr", "train.clip", "train.nonfinite"),
            )
        self.step += 1
        return {
            "event": "step",
            "epoch": self.epoch + 1,
            "step": self.step,
            "length": inputs.shape[0],
            "loss": loss_value / counted if counted else math.nan,
            "grad_norm": norm_value,
            "clipped": bool(self.config.clip > 0 and norm_value > self.config.clip),
            "skipped": not finite,
            "lr": lr,
            "tokens": rows,  # rows read: steps x streams (tokens of a text)
            "counted": counted,  # rows whose loss counts
        }

    def _window_gradient(self, inputs, targets, window, reset, resets, mask):
        """Backpropagate one window; returns (its loss sum, final state, lookback context)."""
        opt = self.optimizer
        batch_size = inputs.shape[1]
        if reset or window.reset or self.state is None:
            state = self.model.initial_state(batch_size)
            self.context = None
        else:
            state = detach_state(self._checked_carried_state(batch_size))
        result = self._run_window(
            inputs, targets, state, window, resets=resets, mask=mask, context=self.context
        )
        loss_sum, state = result.loss_sum, result.state
        loss = loss_sum / (batch_size * (window.loss_length or self.reference_length))
        opt.zero_grad(set_to_none=True)
        self._backward(loss)
        return loss_sum, state, result.context

    def _run_window(self, inputs, targets, state, window, *, resets, mask, context):
        """One window's forward by the engine (a distributed trainer's: under DDP)."""
        return run_window(
            self.model,
            inputs,
            targets,
            state,
            window,
            resets=resets,
            mask=mask,
            context=context,
            objective=self.objective,
        )

    def _step_totals(self, loss_sum: float, counted: int, rows: int) -> tuple[float, int, int]:
        """A step's loss sum, counted and read rows over the job (a distributed trainer's: summed)."""
        return loss_sum, counted, rows

    def _online_gradient(self, inputs, targets, window, reset, resets, mask):
        """The online estimator's gradient, left in ``.grad``: (loss sum, state, no context)."""
        batch_size = inputs.shape[1]
        fresh = reset or window.reset or self.state is None or self.online.s is None
        if not fresh:
            self._checked_carried_state(batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = online_window(
            self.online,
            inputs,
            targets,
            start=self.model.initial_state(batch_size) if fresh else None,
            scale=1.0 / (batch_size * (window.loss_length or self.reference_length)),
            resets=resets,
            mask=mask,
            generator=self.generator,
        )
        return loss_sum, self.online.state, None

    def _checked_carried_state(self, batch_size: int) -> State:
        """The carried state, refused when it cannot enter this window (guards.check_carried)."""
        want = self._state_shapes.get(batch_size)
        if want is None:  # built once per batch size, not every window
            want = self._state_shapes[batch_size] = state_signature(
                self.model.initial_state(batch_size)
            )
        check_carried(self.state, self.context, self.strategy, want, batch_size)
        return self.state

    def _backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, turning the 'backward through the graph a second time' error of a
        module that keeps its state between calls into a message naming the fix."""
        try:
            loss.backward()
        except RuntimeError as e:
            if "second time" not in str(e):
                raise
            raise freed_graph_error(self.model) from None

    def current_lr(self) -> float:
        """The scheduled learning rate at the stream's current position (:func:`scheduled_lr`)."""
        done = self.epoch + self.stream.position / max(1, self.stream.steps)
        return scheduled_lr(self.config, done)

    # -- epochs ------------------------------------------------------------------------

    def train_epoch(
        self,
        on_step: Callable[[dict], None] | None = None,
        *,
        stop: Callable[[], bool] | None = None,
    ) -> dict:
        """Run windows to the end of the stream (from where it stands), then evaluate.

        ``stop`` (a budget: wall clock, tokens) is asked before every window after the
        first; when it returns True the epoch ends early. Its record then has
        ``fraction`` < 1 (the share of the stream covered), it still counts as an
        epoch, and the stream restarts as after a complete one.
        """
        stream, strategy = self.stream, self.strategy
        # adaptive:DELTA re-chooses K from measured bias at an epoch's start (tbptt.train.adaptive)
        if isinstance(strategy, AdaptiveTruncation) and stream.position == 0:
            if strategy.due(self.epoch):
                adapt(strategy, self.model, stream, objective=self.objective)
        windows = 0
        while (remaining := stream.remaining()) > 0:
            if stop is not None and windows > 0 and stop():
                break
            windows += 1
            window = strategy.plan(remaining, self.generator)
            start = time.perf_counter()
            batch = stream.next(window.length)
            record = self.train_step(
                batch.inputs,
                batch.targets,
                window,
                batch.reset,
                resets=batch.resets,
                mask=batch.mask,
            )
            self._tally(record, time.perf_counter() - start)
            self.metrics.write(record)
            if on_step is not None:
                on_step(record)
        # The last step may have overflowed the weights (a finite gradient, a huge update):
        # stop here, under either policy, rather than evaluate, checkpoint or sample them.
        check_finite_weights(self.model, epoch=self.epoch + 1, step=self.step)
        self.epoch += 1
        fraction = 1.0 - stream.remaining() / max(1, stream.steps)
        stream.restart()
        record = self._epoch_record(fraction)  # the epoch's sums, then zeroed
        if isinstance(strategy, AdaptiveTruncation):  # the K of this epoch and its bias
            record.update(strategy.metrics())
        if self.device.type == "cuda":
            record["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.state = None
        self.context = None
        if self.valid_batch is not None:
            record.update({f"val_{k}": v for k, v in self.evaluate().items()})
        self.metrics.write(record)
        return record

    def evaluate(self) -> dict[str, float]:
        """The objective's metrics on the validation split (state carried, no graph):
        ``{"loss": ..., "ppl": ...}`` for a language model (see :mod:`tbptt.train.objectives`)."""
        sums = evaluate(
            self.model, self.valid_batch, objective=self.objective, window=self.config.eval_window
        )
        return self.objective.summary(sums)

    def fit(
        self,
        epochs: int | None = None,
        *,
        on_step: Callable[[dict], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[dict]:
        """Train until ``epochs`` (default: the config's) epochs are complete; returns epoch records.

        ``stop``: a budget check (see :meth:`train_epoch`); training ends as soon as it
        returns True, between windows, or once ``config.max_steps`` (if > 0) optimizer steps
        are taken (the epoch under way ends there, evaluated, as a stopped one).
        """
        target = self.config.epochs if epochs is None else epochs
        if self.config.max_steps > 0:
            budget, limit = stop, self.config.max_steps
            stop = lambda: self.step >= limit or (budget is not None and budget())  # noqa: E731
        records = []
        while self.epoch < target:
            if stop is not None and stop():
                break
            record = self.train_epoch(on_step, stop=stop)
            records.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return records

    @property
    def steps_per_epoch(self) -> float:
        """Expected optimizer steps per epoch (exact for deterministic strategies)."""
        return math.ceil(self.stream.steps / self.reference_length)
