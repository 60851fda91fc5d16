"""Atomic writes of a run directory's files: :mod:`tbptt.atomic` (the one place they are
written), re-exported for the train layer's modules."""

from tbptt.atomic import (
    fsync_directory,
    os_error_in,
    remove_debris,
    replacing,
    write_all,
    write_atomically,
    write_error,
)

__all__ = [
    "replacing",
    "write_atomically",
    "write_all",
    "write_error",
    "os_error_in",
    "fsync_directory",
    "remove_debris",
]
