"""Adaptive softmax: a language model's output layer for a large vocabulary.

The vocabulary, sorted by falling frequency (as :class:`~tbptt.data.Vocab` sorts
it), is cut at ``cutoffs`` c_1 < c_2 < ... into a *head* (the c_1 most frequent
tokens plus one entry per tail cluster) and tail clusters [c_i, c_{i+1}), each
behind a projection to a narrower width H / 4^i (Grave et al., 2017, "Efficient
softmax approximation for GPUs"). A token's probability is its head probability,
or its cluster's head probability times its probability within the cluster::

    log p(w) = log softmax(head(h))[w]                            w < c_1
    log p(w) = log softmax(head(h))[cluster i]
             + log softmax(tail_i(h))[w - c_i]                    c_i <= w < c_{i+1}

so the distribution is exactly normalized over the whole vocabulary (no
approximation of the likelihood: the model *is* this factored distribution).
Training scores only each target's own cluster, which is where the speed comes
from; evaluation and generation get the full (T, B, V) log-probabilities.

PyTorch's :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` does the work.
:func:`frequency_cutoffs` picks the cut-offs from the training token counts.

Shapes: hidden (T, B, H); targets (T, B) ids; log-probabilities (T, B, V).
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import ConfigError

__all__ = [
    "AdaptiveHead",
    "AdaptiveOutputs",
    "frequency_cutoffs",
    "parse_cutoffs",
    "COVERAGE",
]

# The head holds the tokens making up the first 80 % of the training text, the first
# cluster those up to 95 %, the second the rest: a few thousand tokens in the head for a
# Zipfian vocabulary of tens of thousands, the split Grave et al. found fast.
COVERAGE = (0.8, 0.95)


def frequency_cutoffs(
    counts: torch.Tensor, coverage: tuple[float, ...] = COVERAGE, *, min_cluster: int = 2
) -> tuple[int, ...]:
    """Cut-offs for a vocabulary whose ids are sorted by falling frequency.

    ``counts`` (V,): how often each id occurs in the training text. Cut-off i is the
    smallest id count whose tokens cover ``coverage[i]`` of the text; cut-offs closer
    than ``min_cluster`` to each other or to V are dropped (an empty or one-token
    cluster is pointless). A vocabulary too small to cut gets one cut-off in its middle.
    """
    V = len(counts)
    if V < 3:
        raise ConfigError(f"an adaptive softmax needs a vocabulary of at least 3 tokens, got {V}")
    share = counts.double().cumsum(0) / max(1.0, float(counts.sum()))  # (V,)
    cuts: list[int] = []
    for level in coverage:
        cut = int(torch.searchsorted(share, torch.tensor(level, dtype=share.dtype))) + 1
        cut = max(cut, 1)
        if cut <= V - min_cluster and (not cuts or cut >= cuts[-1] + min_cluster):
            cuts.append(cut)
    return tuple(cuts) or (max(1, V // 2),)


def parse_cutoffs(spec: str, vocab_size: int) -> tuple[int, ...]:
    """``"2000,10000"`` -> (2000, 10000), checked against the vocabulary size.

    Raises:
        ConfigError: not increasing integers in [1, V - 1].
    """
    try:
        cuts = tuple(int(c) for c in spec.split(","))
    except ValueError:
        raise ConfigError(
            f"adaptive softmax cut-offs must be comma-separated integers (e.g. 2000,10000) or "
            f"'auto', got {spec!r}"
        ) from None
    if not cuts or any(b <= a for a, b in zip(cuts, cuts[1:])) or cuts[0] < 1:
        raise ConfigError(f"adaptive softmax cut-offs must increase from 1 up, got {spec!r}")
    if vocab_size and cuts[-1] >= vocab_size:
        raise ConfigError(
            f"adaptive softmax cut-offs must be below the vocabulary size {vocab_size}, got {spec!r}"
        )
    return cuts


class AdaptiveOutputs:
    """A window's outputs under an adaptive head in training: the hidden states and the
    head, so the loss scores each target in its own cluster only.

    ``loss_sum(targets, mask)`` is the summed negative log-likelihood of the targets;
    ``log_probs()`` the full (T, B, V) log-probabilities (the same distribution).
    """

    def __init__(self, hidden: torch.Tensor, head: AdaptiveHead):
        self.hidden = hidden  # (T, B, H)
        self.head = head

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.hidden.shape[:-1], self.head.vocab_size))

    def log_probs(self) -> torch.Tensor:
        return self.head.log_probs(self.hidden)

    def float(self) -> torch.Tensor:
        """The full log-probabilities in float32 (for code that needs the distribution)."""
        return self.log_probs().float()

    def target_log_probs(self, targets: torch.Tensor) -> torch.Tensor:
        """(T, B) log p(target) of each row."""
        T, B = targets.shape
        out = self.head.asm(self.hidden.reshape(T * B, -1), targets.reshape(-1).long())
        return out.output.view(T, B)

    def loss_sum(self, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar: -sum of log p(target) over the rows where ``mask`` is True."""
        hidden = self.hidden.reshape(-1, self.hidden.shape[-1])  # (T*B, H)
        targets = targets.reshape(-1).long()
        if mask is not None:
            keep = mask.reshape(-1)
            hidden, targets = hidden[keep], targets[keep]
        if targets.numel() == 0:
            return self.hidden.sum() * 0.0
        return -self.head.asm(hidden, targets).output.sum()


class AdaptiveHead(nn.Module):
    """Hidden states (T, B, H) -> an adaptive softmax over V tokens (see the module docstring).

    In training mode ``forward`` returns :class:`AdaptiveOutputs` (scored per target by the
    ``lm`` objective); in evaluation mode the full log-probabilities (T, B, V), which any
    code reading logits can use as they are (softmax of log-probabilities is the
    distribution itself).
    """

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: tuple[int, ...]):
        super().__init__()
        self.vocab_size = vocab_size
        # cluster i projects to H / 4^i; a hidden size too small for that keeps the width H
        div = 4.0 if hidden_size // 4 ** len(cutoffs) >= 1 else 1.0
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(
            hidden_size, vocab_size, list(cutoffs), div_value=div, head_bias=True
        )

    @torch.no_grad()
    def init_bias(self, log_p: torch.Tensor) -> None:
        """Start the head's bias at log-probabilities ``log_p`` (V,): each shortlist token's
        own, each cluster's total (within a cluster the start is uniform)."""
        cuts = [*self.asm.cutoffs]  # [c_1, ..., c_k, V]
        clusters = [torch.logsumexp(log_p[a:b], 0) for a, b in zip(cuts, cuts[1:])]
        self.asm.head.bias.copy_(torch.cat([log_p[: cuts[0]], torch.stack(clusters)]))

    @property
    def weight(self) -> torch.Tensor:
        """The head's weight (its dtype and device are the layer's)."""
        return self.asm.head.weight

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, B, H) -> (T, B, V) log-probabilities."""
        lead = hidden.shape[:-1]
        return self.asm.log_prob(hidden.reshape(-1, hidden.shape[-1])).view(*lead, -1)

    def forward(self, hidden: torch.Tensor) -> AdaptiveOutputs | torch.Tensor:
        if self.training:
            return AdaptiveOutputs(hidden, self)
        return self.log_probs(hidden)
