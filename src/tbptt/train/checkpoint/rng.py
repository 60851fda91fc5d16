"""The global random generators a run draws from, captured as plain data and put back."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["capture_rng", "restore_rng"]


def capture_rng() -> dict:
    """The state of every global random generator a run may draw from, as plain data.

    torch's CPU generator (dropout, initialisation), every CUDA device's
    generator where CUDA is available, Python's ``random`` and NumPy's legacy
    global generator (stored as tensors and tuples, so ``weights_only`` loading
    reads them). Generators a run owns (the strategy's) are saved by their owner.
    """
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency, but the run does not need it
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype("int64")),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` returned (generators it did not save are left alone)."""
    import random

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        keys = s["keys"].numpy().astype("uint32")
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
