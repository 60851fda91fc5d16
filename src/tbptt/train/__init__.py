"""Train layer: the loop (the only place that calls backward and steps the optimizer),
evaluation, generation, metrics and checkpoints."""

from tbptt.train.checkpoint import load_checkpoint, save_checkpoint
from tbptt.train.config import (
    OPTIMIZERS,
    CheckpointConfig,
    ObjectiveConfig,
    OutputConfig,
    RunConfig,
    TrainConfig,
    build_optimizer,
)
from tbptt.train.engine import sequence_gradient, window_loss
from tbptt.train.evaluate import evaluate, evaluation_batch, unigram_perplexity
from tbptt.train.generate import generate
from tbptt.train.metrics import MetricsWriter, read_metrics
from tbptt.train.objectives import (
    OBJECTIVES,
    Classification,
    LanguageModel,
    Objective,
    PerStepLoss,
    Regression,
    make_objective,
)
from tbptt.train.trainer import Trainer

__all__ = [
    "load_checkpoint",
    "save_checkpoint",
    "sequence_gradient",
    "window_loss",
    "evaluate",
    "evaluation_batch",
    "OBJECTIVES",
    "Classification",
    "LanguageModel",
    "Objective",
    "PerStepLoss",
    "Regression",
    "make_objective",
    "unigram_perplexity",
    "generate",
    "MetricsWriter",
    "read_metrics",
    "OPTIMIZERS",
    "TrainConfig",
    "RunConfig",
    "CheckpointConfig",
    "ObjectiveConfig",
    "OutputConfig",
    "Trainer",
    "build_optimizer",
]
