"""Models layer: recurrent stacks with fused and per-step paths, gates, the language model."""

from tbptt.models.gating import ScaleGrad, apply_gate, detach_state, map_state, segments
from tbptt.models.lm import ModelConfig, RecurrentLM
from tbptt.models.recurrent import KINDS, Recurrent

__all__ = [
    "ScaleGrad",
    "apply_gate",
    "detach_state",
    "map_state",
    "segments",
    "ModelConfig",
    "RecurrentLM",
    "KINDS",
    "Recurrent",
]
