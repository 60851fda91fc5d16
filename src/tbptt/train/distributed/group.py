"""This process's place in a data-parallel job (:class:`Group`): joining and leaving the
process group ``torchrun`` started, the collectives every rank calls at the same point,
and :class:`RankLost` when a partner's process or connection is gone."""

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

from tbptt.errors import ConfigError, TbpttError

__all__ = ["Group", "RankLost", "environment_group", "setup", "shutdown"]

T = TypeVar("T")
log = logging.getLogger(__name__)

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
