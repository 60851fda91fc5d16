"""CPU threads and OpenMP waiting, chosen for the machine as it is when tbptt starts.

torch runs its CPU kernels on an OpenMP team, one thread per CPU by default. Between
two parallel regions the idle workers spin, waiting for the next one; GNU OpenMP (the
runtime of torch's Linux wheels) spins 300,000 iterations (milliseconds) before it
sleeps. On an idle machine that saves a wake-up per region and is the fastest setting.
On a busy one the spinning workers take the cores the working thread and the other
jobs need, every region waits for a descheduled worker, and training runs 10 to 60
times slower (docs/benchmarks.md, "A busy machine"). A bounded spin (``GOMP_SPINCOUNT
=1000``: the workers sleep after microseconds) removes the collapse but costs up to a
quarter of the idle speed on some processors, and under heavy load one thread beats
any team. No constant is right on both kinds of machine, so tbptt chooses:

- **when it is imported**, before torch (OpenMP reads its wait policy once, when torch
  loads): from the CPUs this process may use (its CPU affinity, capped by a cgroup's
  CPU quota: v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``; shared among the ranks of a
  local multi-process job) and how busy they are (the runnable tasks of other
  processes, sampled for 50 ms from ``/proc/stat``; the load average elsewhere):

  =================================  =====================================  ==========================
  at start                           threads                                OpenMP wait
  =================================  =====================================  ==========================
  idle (other work < 0.5 CPU)        every usable CPU                       OpenMP's own (spin)
  busy                               the usable CPUs other work leaves      bounded spin (1,000)
                                     free, at least one
  =================================  =====================================  ==========================

- **while training**, :func:`revise` (``tbptt.Run`` calls it after each window; it acts at
  most every :data:`REVISE_SECONDS`) measures the CPU time other processes took on
  those CPUs since the last revision and moves the thread count to the CPUs left
  free: a job that starts beside an idle-started run sends it to one thread (a team
  spinning beside it would collapse), and the CPUs it frees are taken back.

A choice the user made always wins: ``OMP_NUM_THREADS`` in the environment, ``--threads``
(:func:`use_threads`) or a ``torch.set_num_threads`` of their own fixes the thread count;
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` the wait. A thread count
the user fixed runs with the bounded spin (it cannot be revised, so it must be safe on a
busy machine). What tbptt set in the environment is listed in ``TBPTT_THREAD_POLICY``,
so that a child process re-decides rather than taking it for the user's. A program
that imports torch before tbptt keeps OpenMP's wait as it was; its thread count is
still revised. :func:`policy` returns the choice and its reasons (``tbptt env`` prints
them).

This module imports nothing heavy: it runs before torch is loaded.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tbptt.threads.loops import StepThreads

__all__ = [
    "BLOCK_TIME_MS",
    "REVISE_SECONDS",
    "SPIN_COUNT",
    "StepThreads",
    "THREAD_KEYS",
    "USER_KEYS",
    "Machine",
    "Policy",
    "choose",
    "policy",
    "processor",
    "read_machine",
    "revise",
    "set_wait_policy",
    "usable_cpus",
    "use_threads",
    "wait_policy",
]

#: GNU OpenMP spin iterations before a waiting worker sleeps, when tbptt bounds it
#: (OpenMP's default: 300,000). Chosen by ``benchmarks/busy.py`` among 1,000 / 3,000 /
#: 10,000 / 100,000 and a passive wait: under load 1,000 was the steadiest (10,000 fell
#: to 3,600 tokens/s in 3 of 12 timings; 100,000 collapsed like the default).
SPIN_COUNT = 1_000
#: Intel OpenMP's equivalent, milliseconds a worker waits before it sleeps (default 200).
BLOCK_TIME_MS = 1
#: The wait-policy variables a user may set (tbptt then leaves the wait alone).
USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: The thread-count variable (tbptt then leaves the thread count alone).
THREAD_KEYS = ("OMP_NUM_THREADS",)
#: Where tbptt lists the variables it set itself ("KEY=VALUE,...").
MARK = "TBPTT_THREAD_POLICY"
#: Other work below this many CPUs counts as an idle machine; a CPU counts as taken by
#: other work when it keeps more than this share of it busy.
IDLE_BELOW = 0.5
#: The least wall-clock seconds between two revisions of the thread count.
REVISE_SECONDS = 5.0
SAMPLE_SECONDS = 0.05  # the runnable-task sample at import
SAMPLES = 10


@dataclass(frozen=True)
class Machine:
    """What the policy reads: the CPUs this process may use and how busy they are."""

    cpus: int  # usable: affinity, capped by a cgroup quota, shared by local ranks
    affinity: int  # CPUs in this process's affinity mask
    quota: float | None  # the cgroup's CPU quota in CPUs (None: no quota)
    ranks: int  # processes of a local multi-process job sharing them
    busy: float  # CPUs' worth of other processes' work
    busy_source: str  # how ``busy`` was measured


@dataclass(frozen=True)
class Policy:
    """The choice: a thread count (None: left to the user / torch) and a wait, with why."""

    threads: int | None
    wait: str  # "openmp default", "bounded", "user", "torch first"
    threads_reason: str
    wait_reason: str
    machine: Machine
    set_env: tuple[tuple[str, str], ...] = ()  # what tbptt put in os.environ
    user_threads: bool = False  # the user fixed the thread count: never revised

    def as_dict(self) -> dict:
        return asdict(self)


# -- reading the machine ------------------------------------------------------------------


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This process's cgroup CPU quota in CPUs (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``)."""
    candidates = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # v2
                candidates.append(root / path.lstrip("/") / "cpu.max")
            elif "cpu" in controllers.split(","):
                base = root / "cpu" / path.lstrip("/")
                candidates.append((base / "cpu.cfs_quota_us", base / "cpu.cfs_period_us"))
    except (OSError, ValueError):
        pass
    candidates += [root / "cpu.max", (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us")]  # fmt: skip
    for c in candidates:
        try:
            if isinstance(c, tuple):
                quota, period = (int(p.read_text().split()[0]) for p in c)
            else:
                fields = c.read_text().split()
                if fields[0] == "max":
                    return None
                quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cpus(root: Path = Path("/sys/fs/cgroup")) -> tuple[int, int, float | None, int]:
    """(usable CPUs, CPUs in the affinity mask, cgroup quota in CPUs or None, local ranks).

    Usable: the affinity mask, capped by the quota (rounded down, at least 1), divided
    among the ranks of a local multi-process job (``LOCAL_WORLD_SIZE``).
    """
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    cpus = affinity if quota is None else max(1, min(affinity, math.floor(quota + 1e-9)))
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, cpus // ranks), affinity, quota, ranks


def _runnable() -> int | None:
    """Tasks runnable right now, system-wide (``procs_running`` of /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sample_busy() -> tuple[float, str]:
    """Other processes' runnable tasks, averaged over a short sample (this process is one)."""
    counts = []
    for i in range(SAMPLES):
        n = _runnable()
        if n is None:
            break
        counts.append(max(0, n - 1))
        if i + 1 < SAMPLES:
            time.sleep(SAMPLE_SECONDS / SAMPLES)
    if counts:
        return sum(counts) / len(counts), f"runnable tasks over {SAMPLE_SECONDS * 1e3:.0f} ms"
    try:
        return os.getloadavg()[0], "1-minute load average"
    except (AttributeError, OSError):
        return 0.0, "unknown (taken as idle)"


def processor() -> str:
    """The processor's model name (``/proc/cpuinfo``; else what :mod:`platform` says), for
    reports and benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_machine() -> Machine:
    cpus, affinity, quota, ranks = usable_cpus()
    busy, source = _sample_busy()
    host = os.cpu_count() or affinity
    if affinity < host:  # the count is system-wide: this process's share of it
        busy *= affinity / host
    return Machine(cpus, affinity, quota, ranks, busy, source)


# -- the choice ---------------------------------------------------------------------------


def _own(env) -> dict[str, str]:
    """The variables tbptt set in this environment (a parent's choice, not the user's)."""
    mark = env.get(MARK, "")
    return dict(item.split("=", 1) for item in mark.split(",") if "=" in item)


def user_settings(env) -> dict[str, str]:
    """The thread and wait variables the user set (those tbptt set itself left out)."""
    own = _own(env)
    return {k: env[k] for k in THREAD_KEYS + USER_KEYS if k in env and own.get(k) != env[k]}


def free_threads(machine: Machine, busy: float | None = None) -> int:
    """The usable CPUs other work leaves free (at least one)."""
    busy = machine.busy if busy is None else busy
    taken = math.ceil(busy - IDLE_BELOW) if busy > IDLE_BELOW else 0
    return max(1, min(machine.cpus, machine.affinity // machine.ranks - taken))


def choose(machine: Machine, user: dict[str, str], torch_loaded: bool = False) -> Policy:
    """The thread count and wait for ``machine``, the user's settings ``user`` kept."""
    idle = machine.busy < IDLE_BELOW
    where = (
        f"{machine.cpus} CPUs usable (affinity {machine.affinity}"
        + (f", cgroup quota {machine.quota:g}" if machine.quota is not None else "")
        + (f", shared by {machine.ranks} local ranks" if machine.ranks > 1 else "")
        + f"), other work {machine.busy:.1f} CPUs ({machine.busy_source})"
    )
    if "OMP_NUM_THREADS" in user:
        threads, user_threads = None, True
        threads_reason = f"OMP_NUM_THREADS={user['OMP_NUM_THREADS']} (the user's)"
    else:
        threads, user_threads = free_threads(machine), False
        threads_reason = (
            f"{where}: idle, every usable CPU" if idle else f"{where}: busy, the CPUs left free"
        )
    waits = {k: v for k, v in user.items() if k in USER_KEYS}
    if waits:
        wait, wait_reason = (
            "user",
            ", ".join(f"{k}={v}" for k, v in waits.items()) + " (the user's)",
        )
    elif torch_loaded:
        wait, wait_reason = "torch first", "OpenMP's, as it was (torch was imported before tbptt)"
    elif user_threads:
        wait = "bounded"
        wait_reason = "bounded spin: the user fixed the thread count, so it must be safe under load"
    elif idle:
        wait, wait_reason = "openmp default", "OpenMP's own spin: the machine was idle at start"
    else:
        wait, wait_reason = "bounded", "bounded spin: the machine was busy at start"
    return Policy(threads, wait, threads_reason, wait_reason, machine, user_threads=user_threads)


def _environment(choice: Policy, env) -> dict[str, str]:
    """The variables that make OpenMP and MKL start as ``choice`` says."""
    out = {}
    if choice.wait == "bounded":
        out.update(GOMP_SPINCOUNT=str(SPIN_COUNT), KMP_BLOCKTIME=str(BLOCK_TIME_MS))
    if choice.threads is not None and choice.threads != choice.machine.affinity:
        out["OMP_NUM_THREADS"] = str(choice.threads)  # torch would start one per CPU
    return out


# -- applying it --------------------------------------------------------------------------

_policy: Policy | None = None
_state = {"set": None, "at": None, "cpu": None, "own": None}


def set_wait_policy() -> bool:
    """Choose threads and wait for this process (see the module docstring) and put the
    choice into the environment, before torch loads; True if anything was set. Called
    when tbptt is imported; a second call does nothing."""
    global _policy
    if _policy is not None:
        return False
    env = os.environ
    for key, value in _own(env).items():  # a parent tbptt's choice: decide afresh
        if env.get(key) == value:
            del env[key]
    env.pop(MARK, None)
    user = user_settings(env)
    loaded = "torch" in sys.modules
    _policy = choose(read_machine(), user, torch_loaded=loaded)
    new = {} if loaded else _environment(_policy, env)
    env.update(new)
    if new:
        env[MARK] = ",".join(f"{k}={v}" for k, v in new.items())
    _policy = replace(_policy, set_env=tuple(new.items()))
    return bool(new)


def policy() -> Policy:
    """The choice this process runs under (made now if tbptt has not made it yet)."""
    if _policy is None:
        set_wait_policy()
    return _policy


def wait_policy() -> str:
    """One line for reports: which OpenMP wait this process runs under, and why."""
    p = policy()
    if p.wait == "bounded":
        return f"bounded by tbptt (GOMP_SPINCOUNT={SPIN_COUNT}, KMP_BLOCKTIME={BLOCK_TIME_MS}): {p.wait_reason}"
    if p.wait == "openmp default":
        return f"OpenMP's default spin, chosen by tbptt: {p.wait_reason}"
    if p.wait == "user":
        return f"set by the environment ({p.wait_reason})"
    return "OpenMP's default (torch was imported before tbptt)"


def use_threads(n: int) -> None:
    """Run on ``n`` threads from now on, as the user's choice (``--threads``): never revised."""
    import torch

    global _policy
    torch.set_num_threads(n)
    _policy = replace(
        policy(), threads=n, user_threads=True, threads_reason=f"{n} (the user's: --threads)"
    )


def revise(now: float | None = None) -> int | None:
    """Move the thread count to the CPUs other work leaves free; the new count, or None
    when nothing changed. Cheap to call every window: it acts at most every
    :data:`REVISE_SECONDS`, and never on a thread count the user fixed."""
    global _policy
    p = policy()
    if p.user_threads:
        return None
    import torch

    now = time.monotonic() if now is None else now
    current = torch.get_num_threads()
    if _state["set"] is None:  # the first call: what torch started with, unless changed
        _state["set"] = p.threads if p.wait != "torch first" else p.machine.affinity
        _state.update(at=now, cpu=_cpu_seconds(), own=_own_seconds())
        if current == _state["set"] and p.threads is not None and current != p.threads:
            torch.set_num_threads(p.threads)  # torch was imported first: apply the choice
            _state["set"] = p.threads
            return p.threads
    if current != _state["set"]:  # torch.set_num_threads by the user: theirs from now on
        _policy = replace(
            p, user_threads=True, threads_reason=f"{current} (the user's: torch.set_num_threads)"
        )
        return None
    if now - _state["at"] < REVISE_SECONDS:
        return None
    cpu, own = _cpu_seconds(), _own_seconds()
    if cpu is None or _state["cpu"] is None:
        return None
    others = max(0.0, (cpu - _state["cpu"]) - (own - _state["own"])) / (now - _state["at"])
    _state.update(at=now, cpu=cpu, own=own)
    want = free_threads(p.machine, others)
    if want == current:
        return None
    torch.set_num_threads(want)
    _state["set"] = want
    _policy = replace(
        p,
        threads=want,
        threads_reason=f"revised to {want}: other work took {others:.1f} CPUs "
        f"of {p.machine.cpus} usable over the last {REVISE_SECONDS:g}+ s",
    )
    return want


def _cpu_seconds() -> float | None:
    """Busy CPU seconds, all processes, on the CPUs of this process's affinity (/proc/stat)."""
    try:
        mine = os.sched_getaffinity(0)
        hz = os.sysconf("SC_CLK_TCK")
        busy = 0
        with open("/proc/stat", "rb") as f:
            for line in f:
                if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                    continue
                fields = line.split()
                if int(fields[0][3:]) in mine:
                    ticks = [int(x) for x in fields[1:9]]
                    busy += sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
        return busy / hz
    except (AttributeError, OSError, ValueError):
        return None


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system
