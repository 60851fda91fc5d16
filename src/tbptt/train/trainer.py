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
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable

import torch
from torch import nn

from tbptt.data.streams import RandomStream, SequentialStream, StreamData, as_stream_data
from tbptt.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from tbptt.train.checkpoint import capture_rng, check_compatible, restore_rng
from tbptt.train.config import TrainConfig, build_optimizer, resumable_fields
from tbptt.train.engine import Context, run_window
from tbptt.train.evaluate import evaluate, evaluation_batch
from tbptt.train.metrics import MetricsWriter
from tbptt.train.objectives import Objective, default_objective, make_objective
from tbptt.tree import State, cpu_copy, detach_state, map_state, state_tensors
from tbptt.truncation import Strategy, Window, parse_strategy

__all__ = ["Trainer", "MEASURED_FIELDS"]

# Metrics fields measured from the machine (wall clock, memory), not computed from the
# run: two runs of the same seed -- or a run and its resumed copy -- differ only in these.
MEASURED_FIELDS = frozenset({"seconds", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb"})

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
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
                f"the strategy {self.strategy.spec} differs from the configuration's "
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
        need = self.strategy.reference_length(self.stream.steps)
        if self.stream.steps < max(1, need):  # an epoch of no window would train nothing
            have = len(split)
            raise DataError(
                f"the training split has {have} rows: {config.batch_size} streams of "
                f"{self.stream.steps} steps, shorter than one {self.strategy.spec} window of {need} "
                f"steps; use more data, a smaller batch size or a shorter window"
            )
        self.reference_length = need
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.metrics = metrics or MetricsWriter(None)
        # The whole validation split, laid out once; a next-token split's first token is
        # predicted from the last training token.
        self.valid_batch = None
        if valid.pairs > 0 or (valid.next_token and len(valid) > 0):
            context = split.inputs[-1].cpu() if split.next_token else None
            batch = evaluation_batch(valid, config.eval_batch_size, context=context)
            self.valid_batch = batch.to(self.device)
        self.state: State | None = None
        self._state_shapes: dict[int, list[tuple[int, ...]]] = {}  # expected carried-state shapes
        # Lookback strategies (TBPTT(k1, k2)): the trailing rows the next window runs again.
        self.context: Context | None = None
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.skipped = 0  # steps dropped for non-finite values
        self._epoch_loss = 0.0  # summed row losses of the epoch's trained steps
        self._epoch_counted = 0  # rows whose loss counted
        self._epoch_tokens = 0  # rows read
        self._epoch_seconds = 0.0

    # -- one step ----------------------------------------------------------------------

    def _initial_state(self, batch_size: int) -> State:
        return self.model.initial_state(batch_size)

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
        if reset or window.reset or self.state is None:
            state = self._initial_state(batch_size)
            self.context = None
        else:
            state = detach_state(self._checked_carried_state(batch_size))
        # Lookback, checkpointing and resets are the engine's (shared with sequence_gradient).
        result = run_window(
            model,
            inputs,
            targets,
            state,
            window,
            resets=resets,
            mask=mask,
            context=self.context,
            objective=self.objective,
        )
        loss_sum, state = result.loss_sum, result.state
        loss = loss_sum / (batch_size * (window.loss_length or self.reference_length))
        opt.zero_grad(set_to_none=True)
        self._backward(loss)
        max_norm = self.config.clip if self.config.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        loss_value, norm_value = torch.stack(
            [loss_sum.detach(), grad_norm.detach().to(loss_sum.dtype)]
        ).tolist()
        rows = inputs.shape[0] * batch_size
        counted = rows if mask is None else int(mask.sum())
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        lr = self.current_lr() * window.lr_scale
        if finite:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            self.state = detach_state(state)
            self.context = result.context
        elif self.config.nonfinite == "skip":
            self._check_finite_weights()
            self.skipped += 1
            self.state = None  # a non-finite state would poison every later window
            self.context = None
        else:
            raise NonFiniteError(
                f"non-finite {'loss' if not math.isfinite(loss_value) else 'gradient'} at epoch "
                f"{self.epoch + 1}, step {self.step + 1} (window at row {self.stream.position - inputs.shape[0]}, "
                f"gradient norm {norm_value:g}); no step was taken. Lower --lr, set --clip, "
                "or pass --nonfinite skip"
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

    # -- guards ------------------------------------------------------------------------

    def _checked_carried_state(self, batch_size: int) -> State:
        """The carried state, refused when it cannot be the state entering this window.

        Two classic mistakes: a state whose batch size differs from the window's
        (the batch changed between windows), and a state that still holds an
        autograd graph (stored without ``detach()``), which keeps every earlier
        window's graph alive and makes the next backward reach into freed graphs.
        """
        state = self.state
        if not getattr(self.strategy, "keeps_graph", False):
            held = [t for t in state_tensors(state) if t.grad_fn is not None]
            if held:
                raise ConfigError(
                    f"the carried state still holds an autograd graph (grad_fn "
                    f"{type(held[0].grad_fn).__name__}) but {self.strategy.spec} cuts it at every "
                    "window; store the state detached (trainer.state = detach_state(state)) or "
                    "set trainer.state = None to start from a fresh state"
                )
        want = self._state_shapes.get(batch_size)
        if want is None:  # built once per batch size, not every window
            want = [tuple(t.shape) for t in state_tensors(self._initial_state(batch_size))]
            self._state_shapes[batch_size] = want
        got = [tuple(t.shape) for t in state_tensors(state)]
        if got != want:
            raise ConfigError(
                f"the carried state has shape {_shapes(got)} but a window of batch size "
                f"{batch_size} needs {_shapes(want)}; keep the batch size fixed between windows, "
                "or set trainer.state = None (or a state from model.initial_state(batch_size))"
            )
        return state

    def _backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, turning the 'backward through the graph a second time' error of a
        module that keeps its state between calls into a message naming the fix."""
        try:
            loss.backward()
        except RuntimeError as e:
            if "second time" not in str(e):
                raise
            holders = _graph_holders(self.model)
            where = (
                f" (module attribute{'s' if len(holders) > 1 else ''} {', '.join(holders[:3])} "
                "hold(s) tensors with an autograd graph)"
                if holders
                else ""
            )
            raise ConfigError(
                "the model reuses a state from an earlier window whose graph was already freed"
                f"{where}; return the state from forward() and let the trainer carry it, or "
                "detach what the module keeps between calls (self.hidden = h.detach())"
            ) from None

    def _check_finite_weights(self) -> None:
        """Under ``nonfinite="skip"``: refuse to go on once the weights themselves are NaN/inf
        (an earlier step overflowed them), since skipping cannot bring them back."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise NonFiniteError(
                    f"parameter {name} is non-finite at epoch {self.epoch + 1}, step "
                    f"{self.step + 1}: an earlier step overflowed the weights and skipping cannot "
                    "recover; lower --lr or set --clip, and resume from an earlier checkpoint"
                )

    def current_lr(self) -> float:
        """The scheduled learning rate at the stream's current position.

        ``cosine`` decays from ``lr`` to 0 over ``epochs`` (by the fraction of the
        run done, so it needs no state of its own); ``constant`` keeps ``lr``.
        """
        if self.config.lr_schedule == "constant" or self.config.epochs == 0:
            return self.config.lr
        done = self.epoch + self.stream.position / max(1, self.stream.steps)
        progress = min(1.0, done / self.config.epochs)
        return self.config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

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
            self._epoch_seconds += time.perf_counter() - start
            if not record["skipped"]:
                if record["counted"]:
                    self._epoch_loss += record["loss"] * record["counted"]
                    self._epoch_counted += record["counted"]
                self._epoch_tokens += record["tokens"]
            self.metrics.write(record)
            if on_step is not None:
                on_step(record)
        self.epoch += 1
        fraction = 1.0 - stream.remaining() / max(1, stream.steps)
        stream.restart()
        record = {"event": "epoch", "epoch": self.epoch, "step": self.step}
        if self._epoch_counted:  # an epoch whose every step was skipped trained nothing
            sums = {"loss_sum": self._epoch_loss, "count": self._epoch_counted}
            record.update({f"train_{k}": v for k, v in self.objective.summary(sums).items()})
        record.update(
            {
                "tokens": self._epoch_tokens,
                "seconds": self._epoch_seconds,
                "tokens_per_s": self._epoch_tokens / max(self._epoch_seconds, 1e-9),
                "skipped_steps": self.skipped,
                "peak_rss_mb": peak_rss_mb(),
                "fraction": fraction,
            }
        )
        if self.device.type == "cuda":
            record["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self._epoch_loss, self._epoch_tokens, self._epoch_seconds = 0.0, 0, 0.0
        self._epoch_counted = 0
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
        returns True, between windows.
        """
        target = self.config.epochs if epochs is None else epochs
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

    # -- run state ---------------------------------------------------------------------

    # Attributes rebuilt by the constructor from its arguments (their mutable contents
    # -- weights, optimizer moments, generator, stream cursor -- are in state_dict).
    # Every other attribute is run state: state_dict must save it and load_state_dict
    # restore it; tests/train/test_resume.py fails for an attribute left out.
    REBUILT_ATTRIBUTES = frozenset(
        {
            "config",
            "device",
            "model",
            "strategy",
            "generator",
            "stream",
            "reference_length",
            "optimizer",
            "metrics",
            "objective",
            "valid_batch",
            "_state_shapes",
        }
    )

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly, as CPU copies.

        Model and optimizer state, the carried hidden state (all B streams), the
        stream cursor, epoch / step / skipped counters, the epoch's partial sums,
        the strategy's generator, every global generator (torch CPU and CUDA,
        Python, NumPy), the strategy's own state where it has one, and the
        configuration. Only tensors, numbers, strings and containers, so
        ``torch.load(weights_only=True)`` reads it.
        """
        return cpu_copy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "hidden": self.state,
                "context": self.context.state_dict() if self.context is not None else None,
                "epoch": self.epoch,
                "step": self.step,
                "skipped": self.skipped,
                "position": self.stream.position,
                "epoch_partial": [
                    self._epoch_loss,
                    self._epoch_tokens,
                    self._epoch_seconds,
                    self._epoch_counted,
                ],
                "generator": self.generator.get_state(),
                "rng": capture_rng(),
                "strategy": self.strategy.state_dict()
                if hasattr(self.strategy, "state_dict")
                else None,
                "config": self.config.to_dict(),
            }
        )

    def load_state_dict(self, d: dict) -> None:
        """Continue the run saved by :meth:`state_dict`.

        Raises:
            CheckpointError: the state belongs to another configuration or model
                (one line naming the mismatch); nothing is changed then.
        """
        check_compatible(
            {"train": d.get("config", {})},
            {"train": self.config.to_dict()},
            ignore=tuple(f"train.{k}" for k in resumable_fields(TrainConfig)),
        )
        _check_same_parameters(d["model"], self.model.state_dict())
        self.model.load_state_dict(d["model"])
        try:
            self.optimizer.load_state_dict(d["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit this model and optimizer: {e}"
            ) from e
        hidden = d.get("hidden")
        self.state = map_state(lambda t: t.to(self.device), hidden) if hidden is not None else None
        self.context = Context.from_state_dict(d.get("context"), self.device)
        self.epoch, self.step, self.skipped = d["epoch"], d["step"], d.get("skipped", 0)
        self.stream.position = d["position"]
        partial = list(d.get("epoch_partial", [0.0, 0, 0.0]))
        self._epoch_loss, self._epoch_tokens, self._epoch_seconds = partial[:3]
        self._epoch_counted = partial[3] if len(partial) > 3 else self._epoch_tokens
        self.generator.set_state(d["generator"])
        if d.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(d["strategy"])
        restore_rng(d["rng"] if "rng" in d else {"torch": d["torch_rng"]})


def _check_same_parameters(saved: dict, current: dict) -> None:
    """One-line CheckpointError naming the first parameters that differ in name or shape."""
    problems = [f"{k} is missing" for k in current if k not in saved]
    problems += [f"{k} is unexpected" for k in saved if k not in current]
    problems += [
        f"{k} has shape {tuple(saved[k].shape)} there, {tuple(v.shape)} here"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"the checkpoint holds another model: {'; '.join(problems[:3])}{more}; "
            "resume with the same model options, or start a new run"
        )


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(s) for s in shapes) if shapes else "(no tensors)"


def _graph_holders(model: nn.Module) -> list[str]:
    """``module.attribute`` names of plain tensor attributes that carry an autograd graph."""
    found = []
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, torch.Tensor) and v.grad_fn is not None for v in values):
                found.append(f"{prefix}.{key}" if prefix else key)
    return found
