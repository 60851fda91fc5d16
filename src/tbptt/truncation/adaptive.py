"""Truncation whose depth K is chosen to bound the gradient's bias.

``adaptive:D`` is the estimator of Aicher, Foti & Fox (2019, "Adaptively
truncating backpropagation through time to control gradient bias"; reference
code aicherc/adaptive_tbptt). Every ``every`` epochs the train layer
(:mod:`tbptt.train.adaptive`) measures, on ``stretches`` random stretches of
the training stream, each after a burn-in of ``burnin`` rows (no gradient) to
reach a typical state, the norms of the backpropagated state gradients of the
stretch's last loss L_s,

    phi_k = mean over streams and stretches of |v_k|,   v_k = ∂L_s/∂(state entering row s - k)

for k = 0 .. W - 1 (W = ``max``), and G_j = |mean Σ_{k<j} v_k|. A depth-K window
(the loss of row s backpropagated through rows s - K + 1 .. s) keeps the lags
k < K - 1, so this module (:func:`decay_rate`, :func:`relative_bias_bound`):

1. fits beta = exp(slope) of the ordinary-least-squares line through log phi_k, k
   in [tau, W): past lag tau the norms are taken to decay geometrically, phi_k ≈
   phi_tau beta^(k - tau) (values below e^-50 are left out, as the reference code
   does; with fewer than two left, beta = 0);
2. bounds the bias of depth K by E(K - 1), E(j) = Σ_{k >= j} phi_k estimated as
   Σ_{j <= k < tau} phi_k + phi_tau beta^(max(j, tau) - tau) / (1 - beta);
3. bounds the gradient's norm from below by N = max_j (G_j - E(j)) (triangle
   inequality), so the relative bias is at most delta(K) = E(K - 1) / N;
4. takes K = the smallest integer in [1, W] with delta(K) <= D. When none passes
   (beta >= 1: no decay; or N <= 0) K = W, and the strategy says so:
   ``passed`` is False, the train layer logs a warning and the metrics carry it.

(Aicher et al.'s code counts v_0 as kept by a depth-1 window, one lag more than
the window keeps; here the count is the window's.) The bound is in the state
gradients, the quantity the paper bounds: the parameters' gradient bias follows
when ∂h/∂θ is bounded (their Theorem 1).

Training then gives every loss a depth of at least K: windows of K rows, each
run again from the state K - 1 rows before it (the paper's buffer scheme, which
is ``k1k2:K,2K-1``), losses divided by B K.

Spec: ``adaptive:D[,k=K0][,max=W][,tau=TAU][,every=E][,stretches=M][,burnin=N][,seed=S]``,
D in (0, 1); defaults K0 = 5 (the depth before the first measurement), W = 100,
TAU = 1, E = 1, M = 2, N = W, S = 0 (the stretches' random starts, from a
generator saved with the run).

``measured:D`` is the measurement this package shipped as ``adaptive:D`` before,
kept under its own name: on the training stream's first 2 ``max`` rows at the
current weights it measures each candidate ``regular:K``'s relative bias
|g_K - g| / |g| against full BPTT directly, over the doubling grid K0, 2 K0, ...
``max``, and trains as ``regular:K`` with the smallest K whose bias is at most
D (``max`` when none is, with ``passed`` False). Not Aicher et al.'s estimator:
it measures instead of bounding, only on the probe (which underestimates the
bias over the whole stream at large K), and a window's first losses have depth 1.
"""

from __future__ import annotations

import math

import torch

from tbptt.errors import SpecError
from tbptt.truncation.base import Strategy, Window, format_number

__all__ = [
    "AdaptiveTruncation",
    "MeasuredTruncation",
    "decay_rate",
    "relative_bias_bound",
    "parse_adaptive",
]

FLOOR = -50.0  # log phi below this is treated as zero (the reference code's cut)


def decay_rate(log_phi: torch.Tensor, tau: int = 0) -> float:
    """beta = exp(OLS slope of log phi_k on k), k in [tau, W]; log_phi (W + 1,).

    Entries below ``FLOOR`` are left out; with fewer than two left, beta = 0 (no gradient
    reaches that far back).
    """
    y = log_phi[tau:].double()
    k = torch.arange(tau, tau + y.shape[0], dtype=torch.float64)
    keep = y > FLOOR
    if int(keep.sum()) < 2:
        return 0.0
    x, y = k[keep] - k[keep].mean(), y[keep] - y[keep].mean()
    return math.exp(float((x * y).sum() / (x * x).sum()))


def relative_bias_bound(
    phi: torch.Tensor, running: torch.Tensor, beta: float, tau: int = 0
) -> torch.Tensor:
    """delta(K) for K = 1 .. n (n,), from phi (n,), G (n + 1,) and beta (module docstring).

    A depth-K window keeps the lags k < K - 1 of the state entering each row (and the
    loss's own row), so its bias is bounded by E(K - 1), E(j) = Σ_{k >= j} phi_k, the
    measured phi_k for k < tau and the geometric tail beyond; ``running[j]`` = G_j, the norm
    of the mean sum of the first j lags. inf where no bound holds (beta >= 1, or N <= 0).
    """
    phi, running = phi.double(), running.double()
    n = phi.shape[0]
    tau = min(tau, n - 1)
    if beta >= 1.0:
        return torch.full((n,), math.inf, dtype=torch.float64)
    js = torch.arange(0, n + 1)
    error = phi[tau] * beta ** (torch.clamp(js, min=tau) - tau).double() / (1.0 - beta)
    head = torch.flip(torch.cumsum(torch.flip(phi[:tau], [0]), 0), [0])  # Σ_{j<=k<tau} phi_k
    error[:tau] += head
    lower = float((running - error).max())
    if lower <= 0:
        return torch.full((n,), math.inf, dtype=torch.float64)
    return error[:n] / lower


class AdaptiveTruncation(Strategy):
    """Aicher et al.'s adaptive truncation (see the module docstring).

    Args:
        delta: the largest relative bias accepted, in (0, 1).
        k: the depth before the first measurement.
        max_k: W, the deepest lag measured and the largest K.
        tau: the lag from which the norms are fit as geometric.
        every: epochs between measurements.
        stretches: random stretches per measurement.
        burnin: rows run (no gradient) before each stretch; None: ``max_k``.
        seed: the seed of the stretches' random starts.
    """

    name = "adaptive"
    _defaults = {
        "k": 5,
        "max": 100,
        "tau": 1,
        "every": 1,
        "stretches": 2,
        "burnin": None,
        "seed": 0,
    }

    def __init__(
        self,
        delta: float,
        *,
        k: int = 5,
        max_k: int = 100,
        tau: int = 1,
        every: int = 1,
        stretches: int = 2,
        burnin: int | None = None,
        seed: int = 0,
    ):
        if not 0.0 < delta < 1.0:
            raise SpecError(f"{self.name}:D needs a relative bias D in (0, 1), got {delta}")
        if k < 1 or max_k < k:
            raise SpecError(f"{self.name} needs 1 <= k <= max, got k={k}, max={max_k}")
        if every < 1:
            raise SpecError(f"{self.name} every=E needs E >= 1 epochs, got {every}")
        if not 0 <= tau < max_k:
            raise SpecError(f"{self.name} needs 0 <= tau < max, got tau={tau}, max={max_k}")
        if stretches < 1 or (burnin is not None and burnin < 0):
            raise SpecError(
                f"{self.name} needs stretches >= 1 and burnin >= 0, got stretches={stretches}, "
                f"burnin={burnin}"
            )
        self.delta = float(delta)
        self.k0, self.max_k, self.tau, self.every = k, max_k, tau, every
        self.stretches, self.burnin, self.seed = stretches, burnin, seed
        self._generator: torch.Generator | None = None  # made at the first measurement
        self.k = k  # the current depth
        self.bias: float | None = None  # the estimated relative bias of the current K
        self.beta: float | None = None  # the estimated decay rate
        self.passed: bool | None = None  # whether some K met delta at the last measurement

    @property
    def spec(self) -> str:
        text = f"{self.name}:{format_number(self.delta)}"
        values = {"k": self.k0, "max": self.max_k, "tau": self.tau, "every": self.every,
                  "stretches": self.stretches, "burnin": self.burnin, "seed": self.seed}  # fmt: skip
        for key, default in self._defaults.items():
            if values[key] != default:
                text += f",{key}={values[key]}"
        return text

    @property
    def generator(self) -> torch.Generator:
        """The source of the stretches' random starts (seeded with ``seed``, saved with the run)."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    def due(self, epoch: int) -> bool:
        """Whether to measure before epoch ``epoch`` (0-based count of completed epochs)."""
        return epoch % self.every == 0

    def choose(self, phi: torch.Tensor, running: torch.Tensor) -> int:
        """Take K from phi (n,) and G (n + 1,) (module docstring); returns it."""
        n = phi.shape[0]
        tau = min(self.tau, n - 1)
        self.beta = decay_rate(torch.log(phi.double() + 1e-300), tau)
        bound = relative_bias_bound(phi, running, self.beta, tau)  # (n,): K = 1 .. n
        ok = torch.nonzero(bound <= self.delta).flatten()
        self.passed = ok.numel() > 0
        self.k = int(ok[0]) + 1 if self.passed else n
        self.bias = float(bound[self.k - 1])
        return self.k

    def metrics(self) -> dict:
        """The fields an epoch's record carries."""
        return {
            "adaptive_k": self.k,
            "adaptive_bias": self.bias,
            "adaptive_passed": self.passed,
            "adaptive_beta": self.beta,
            "adaptive_delta": self.delta,
        }

    def reference_length(self, total_steps: int) -> int:
        return self.k0

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        # every loss reaches at least K rows back: the K - 1 rows before the window run again
        return Window(length=min(self.k, remaining), lookback=self.k - 1, loss_length=self.k)

    def state_dict(self) -> dict:
        return {
            "k": self.k,
            "bias": self.bias,
            "beta": self.beta,
            "passed": self.passed,
            "generator": None if self._generator is None else self._generator.get_state(),
        }

    def load_state_dict(self, d: dict) -> None:
        self.k, self.bias = int(d["k"]), d.get("bias")
        self.beta, self.passed = d.get("beta"), d.get("passed")
        if d.get("generator") is not None:
            self.generator.set_state(d["generator"])


class MeasuredTruncation(AdaptiveTruncation):
    """``measured:D``: ``regular:K`` with K from directly measured bias on a probe (see the
    module docstring; not Aicher et al.'s estimator).

    Args:
        delta, k, max_k, every: as for :class:`AdaptiveTruncation` (default ``max`` 200).
    """

    name = "measured"
    _defaults = {"k": 5, "max": 200, "every": 1}

    def __init__(self, delta: float, *, k: int = 5, max_k: int = 200, every: int = 1):
        super().__init__(delta, k=k, max_k=max_k, every=every, tau=0)

    @property
    def spec(self) -> str:
        text = f"{self.name}:{format_number(self.delta)}"
        for key, value in (("k", self.k0), ("max", self.max_k), ("every", self.every)):
            if value != self._defaults[key]:
                text += f",{key}={value}"
        return text

    def candidates(self) -> list[int]:
        """The window lengths to measure: K0, 2 K0, 4 K0, ... up to ``max`` (included)."""
        out, k = [], self.k0
        while k < self.max_k:
            out.append(k)
            k *= 2
        return out + [self.max_k]

    def choose(self, biases: dict[int, float]) -> int:
        """Take the smallest K whose measured bias is at most δ (else the largest); returns it."""
        ok = [k for k in sorted(biases) if biases[k] <= self.delta]
        self.passed = bool(ok)
        self.k = ok[0] if ok else max(biases)
        self.bias = biases[self.k]
        return self.k

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        # the loss of a window is divided by B * K of the current K (not the initial one)
        return Window(length=min(self.k, remaining), loss_length=self.k)


def _ints(kw: dict, usage: str) -> dict:
    try:
        return {key: int(value) for key, value in kw.items()}
    except ValueError:
        raise SpecError(usage) from None


def _adaptive(*args, **kw) -> Strategy:
    usage = (
        "adaptive takes a relative bias and optionally k, max, tau, every, stretches, burnin "
        "and seed, e.g. 'adaptive:0.1,max=100'"
    )
    if len(args) != 1 or set(kw) - set(AdaptiveTruncation._defaults):
        raise SpecError(usage)
    try:
        delta = float(args[0])
    except ValueError:
        raise SpecError(usage) from None
    ints = _ints(kw, usage)
    if "max" in ints:
        ints["max_k"] = ints.pop("max")
    return AdaptiveTruncation(delta, **ints)


def _measured(*args, **kw) -> Strategy:
    usage = "measured takes a relative bias and optionally k, max and every, e.g. 'measured:0.1,max=100'"
    if len(args) != 1 or set(kw) - {"k", "max", "every"}:
        raise SpecError(usage)
    try:
        delta = float(args[0])
    except ValueError:
        raise SpecError(usage) from None
    ints = _ints(kw, usage)
    return MeasuredTruncation(
        delta, k=ints.get("k", 5), max_k=ints.get("max", 200), every=ints.get("every", 1)
    )


def parse_adaptive() -> dict:
    """The registry entries: name -> factory."""
    return {"adaptive": _adaptive, "measured": _measured}
