"""``tbptt env``: what a bug report needs."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from tbptt.data.corpus import TIME_MACHINE, default_data_dir
from tbptt.threads import wait_policy


def env_parser(sub) -> None:
    p = sub.add_parser("env", help="print versions, threads, BLAS and data paths (for bug reports)")
    p.set_defaults(command=env_command)


def _version(package: str) -> str:
    """An installed package's version without importing it ("not installed" otherwise)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def env_command(args) -> int:
    import tbptt

    data_dir = default_data_dir()
    cached = (data_dir / TIME_MACHINE.name).is_file()
    rows = [
        ("tbptt", tbptt.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("processor", platform.processor() or platform.machine()),
        ("cpu count", str(os.cpu_count())),
        ("torch", torch.__version__),
        ("torch threads", str(torch.get_num_threads())),
        ("openmp wait", wait_policy()),
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
