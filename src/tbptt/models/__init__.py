"""Models layer: recurrent stacks with fused and per-step paths, gates, the built-in model
(input adapter, recurrent stack, head) and the one model interface (:class:`RecurrentModel`)."""

from tbptt.models.gating import ScaleGrad, apply_gate, detach_state, map_state, segments
from tbptt.models.lm import MODEL_KINDS, ModelConfig, RecurrentLM, RecurrentNet
from tbptt.models.protocol import RecurrentModel
from tbptt.models.recurrent import KINDS, Recurrent

__all__ = [
    "ScaleGrad",
    "apply_gate",
    "detach_state",
    "map_state",
    "segments",
    "MODEL_KINDS",
    "ModelConfig",
    "RecurrentLM",
    "RecurrentNet",
    "RecurrentModel",
    "KINDS",
    "Recurrent",
]
