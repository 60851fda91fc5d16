"""A run as a library object: its directory, lock, configuration, metrics, checkpoints,
signals, resume and outputs (:class:`Run`), shared by ``tbptt train`` and your scripts."""

from tbptt.run.outputs import ran_on, write_outputs
from tbptt.run.resume import check_same_data, restore_metrics, saved_config
from tbptt.run.run import RUN_FILES, Run, RunResult
from tbptt.run.signals import Stopped, StopRequest

__all__ = [
    "Run",
    "RunResult",
    "RUN_FILES",
    "Stopped",
    "StopRequest",
    "check_same_data",
    "ran_on",
    "restore_metrics",
    "saved_config",
    "write_outputs",
]
