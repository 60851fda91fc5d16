"""The exceptions tbptt raises for user mistakes.

Every message says what was expected, what was given and what to do, in one
line, so the command line can print it as it is and exit with code 2.
"""

from __future__ import annotations

__all__ = [
    "TbpttError",
    "DataError",
    "SpecError",
    "ConfigError",
    "CheckpointError",
    "NonFiniteError",
]


class TbpttError(ValueError):
    """Base class of every error that a user can cause and fix.

    ``options``: the dotted configuration keys (``train.lr``) the fix involves; the
    library names options, not flags, and a front end (the command line) can name its
    own flags for them.
    """

    def __init__(self, message: str = "", *, options: tuple[str, ...] = ()):
        super().__init__(message)
        self.options = tuple(options)


class DataError(TbpttError):
    """A corpus could not be found, downloaded, verified, decoded or batched."""


class SpecError(TbpttError):
    """A strategy spec such as ``regular:0`` is malformed or out of range."""


class ConfigError(TbpttError):
    """A model, optimizer or training option is invalid."""


class CheckpointError(TbpttError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class NonFiniteError(TbpttError):
    """A loss or gradient became NaN or infinite; the optimizer step was not taken."""
