"""The thread count and OpenMP wait tbptt chooses (tbptt.threads): the rule, the user's
settings kept, the choice made in a fresh process, revised while training, reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tbptt import threads
from tbptt.threads import (
    MARK,
    SPIN_COUNT,
    THREAD_KEYS,
    USER_KEYS,
    Machine,
    choose,
    usable_cpus,
    user_settings,
)

PROBE = (
    "import json, os\n"
    "{before}\n"
    "import tbptt, torch\n"
    "from tbptt.threads import policy, wait_policy\n"
    "p = policy()\n"
    "keys = {keys!r}\n"
    "print(json.dumps({{'env': {{k: os.environ.get(k) for k in keys}}, 'threads': "
    "torch.get_num_threads(), 'policy': p.as_dict(), 'line': wait_policy()}}))\n"
)
KEYS = (*THREAD_KEYS, *USER_KEYS, MARK)


def clean_env() -> dict[str, str]:
    """This environment less any thread or wait setting (the test process has tbptt's)."""
    return {k: v for k, v in os.environ.items() if k not in KEYS}


def probe(before: str = "", **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before, keys=KEYS)],
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(busy: float, cpus: int = 4) -> Machine:
    return Machine(cpus=cpus, affinity=cpus, quota=None, ranks=1, busy=busy, busy_source="test")


# -- the rule ---------------------------------------------------------------------------


def test_an_idle_machine_gets_every_cpu_and_openmps_own_spin():
    p = choose(machine(0.2), {})
    assert p.threads == 4 and p.wait == "openmp default" and not p.user_threads
    assert "idle" in p.threads_reason and "idle" in p.wait_reason


@pytest.mark.parametrize(("busy", "threads"), [(0.6, 3), (1.5, 3), (1.6, 2), (3.4, 1), (9.0, 1)])
def test_a_busy_machine_gets_the_cpus_left_free_and_a_bounded_spin(busy, threads):
    p = choose(machine(busy), {})
    assert p.threads == threads and p.wait == "bounded"
    assert "busy" in p.threads_reason and "busy" in p.wait_reason


def test_a_thread_count_the_user_fixed_is_kept_and_bounded():
    p = choose(machine(0.0), {"OMP_NUM_THREADS": "3"})
    assert p.threads is None and p.user_threads and p.wait == "bounded"
    assert "OMP_NUM_THREADS=3" in p.threads_reason


@pytest.mark.parametrize("key", USER_KEYS)
def test_a_wait_the_user_chose_is_kept_on_any_machine(key):
    for busy in (0.0, 5.0):
        p = choose(machine(busy), {key: "7"})
        assert p.wait == "user" and f"{key}=7" in p.wait_reason


def test_after_torch_is_imported_the_wait_is_left_as_it_was():
    p = choose(machine(0.0), {}, torch_loaded=True)
    assert p.wait == "torch first" and p.threads == 4


def test_variables_a_parent_tbptt_set_are_not_taken_for_the_users():
    env = {"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "1000", MARK: "OMP_NUM_THREADS=1"}
    assert user_settings(env) == {"GOMP_SPINCOUNT": "1000"}
    env["OMP_NUM_THREADS"] = "2"  # changed since: the user's
    assert user_settings(env) == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "1000"}


def test_usable_cpus_follow_a_cgroup_quota_and_local_ranks(tmp_path, monkeypatch):
    affinity = usable_cpus(tmp_path)[1]
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPUs
    cpus, _, quota, ranks = usable_cpus(tmp_path)
    assert quota == 1.5 and cpus == 1 and ranks == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path)[2] is None
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path)[:3] == (min(3, affinity), affinity, 3.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(affinity * 2))
    assert usable_cpus(tmp_path)[0] == 1 and usable_cpus(tmp_path)[3] == affinity * 2


# -- a fresh process ----------------------------------------------------------------------


def test_a_fresh_process_starts_torch_as_the_policy_says():
    out = probe()
    p = out["policy"]
    assert out["threads"] == p["threads"] and p["wait"] in ("openmp default", "bounded")
    set_env = dict(p["set_env"])
    assert {k: out["env"][k] for k in set_env} == set_env  # in the environment, and listed
    assert out["env"][MARK] == (",".join(f"{k}={v}" for k, v in set_env.items()) or None)
    if p["wait"] == "bounded":
        assert set_env["GOMP_SPINCOUNT"] == str(SPIN_COUNT) and "bounded by tbptt" in out["line"]
    else:
        assert "GOMP_SPINCOUNT" not in set_env and "OpenMP's default spin" in out["line"]


def test_the_users_explicit_settings_are_kept_in_a_fresh_process():
    out = probe(OMP_NUM_THREADS="1", GOMP_SPINCOUNT="7")
    assert out["threads"] == 1 and out["policy"]["user_threads"]
    assert out["env"]["OMP_NUM_THREADS"] == "1" and out["env"]["GOMP_SPINCOUNT"] == "7"
    assert out["env"][MARK] is None and out["policy"]["set_env"] == []  # nothing added
    assert out["policy"]["wait"] == "user" and "GOMP_SPINCOUNT=7" in out["line"]


def test_a_child_decides_afresh_rather_than_inherit_a_parents_choice():
    out = probe(
        OMP_NUM_THREADS="1", KMP_BLOCKTIME="1", **{MARK: "OMP_NUM_THREADS=1,KMP_BLOCKTIME=1"}
    )
    assert not out["policy"]["user_threads"] and out["policy"]["wait"] != "user"


def test_after_torch_the_wait_is_left_alone_and_the_report_says_why():
    out = probe(before="import torch")
    assert out["env"]["GOMP_SPINCOUNT"] is None and out["env"][MARK] is None
    assert "torch was imported before tbptt" in out["line"]


# -- revised while training ------------------------------------------------------------


@pytest.fixture
def fresh_policy(monkeypatch):
    """tbptt.threads as a fresh process on an idle 2-CPU machine; torch's threads restored."""
    before = torch.get_num_threads()
    p = choose(machine(0.0, cpus=2), {})
    monkeypatch.setattr(threads, "_policy", p)
    monkeypatch.setattr(threads, "_state", {"set": None, "at": None, "cpu": None, "own": None})
    clock = {"cpu": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: clock["cpu"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: clock["own"])
    torch.set_num_threads(2)
    yield clock
    torch.set_num_threads(before)


def test_revise_follows_other_work_on_the_cpus(fresh_policy):
    clock = fresh_policy
    assert threads.revise(now=0.0) is None and torch.get_num_threads() == 2
    clock.update(cpu=10.0, own=9.8)  # 10 s: this process used 2 CPUs, others nothing
    assert threads.revise(now=5.0) is None and torch.get_num_threads() == 2
    clock.update(cpu=19.8, own=14.8)  # next 5 s: another job took 1 CPU
    assert threads.revise(now=10.0) == 1 and torch.get_num_threads() == 1
    assert "other work took 1.0 CPUs" in threads.policy().threads_reason
    clock.update(cpu=24.8, own=19.8)  # it ended
    assert threads.revise(now=12.0) is None  # not before REVISE_SECONDS
    assert threads.revise(now=15.0) == 2 and torch.get_num_threads() == 2


def test_revise_leaves_a_thread_count_the_user_set(fresh_policy):
    clock = fresh_policy
    threads.revise(now=0.0)
    torch.set_num_threads(1)  # the user's own call
    clock.update(cpu=10.0, own=10.0)
    assert threads.revise(now=10.0) is None and torch.get_num_threads() == 1
    assert (
        threads.policy().user_threads and "torch.set_num_threads" in threads.policy().threads_reason
    )
    threads.use_threads(2)  # --threads 2
    assert threads.revise(now=30.0) is None and torch.get_num_threads() == 2
    assert "--threads" in threads.policy().threads_reason


# -- reported --------------------------------------------------------------------------


def test_tbptt_env_reports_the_choice_and_why(capsys):
    from tbptt.cli import main

    assert main(["env"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ", 1)[0]: line for line in out.splitlines()}
    p = threads.policy()
    assert p.threads_reason in lines["torch threads"]
    assert threads.wait_policy() in lines["openmp wait"]
    assert f"{p.machine.cpus} (affinity {p.machine.affinity}" in lines["usable cpus"]
    assert "set by tbptt" in lines
