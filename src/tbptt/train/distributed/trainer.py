"""The data-parallel trainer: each rank's shard of the streams (:class:`ShardedStream`) and
:class:`DistributedTrainer` (gradients averaged by DistributedDataParallel, metrics summed
over ranks, checkpoints with every rank's own state)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tbptt.data.streams import Batch
from tbptt.errors import CheckpointError, ConfigError
from tbptt.train.distributed.group import Group, setup
from tbptt.train.engine import run_window
from tbptt.train.evaluate import evaluate
from tbptt.train.trainer import Trainer

__all__ = ["RANK_KEYS", "check_divisible", "shard_slice", "ShardedStream", "DistributedTrainer"]

# The trainer-state keys each rank holds for itself (the rest are the same on every rank).
RANK_KEYS = ("hidden", "context", "position", "generator", "rng", "strategy")


def check_divisible(batch_size: int, world: int) -> None:
    """One :class:`ConfigError` unless the B streams split evenly over the ranks."""
    if batch_size % world:
        lower = batch_size - batch_size % world
        near = f"{lower} or {lower + world}" if lower else f"{world}"
        raise ConfigError(
            f"batch size {batch_size} does not split into {world} processes' equal shares of "
            f"streams; use a multiple of {world} (e.g. {near}), "
            "or launch another number of processes",
            options=("train.batch_size",),
        )


def shard_slice(batch_size: int, rank: int, world: int) -> slice:
    """The contiguous columns of B streams rank ``rank`` of ``world`` owns
    (``torch.tensor_split`` shares: equal when B is divisible by the world size)."""
    base, extra = divmod(batch_size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _columns(batch: Batch, cols: slice) -> Batch:
    cut = lambda t: t[:, cols] if t is not None else None  # noqa: E731
    return Batch(
        cut(batch.inputs),
        cut(batch.targets),
        cut(batch.resets),
        cut(batch.mask),
        batch.reset,
        batch.position,
    )


class ShardedStream:
    """A :class:`~tbptt.data.Stream` of one rank: the full stream's windows, its columns only.

    The full stream is laid out (and, for random sampling, its offsets drawn) exactly as in
    one process, so the shards of all ranks together are the single-process batch.
    ``position`` is the full stream's.
    """

    def __init__(self, stream, rank: int, world: int):
        check_divisible(stream.batch_size, world)
        self.full = stream
        self.columns = shard_slice(stream.batch_size, rank, world)

    @property
    def position(self) -> int:
        return self.full.position

    @position.setter
    def position(self, value: int) -> None:
        self.full.position = value

    @property
    def batch_size(self) -> int:
        return self.columns.stop - self.columns.start

    @property
    def steps(self) -> int:
        return self.full.steps

    def remaining(self) -> int:
        return self.full.remaining()

    def restart(self) -> None:
        self.full.restart()

    def next(self, length: int) -> Batch | None:
        batch = self.full.next(length)
        return None if batch is None else _columns(batch, self.columns)


class _Window(nn.Module):
    """One window's forward (:func:`~tbptt.train.engine.run_window`) as a module, so
    DistributedDataParallel wraps the whole window: lookback, gates and resets included."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, state, window, resets, mask, context, objective):
        result = run_window(
            self.model,
            inputs,
            targets,
            state,
            window,
            resets=resets,
            mask=mask,
            context=context,
            objective=objective,
        )
        return result


class DistributedTrainer(Trainer):
    """A :class:`~tbptt.train.Trainer` that is one rank of a data-parallel job.

    Call it on every rank with the same arguments (the same data, configuration and
    seed) after the process group is initialised (:func:`setup`). ``config.batch_size``
    is the global B; this rank trains its B / W streams. Everything else is the
    trainer's: :meth:`fit`, :meth:`train_epoch`, :meth:`evaluate`, :meth:`state_dict`.

    Raises:
        ConfigError: B is not divisible by the world size (on every rank alike).
    """

    def __init__(self, model, train, valid, config, *, group: Group | None = None, **kwargs):
        group = group or setup(config.device)
        if group is None:
            raise ConfigError(
                "DistributedTrainer needs a torch.distributed process group; launch with "
                "torchrun --nproc-per-node N, or use Trainer for one process"
            )
        check_divisible(config.batch_size, group.world)
        self.group = group
        super().__init__(model, train, valid, config, **kwargs)
        if self.online is not None:
            raise ConfigError(
                f"the online strategy {self.strategy.spec} does not run distributed yet (its "
                "sensitivities are per stream and not sharded); run it in one process",
                options=("train.strategy",),
            )
        self.stream = ShardedStream(self.stream, group.rank, group.world)
        if self.valid_batch is not None:  # validation columns shared out the same way
            cols = shard_slice(self.valid_batch.inputs.shape[1], group.rank, group.world)
            self.valid_batch = _columns(self.valid_batch, cols)
        device_ids = None
        if self.device.type == "cuda":  # "cuda" alone: the rank's current device (setup)
            index = self.device.index
            device_ids = [torch.cuda.current_device() if index is None else index]
        # An adaptive softmax's tail clusters take part only in windows whose targets fall
        # in them (on some ranks, not others): DDP must then look for unused parameters.
        sparse = any(isinstance(m, nn.AdaptiveLogSoftmaxWithLoss) for m in self.model.modules())
        with group.collective():  # it broadcasts rank 0's weights
            self.ddp = DistributedDataParallel(
                _Window(self.model), device_ids=device_ids, find_unused_parameters=sparse
            )
        self._sync_by_hand = False

    def _run_window(self, inputs, targets, state, window, *, resets, mask, context):
        if window.checkpoint:
            # Checkpointed segments run again inside backward, a second forward DDP cannot
            # follow: the bare module runs, and _backward averages the gradients itself.
            self._sync_by_hand = True
            return self.ddp.module(
                inputs, targets, state, window, resets, mask, context, self.objective
            )
        self._sync_by_hand = False
        with self.group.collective():
            return self.ddp(inputs, targets, state, window, resets, mask, context, self.objective)

    def _backward(self, loss: torch.Tensor) -> None:
        with self.group.collective():  # DDP averages the gradients inside backward
            super()._backward(loss)
        if self._sync_by_hand:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                flat = torch.cat([g.reshape(-1) for g in grads])
                with self.group.collective():
                    dist.all_reduce(flat)
                flat /= self.group.world
                offset = 0
                for g in grads:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()

    def _step_totals(self, loss_sum: float, counted: int, rows: int) -> tuple[float, int, int]:
        total_loss, total_counted, total_rows = self.group.sum(
            [loss_sum, float(counted), float(rows)]
        )
        return total_loss, int(total_counted), int(total_rows)

    def evaluate(self) -> dict[str, float]:
        """The objective's metrics on the whole validation split: each rank scores its
        columns, the sums are added in rank order (the same figures on every rank)."""
        mine = {}
        if self.valid_batch.inputs.shape[1] > 0:
            mine = evaluate(
                self.model,
                self.valid_batch,
                objective=self.objective,
                window=self.config.eval_window,
            )
        sums: dict[str, float] = {}
        for part in self.group.gather(mine):
            for key, value in part.items():
                sums[key] = sums.get(key, 0.0) + value
        return self.objective.summary(sums)

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The trainer's state with every rank's own part (carried state, lookback
        context, stream position, generators) under ``ranks``, gathered from every rank
        (a collective: call it on every rank; rank 0 writes it)."""
        d = super().state_dict()
        d["world_size"] = self.group.world
        d["ranks"] = self.group.gather({k: d[k] for k in RANK_KEYS})
        return d

    def load_state_dict(self, d: dict) -> None:
        """Continue from :meth:`state_dict`'s output, each rank from its own part.

        Raises:
            CheckpointError: the checkpoint was written by another number of processes
                (one line, on every rank alike), or by one process.
        """
        saved = d.get("world_size", 1) if isinstance(d, dict) else 1
        ranks = d.get("ranks") if isinstance(d, dict) else None
        if saved != self.group.world or not isinstance(ranks, list) or len(ranks) != saved:
            raise CheckpointError(
                f"the checkpoint was written by {saved} process{'es' if saved != 1 else ''} and "
                f"this run has {self.group.world}; resume with torchrun --nproc-per-node {saved} "
                "(the carried states are per process), or start a new run"
            )
        super().load_state_dict({**d, **ranks[self.group.rank], "world_size": 1})
