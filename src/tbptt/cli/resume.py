"""Resuming ``tbptt train`` runs from the command line: the configuration a resumed run
continues with (its saved one, with the flags given) and the flags it may not change.

``--resume DIR`` takes the configuration from the newest valid checkpoint and checks
the flags against it here, naming them; the data, the metrics and the exact
continuation are the run's own (:class:`tbptt.run.Run`).
"""

from __future__ import annotations

from pathlib import Path

from tbptt.cli.common import FLAG_KEYS, run_config_from_args
from tbptt.errors import CheckpointError, ConfigError
from tbptt.run.resume import saved_config
from tbptt.train import RunConfig
from tbptt.train.checkpoint import latest_checkpoint


def find_run(out: Path, *, resume: bool, other_out: str | None = None):
    """``(path, payload)`` of the checkpoint a run in ``out`` continues from, or None.

    ``resume`` (``--resume DIR``): the directory must hold a checkpoint. Otherwise
    (``--out DIR``) an existing checkpoint means the run continues (when the settings
    are the run's own; the caller compares them).
    """
    if not resume:
        return latest_checkpoint(out) if out.is_dir() else None
    if other_out and Path(other_out) != out:
        raise ConfigError(
            f"--resume {out} and --out {other_out} name different directories; "
            "a resumed run writes into its own directory, drop --out"
        )
    if not out.is_dir():
        raise CheckpointError(
            f"--resume {out}: no such run directory; pass the --out directory of a run"
        )
    found = latest_checkpoint(out)
    if found is None:
        raise CheckpointError(
            f"--resume {out}: the directory holds no checkpoint to resume from; "
            "pass the --out directory of a run that wrote one"
        )
    return found


def configure(args, out: Path) -> tuple[RunConfig, tuple[Path, dict] | None]:
    """The run's configuration (before the data fills in the model's sizes) and the
    checkpoint to continue (None: a fresh run).

    A fresh run, or ``--out DIR``: the defaults with the given flags. ``--resume DIR``: the
    run's saved configuration with the given flags.
    """
    found = find_run(out, resume=bool(args.resume), other_out=args.out)
    if found is not None and args.resume:
        return run_config_from_args(args, base=saved_config(found)), found
    return run_config_from_args(args), found


def check_continues(config: RunConfig, found: tuple[Path, dict], *, resume: bool, out: Path):
    """One comparison with the saved run: refuse any change a resumed run may not make."""
    saved = saved_config(found)
    diffs = config.differences(saved)
    if not diffs:
        return
    if resume:
        key = diffs[0].split(" ")[0]
        raise CheckpointError(
            f"--resume {out}: {_flag(key)} {_value(config, key)} differs from the run's "
            f"{_value(saved, key)!r}; drop the flag to continue the run as it was, or start "
            "a new run with --out"
        )
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise CheckpointError(
        f"the checkpoint {found[0]} belongs to another run: {'; '.join(diffs[:3])}{more}; "
        "resume with the same settings (or --resume DIR), or use another --out"
    )


def _value(config: RunConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _flag(key: str) -> str:
    """The command-line flag of a dotted configuration key (``train.lr`` -> ``--lr``)."""
    dest = next((d for d, k in FLAG_KEYS.items() if k == key), None)
    return "--" + dest.replace("_", "-") if dest else key
