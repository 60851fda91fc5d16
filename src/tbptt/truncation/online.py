"""Online strategies: the gradient computed forward in time, the state never truncated.

The backward-mode strategies (:mod:`tbptt.truncation.deterministic`,
:mod:`tbptt.truncation.stochastic`) cut the stream into windows and
backpropagate inside each. An online strategy carries, with the state, an
estimate of the sensitivity J_t = dh_t/dθ, updated every step::

    J_t = (∂f/∂h) J_{t-1} + ∂f/∂θ            gradient of step t:  ∂l_t/∂θ + ∂l_t/∂h_{t-1} J_{t-1}

so the gradient of every loss reaches back to the start of the stream, and
the optimizer can step after any number of steps. The estimators themselves
(exact, rank-one, sparse) are the train layer's (:mod:`tbptt.train.online`);
here is only the policy: which estimator, and how many steps between
optimizer steps. Specs:

====================================  =============================================
``rtrl``                              real-time recurrent learning (Williams &
                                      Zipser 1989): the exact J_t.
``uoro``                              unbiased online recurrent optimization
                                      (Tallec & Ollivier 2017): a random rank-one
                                      J_t whose expectation is the exact one.
``snap:N``                            SnAp-N (Menick et al. 2020): J_t kept only
                                      on the entries that N steps of the
                                      recurrence can reach (``snap:1``, ``snap:2``),
                                      the mask applied before each step's gradient.
``snap-lagged:N``                     SnAp's mask applied after each step's
                                      gradient (each loss sees one unmasked step;
                                      not the published estimator, see
                                      :mod:`tbptt.train.online.rtrl`).
``layer-rtrl``                        element-wise recurrences (minGRU, minLSTM,
                                      LRU): exact RTRL inside each layer with a
                                      diagonal sensitivity (memory B P), spatial
                                      backpropagation between layers (Zucchet et
                                      al. 2023); exact for one layer, which ``rtrl``
                                      then uses (:mod:`tbptt.train.online.diagonal`).
``...,update_every=U`` / ``rtrl:update_every=U``
                                      one optimizer step every U steps (default
                                      1); the losses of the U steps are summed and
                                      divided by B * U.
====================================  =============================================

A window of an online strategy is the U steps between two optimizer steps:
it never starts from a fresh state (``reset`` False) and has no gates. The
stream's own boundaries (epoch ends, document starts) still reset the state
and its sensitivity.
"""

from __future__ import annotations

from tbptt.errors import SpecError
from tbptt.truncation.base import Strategy, Window

__all__ = ["OnlineStrategy", "ESTIMATORS", "parse_online"]

ESTIMATORS = ("rtrl", "uoro", "snap", "snap-lagged", "layer-rtrl")
ORDERED = ("snap", "snap-lagged")  # the estimators that take an order N


class OnlineStrategy(Strategy):
    """An online gradient estimator and its optimizer-step period (see the module docstring).

    Args:
        estimator: ``"rtrl"``, ``"uoro"``, ``"snap"`` or ``"snap-lagged"``.
        order: SnAp's N (>= 1); 0 for the others.
        update_every: steps between optimizer steps (>= 1).
    """

    stochastic = False

    def __init__(self, estimator: str, *, order: int = 0, update_every: int = 1):
        if estimator not in ESTIMATORS:
            raise SpecError(
                f"unknown online estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}"
            )
        if estimator in ORDERED and order < 1:
            raise SpecError(
                f"{estimator} needs an order N >= 1 (e.g. '{estimator}:1'), got {order}"
            )
        if estimator not in ORDERED and order != 0:
            raise SpecError(f"{estimator} takes no order, got {order}")
        if update_every < 1:
            raise SpecError(f"update_every must be at least 1, got {update_every}")
        self.name = estimator
        self.estimator = estimator
        self.order = order
        self.update_every = update_every
        self.stochastic = estimator == "uoro"

    @property
    def spec(self) -> str:
        ordered = self.estimator in ORDERED
        head = f"{self.estimator}:{self.order}" if ordered else self.estimator
        if self.update_every == 1:
            return head
        sep = "," if ordered else ":"
        return f"{head}{sep}update_every={self.update_every}"

    def reference_length(self, total_steps: int) -> int:
        return self.update_every

    def plan(self, remaining: int, generator) -> Window:
        return Window(length=min(self.update_every, remaining))


def _update_every(kw: dict, usage: str) -> int:
    if set(kw) - {"update_every"}:
        raise SpecError(usage)
    text = kw.get("update_every", "1")
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"update_every needs an integer, got {text!r}") from None


def _rtrl(*args, **kw) -> Strategy:
    usage = "rtrl takes no arguments but update_every, e.g. 'rtrl' or 'rtrl:update_every=10'"
    if args:
        raise SpecError(usage)
    return OnlineStrategy("rtrl", update_every=_update_every(kw, usage))


def _layer_rtrl(*args, **kw) -> Strategy:
    usage = "layer-rtrl takes no arguments but update_every, e.g. 'layer-rtrl:update_every=10'"
    if args:
        raise SpecError(usage)
    return OnlineStrategy("layer-rtrl", update_every=_update_every(kw, usage))


def _uoro(*args, **kw) -> Strategy:
    usage = "uoro takes no arguments but update_every, e.g. 'uoro' or 'uoro:update_every=10'"
    if args:
        raise SpecError(usage)
    return OnlineStrategy("uoro", update_every=_update_every(kw, usage))


def _ordered(name: str):
    def factory(*args, **kw) -> Strategy:
        usage = (
            f"{name} takes an order N and optionally update_every, e.g. '{name}:1' or "
            f"'{name}:2,update_every=10'"
        )
        if len(args) != 1:
            raise SpecError(usage)
        try:
            order = int(args[0])
        except ValueError:
            raise SpecError(f"{name}:N needs an integer, got {args[0]!r}") from None
        return OnlineStrategy(name, order=order, update_every=_update_every(kw, usage))

    return factory


def parse_online() -> dict:
    """The registry entries of the online strategies: name -> factory."""
    return {
        "rtrl": _rtrl,
        "uoro": _uoro,
        "snap": _ordered("snap"),
        "snap-lagged": _ordered("snap-lagged"),
        "layer-rtrl": _layer_rtrl,
    }
