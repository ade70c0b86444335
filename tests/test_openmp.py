"""The OpenMP wait choice made before torch loads (mmfs/utils/openmp.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mmfs.utils import openmp


def choose(monkeypatch, busy: float | None, environ: dict[str, str]) -> str:
    monkeypatch.setattr(openmp, "_chosen", None)
    monkeypatch.setattr(openmp, "busy_cores", lambda interval=0.1: busy)
    # as a fresh `mmfs` process, before any command imports torch
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    return openmp.choose_wait_policy(environ)


def test_idle_cores_spin_and_busy_or_unknown_ones_sleep(monkeypatch):
    environ: dict[str, str] = {}
    assert choose(monkeypatch, 0.1, environ).startswith("spinning") and environ == {}
    for busy in (0.5, 1.7, None):
        environ = {}
        said = choose(monkeypatch, busy, environ)
        assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}, busy
        assert said.startswith("OMP_WAIT_POLICY=PASSIVE") and ("unknown" if busy is None else f"{busy:.1f} of") in said


def test_ranks_of_one_torchrun_on_this_machine_sleep_even_on_idle_cores(monkeypatch):
    environ = {"LOCAL_WORLD_SIZE": "2"}
    said = choose(monkeypatch, 0.0, environ)
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE" and "2 ranks" in said
    environ = {"LOCAL_WORLD_SIZE": "1"}
    assert choose(monkeypatch, 0.0, environ).startswith("spinning") and "OMP_WAIT_POLICY" not in environ


@pytest.mark.parametrize("given", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}])
def test_a_setting_in_the_environment_is_kept(monkeypatch, given):
    environ = dict(given)
    said = choose(monkeypatch, 1.9, environ)
    assert environ == given and said.endswith("(from the environment)")


def test_the_choice_is_made_once_per_process(monkeypatch):
    environ: dict[str, str] = {}
    first = choose(monkeypatch, 1.9, environ)
    monkeypatch.setattr(openmp, "busy_cores", lambda interval=0.1: 0.0)
    assert openmp.choose_wait_policy(environ) == first


def test_too_late_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401

    monkeypatch.setattr(openmp, "_chosen", None)
    environ: dict[str, str] = {}
    assert "already loaded" in openmp.choose_wait_policy(environ) and environ == {}


@pytest.mark.parametrize("nice", [0, 19])
def test_busy_cores_sees_a_busy_process_but_not_a_niced_one(nice):
    """The /proc/stat sample counts another process's CPU use (Linux; about one core for a spinning loop),
    except at a lower priority, which yields the cores."""
    if openmp.cpu_times() is None:
        pytest.skip("no /proc/stat here")
    before = openmp.busy_cores(0.3)
    if before > 1.0:
        pytest.skip(f"the machine is busy already ({before:.1f} cores): a spinner would not show")
    spinner = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # past the interpreter's start
        added = openmp.busy_cores(0.3) - before
        assert added >= openmp.BUSY_CORES if nice == 0 else added < openmp.BUSY_CORES, (before, added)
    finally:
        spinner.kill()
        spinner.wait()
