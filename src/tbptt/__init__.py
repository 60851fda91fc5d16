"""tbptt: train recurrent models on long sequences with the gradient you choose.

Shape convention for the whole package (time-major, as torch's RNNs):

    T  time steps          B  batch = parallel streams     H  hidden size
    V  vocabulary size     L  layers                        I  input size
    F  input features      D  target values                 O  model outputs (V, classes or D)

    a split's rows (N,) token ids or (N, F) features; targets (N,) ids or (N, D) values
    a window's inputs (T, B) or (T, B, F); targets (T, B) or (T, B, D); outputs (T, B, O)
    resets, mask (T, B) bool
    state (L, B, H), or (hidden, cell) = ((L, B, H), (L, B, H)) for LSTM

The one abstraction: a gradient gate xi_t on each state edge h_{t-1} -> h_t,
identity forward, gradient times xi_t backward (xi = 0 is a real detach).
A truncation strategy is a rule for the gates and for where windows end.
"""

# ruff: noqa: E402  (the wait policy is set before anything below imports torch)
from tbptt.threads import set_wait_policy

set_wait_policy()  # threads and OpenMP wait chosen for the machine's load (tbptt.threads)

from tbptt.data import Dataset, StreamData, StreamDataset, TextData, load_corpus, prepare_text
from tbptt.data.series import SeriesData, prepare_series
from tbptt.data.tasks import Task, parse_task
from tbptt.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NonFiniteError,
    SpecError,
    TbpttError,
)
from tbptt.models import (
    ModelConfig,
    Recurrent,
    RecurrentLM,
    RecurrentModel,
    RecurrentNet,
    apply_gate,
)
from tbptt.models.custom import CustomLM, StatefulModule
from tbptt.train import (
    Classification,
    LanguageModel,
    Objective,
    PerStepLoss,
    Regression,
    RunConfig,
    TrainConfig,
    Trainer,
    generate,
    sequence_gradient,
)
from tbptt.truncation import (
    FullBPTT,
    RandomizedTruncation,
    RegularTruncation,
    Strategy,
    Window,
    parse_strategy,
)

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "StreamData",
    "StreamDataset",
    "Run",
    "TextData",
    "SeriesData",
    "prepare_series",
    "Task",
    "parse_task",
    "load_corpus",
    "prepare_text",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NonFiniteError",
    "SpecError",
    "TbpttError",
    "ModelConfig",
    "Recurrent",
    "RecurrentLM",
    "RecurrentModel",
    "RecurrentNet",
    "apply_gate",
    "CustomLM",
    "StatefulModule",
    "TrainConfig",
    "RunConfig",
    "Objective",
    "LanguageModel",
    "Classification",
    "Regression",
    "PerStepLoss",
    "Trainer",
    "generate",
    "sequence_gradient",
    "FullBPTT",
    "RandomizedTruncation",
    "RegularTruncation",
    "Strategy",
    "Window",
    "parse_strategy",
]


def __getattr__(name: str):
    # The run (tbptt.run) loads the plotting and TensorBoard layers: only when asked for.
    if name == "Run":
        from tbptt.run import Run

        return Run
    raise AttributeError(f"module 'tbptt' has no attribute {name!r}")
