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

from tbptt.train.distributed.group import Group, RankLost, environment_group, setup, shutdown
from tbptt.train.distributed.trainer import (
    RANK_KEYS,
    DistributedTrainer,
    ShardedStream,
    check_divisible,
    shard_slice,
)

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
