"""Data-parallel training on ``torch.distributed``: every rank owns a contiguous shard of the streams.

Launched by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), W processes train one
model on the B parallel streams of a run, each on its own B / W of them::

    streams    0  1  2  3 | 4  5  6  7        B = 8, W = 2
    rank       ---- 0 ----  ---- 1 ----

- **Sharding** (:class:`ShardedStream`): every rank lays the split into the same
  B columns a single process would and keeps columns ``[r B/W, (r+1) B/W)``, so
  each stream stays contiguous (the state a rank carries out of one window is
  the right state entering the next) and the union of the shards is exactly the
  single-process batch. Document resets stay per stream.
- **Lockstep**: the strategy and the random sampling draw from the trainer's
  generator, seeded the same on every rank, and every rank's shard has the same
  number of rows; so every rank plans the same windows (lengths, cut points,
  gates, learning-rate factors) and calls backward the same number of times,
  whatever the documents in its streams. No window count is negotiated.
- **Gradient**: the model runs under :class:`~torch.nn.parallel.DistributedDataParallel`,
  which averages the ranks' gradients during backward. Each rank divides its
  loss sum by its own B / W streams, so the average is the single-process
  gradient over all B streams: the effective batch is B, whatever W is.
  A window with activation checkpointing (its segments run again inside
  backward) runs the bare module and averages the gradients with one
  all-reduce after backward instead (:meth:`DistributedTrainer._backward`).
- **Metrics** are summed over ranks (token-weighted): a step's loss is the sum
  of every rank's row losses over every rank's counted rows; validation is
  sharded by columns the same way and its sums added, so the validation
  perplexity is the single-process one.
- **Checkpoints** (:meth:`DistributedTrainer.state_dict`) hold the shared
  weights, optimizer and counters once and, per rank, its carried state,
  lookback context, stream position and generators (gathered to every rank;
  rank 0 writes). They resume exactly on the same world size; another world
  size is refused in one line.

gloo serves CPU ranks and NCCL CUDA ranks (one GPU per rank, ``cuda:LOCAL_RANK``);
the code path is the same.

- **A lost rank** (killed, crashed, its connection cut) breaks the collective its partners
  wait in; they raise :class:`RankLost`, one line naming the lost rank (found among the
  processes every rank registered at :func:`setup`) and saying that the run resumes from
  its last checkpoint on the same number of processes, never the backend's traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tbptt.data.streams import Batch
from tbptt.errors import CheckpointError, ConfigError, TbpttError
from tbptt.train.engine import run_window
from tbptt.train.evaluate import evaluate
from tbptt.train.trainer import Trainer

__all__ = [
    "Group",
    "RankLost",
    "environment_group",
    "setup",
    "shutdown",
    "check_divisible",
    "shard_slice",
    "ShardedStream",
    "DistributedTrainer",
    "RANK_KEYS",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

# The trainer-state keys each rank holds for itself (the rest are the same on every rank).
RANK_KEYS = ("hidden", "context", "position", "generator", "rng", "strategy")

# What gloo and NCCL say when a partner's process or connection is gone.
_PEER_GONE = re.compile(
    r"connection (?:reset|closed|refused)|broken pipe|(?:read|write) error|socket timeout|"
    r"timed out|communicator (?:was )?aborted|remote process",
    re.IGNORECASE,
)


class RankLost(TbpttError):
    """A rank of the job stopped (killed, crashed, or its connection cut) while this one
    waited on it in a collective: every rank stops. ``lost``: its rank (None: not known),
    ``world``: the job's number of processes, to resume with."""

    def __init__(self, lost: int | None, world: int):
        who = f"rank {lost}" if lost is not None else "a rank"
        super().__init__(
            f"{who} of the {world} processes was lost (its process ended or its connection "
            "broke), so the run stopped; its last checkpoint is intact: resume the run from "
            f"it on {world} processes"
        )
        self.lost, self.world = lost, world


def _peer_gone(error: BaseException) -> bool:
    """Whether ``error``, raised by a collective, says that a partner is gone."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and bool(_PEER_GONE.search(str(error)))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine is running (a zombie is not)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    return state not in ("Z", "X")


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` of ``world`` processes, ``local_rank`` on
    its machine (its GPU index)."""

    rank: int
    world: int
    local_rank: int = 0
    # (host, process id) of every rank, by rank, registered at setup: who a lost rank is
    peers: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    @property
    def leader(self) -> bool:
        """True on rank 0, the rank that writes the run directory."""
        return self.rank == 0

    def lost_rank(self) -> int | None:
        """The rank whose process is gone, as seen from this one (None: not known). Of two
        ranks it is the other; of more, the one registered on this machine whose process
        has ended."""
        if self.world == 2:
            return 1 - self.rank
        host = socket.gethostname()
        gone = [
            r
            for r, (where, pid) in enumerate(self.peers)
            if r != self.rank and where == host and not _alive(pid)
        ]
        return gone[0] if len(gone) == 1 else None

    @contextlib.contextmanager
    def collective(self) -> Iterator[None]:
        """Turn a partner's loss inside the block into :class:`RankLost`; other errors pass."""
        try:
            yield
        except (RuntimeError, OSError) as e:
            if not _peer_gone(e):
                raise
            log.debug("a collective failed: %s", e)  # the backend's words, for a bug report
            raise RankLost(self.lost_rank(), self.world) from None

    # -- collectives every rank calls at the same point --------------------------------

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64; the same result on every rank)."""
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        with self.collective():
            dist.all_reduce(t)
        return t.tolist()

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over ranks (the same result on every rank)."""
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        with self.collective():
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank (pickled; for small objects)."""
        out: list[Any] = [None] * self.world
        with self.collective():
            dist.all_gather_object(out, obj)
        return out


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def environment_group() -> Group | None:
    """The job ``torchrun`` describes in this process's environment, or None (one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Group(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def setup(device: str = "cpu", *, timeout_s: float = 1800.0) -> Group | None:
    """Join the process group ``torchrun`` started (gloo for CPU, NCCL for CUDA); None when
    this process runs alone. Returns the group; an already initialised group is reused.

    On CUDA, each rank uses ``cuda:LOCAL_RANK`` (set as the current device).
    """
    if dist.is_available() and dist.is_initialized():
        return Group(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        )
    group = environment_group()
    if group is None:
        return None
    if not dist.is_available():
        raise ConfigError("this build of torch has no torch.distributed; run one process")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(group.local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
    )
    peers = group.gather((socket.gethostname(), os.getpid()))  # who is who, if one is lost
    return replace(group, peers=tuple((str(host), int(pid)) for host, pid in peers))


def shutdown() -> None:
    """Leave the process group (where one was joined); after a lost rank, quietly."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):
            dist.destroy_process_group()


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
