"""CPU threads that keep their speed on a busy machine.

torch runs its CPU kernels on an OpenMP team (one thread per core by default).
Between two parallel regions OpenMP's idle workers spin, waiting for the next one;
GNU OpenMP (the runtime of torch's Linux wheels) spins 300,000 iterations before it
sleeps. On an idle machine that saves a wake-up per region. On a busy one (another
job, a test suite, a second training run) the spinning workers take the cores the
working thread and the other jobs need, every region waits for a descheduled
worker, and training runs 10 to 60 times slower (measured: 360 instead of 9,000 to
11,000 tokens/s for the default model beside one matrix-product job on 2 cores;
``benchmarks/busy.py``, docs/benchmarks.md).

:func:`set_wait_policy` bounds the spin (``GOMP_SPINCOUNT``, and ``KMP_BLOCKTIME`` for
Intel OpenMP) so that a waiting worker sleeps after a few microseconds: as fast as
the default on an idle machine, within about 20 % of the best thread count on a
busy one. OpenMP reads these variables once, when torch is imported, so tbptt sets
them when it is imported first (the command line always is); a program that
imports torch before tbptt keeps torch's default (call :func:`wait_policy` to see
which applies). A wait policy the user chose (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` in the environment) is always kept.

This module imports nothing heavy: it runs before torch is loaded.
"""

from __future__ import annotations

import os
import sys

__all__ = ["SPIN_COUNT", "USER_KEYS", "set_wait_policy", "wait_policy"]

#: GNU OpenMP spin iterations before a waiting worker sleeps (default 300,000). Chosen by
#: ``benchmarks/busy.py`` among 1,000 / 3,000 / 10,000 / 100,000 and a passive wait: 1,000
#: to 10,000 kept the idle speed within the noise; under load 1,000 was the steadiest
#: (10,000 fell to 3,600 tokens/s in 3 of 12 timings; 100,000 collapsed like the default).
SPIN_COUNT = 1_000
#: Intel OpenMP's equivalent, milliseconds a worker waits before it sleeps (default 200).
BLOCK_TIME_MS = 1
USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_applied = False


def set_wait_policy() -> bool:
    """Bound OpenMP's spin-waiting for this process and its children; True if it was set
    now. It does nothing (False) once torch is imported (OpenMP has read its settings) or
    when the user set a wait policy."""
    global _applied
    if "torch" in sys.modules or any(k in os.environ for k in USER_KEYS):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    os.environ["KMP_BLOCKTIME"] = str(BLOCK_TIME_MS)
    _applied = True
    return True


def wait_policy() -> str:
    """One line for reports: which OpenMP wait policy this process runs under."""
    if _applied:
        return f"bounded by tbptt (GOMP_SPINCOUNT={SPIN_COUNT}, KMP_BLOCKTIME={BLOCK_TIME_MS})"
    chosen = [f"{k}={os.environ[k]}" for k in USER_KEYS if k in os.environ]
    if chosen:
        return "set by the environment (" + ", ".join(chosen) + ")"
    return "OpenMP's default (torch was imported before tbptt)"
