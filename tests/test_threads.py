"""The OpenMP wait policy tbptt sets before torch loads (tbptt.threads), and when it must not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tbptt.threads import SPIN_COUNT, USER_KEYS

PROBE = (
    "import os, sys\n"
    "{before}\n"
    "import tbptt\n"
    "from tbptt.threads import wait_policy\n"
    "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('KMP_BLOCKTIME'), '|', wait_policy())\n"
)


def without_wait_policy() -> dict[str, str]:
    """This environment less any wait policy (the test process may have one from tbptt)."""
    return {k: v for k, v in os.environ.items() if k not in USER_KEYS}


def probe(before: str = "", **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**without_wait_policy(), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_importing_tbptt_first_bounds_the_spin_for_the_whole_process():
    line = probe()
    assert line.startswith(f"{SPIN_COUNT} 1 |"), line
    assert "bounded by tbptt" in line


@pytest.mark.parametrize("key", ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"])
def test_a_wait_policy_the_user_chose_is_kept(key):
    value = "PASSIVE" if key == "OMP_WAIT_POLICY" else "7"
    line = probe(**{key: value})
    assert "bounded by tbptt" not in line and f"{key}={value}" in line, line
    if key != "GOMP_SPINCOUNT":
        assert line.startswith("None"), line  # nothing added beside the user's choice


def test_after_torch_is_imported_nothing_is_set_and_the_report_says_why():
    line = probe(before="import torch")
    assert line.startswith("None None |"), line
    assert "torch was imported before tbptt" in line


def test_tbptt_env_reports_the_wait_policy():
    out = subprocess.run(
        [sys.executable, "-m", "tbptt", "env"],
        env=without_wait_policy(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "openmp wait" in out and "bounded by tbptt" in out, out
