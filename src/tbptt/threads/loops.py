"""Threads inside a loop of small steps: one for the element-wise work, all for the products.

The thread count and OpenMP's wait for the whole process are chosen in :mod:`tbptt.threads`;
this is what a step loop does within that choice. Imports nothing heavy (torch is imported
when a block starts).
"""

from __future__ import annotations

__all__ = ["StepThreads"]


class StepThreads:
    """One thread for a loop's elementwise ops, all of them for its matrix products.

    A step's elementwise ops touch a few thousand values; ATen's ``tanh`` and ``exp`` (MKL's
    vector math) open an OpenMP region from 2,048 values, and waking a second thread for it
    costs more than the op (docs/benchmarks.md, "Performance, part 2"). ``with StepThreads()
    as threads:`` runs the block on one thread; ``threads.wide()`` before a step's product
    and ``threads.narrow()`` after it (no-ops when torch runs on one thread anyway). The
    thread count is restored however the block ends.
    """

    def __init__(self):
        import torch

        self.threads = torch.get_num_threads()
        if self.threads > 1:
            self.wide = lambda: torch.set_num_threads(self.threads)
            self.narrow = lambda: torch.set_num_threads(1)
        else:
            self.wide = self.narrow = _nothing

    def __enter__(self) -> StepThreads:
        self.narrow()
        return self

    def __exit__(self, *exc) -> None:
        self.wide()


def _nothing() -> None:
    pass
