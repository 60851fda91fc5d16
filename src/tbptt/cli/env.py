"""``tbptt env``: what a bug report needs."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from tbptt.data.corpus import TIME_MACHINE, default_data_dir
from tbptt.threads import policy, processor, wait_policy


def env_parser(sub) -> None:
    p = sub.add_parser("env", help="print versions, threads, BLAS and data paths (for bug reports)")
    p.set_defaults(command=env_command)


def _version(package: str) -> str:
    """An installed package's version without importing it ("not installed" otherwise)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _usable(machine) -> str:
    quota = f"{machine.quota:g}" if machine.quota is not None else "none"
    ranks = f", {machine.ranks} local ranks" if machine.ranks > 1 else ""
    return f"{machine.cpus} (affinity {machine.affinity}, cgroup quota {quota}{ranks})"


def env_command(args) -> int:
    import tbptt

    chosen = policy()
    machine = chosen.machine
    data_dir = default_data_dir()
    cached = (data_dir / TIME_MACHINE.name).is_file()
    rows = [
        ("tbptt", tbptt.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("processor", processor()),
        ("cpu count", str(os.cpu_count())),
        ("usable cpus", _usable(machine)),
        ("torch", torch.__version__),
        ("torch threads", f"{torch.get_num_threads()}: {chosen.threads_reason}"),
        ("openmp wait", wait_policy()),
        ("set by tbptt", " ".join(f"{k}={v}" for k, v in chosen.set_env) or "nothing"),
        ("mkl", str(torch.backends.mkl.is_available())),
        ("mkldnn (oneDNN)", str(torch.backends.mkldnn.is_available())),
        ("cuda", torch.version.cuda or "none"),
        ("cuda devices", str(torch.cuda.device_count()) if torch.cuda.is_available() else "0"),
        ("lightning (extra)", _version("lightning")),
        ("tensorboard (extra)", _version("tensorboard")),
        ("TBPTT_DATA_DIR", os.environ.get("TBPTT_DATA_DIR", "(unset)")),
        ("data directory", str(data_dir)),
        ("time machine cached", "yes" if cached else "no"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    config = torch.__config__.show().replace(",", " ").split()
    build = [
        item for item in config if item.split("=")[0] in ("BLAS_INFO", "LAPACK_INFO", "USE_OPENMP")
    ]
    print(f"{'build':<{width}}  {' '.join(build) or 'unknown'}")
    return 0
