"""Thread pools sized from the CPUs this process may really use."""

import os

import pytest

from recfunnel import runtime


def test_the_cgroup_quota_caps_the_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))  # the host's cores
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert runtime.available_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.available_cpus(tmp_path) == 64
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert runtime.available_cpus(tmp_path) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert runtime.available_cpus(tmp_path) == 64


def test_busy_cpus_are_not_counted(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime, "idle_cpus", lambda n: 1.05)  # another process holds one core
    assert runtime.threads_for_this_run() == 1
    monkeypatch.setattr(runtime, "idle_cpus", lambda n: 1.9)
    assert runtime.threads_for_this_run() == 2
    monkeypatch.setattr(runtime, "idle_cpus", lambda n: 0.0)
    assert runtime.threads_for_this_run() == 1


def test_idle_cpus_reads_proc_stat(monkeypatch):
    samples = iter([(100.0, 1000.0), (150.0, 1200.0)])  # 50 busy of 200 jiffies: a quarter busy
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert runtime.idle_cpus(4, sample_seconds=0) == pytest.approx(3.0)


@pytest.mark.parametrize("user_value, expected", [("3", 3), ("", None), ("x", None)])
def test_configure_threads_keeps_what_the_user_set(monkeypatch, user_value, expected):
    import torch

    before = torch.get_num_threads()
    for name in runtime.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if user_value:
        monkeypatch.setenv("OMP_NUM_THREADS", user_value)
    monkeypatch.setattr(runtime, "threads_for_this_run", lambda: 1)
    try:
        n = runtime.configure_threads()
        assert n == (expected or 1)
        assert torch.get_num_threads() == n
        assert os.environ["MKL_NUM_THREADS"] == str(n)
        assert os.environ["OMP_NUM_THREADS"] == (user_value or str(n))
    finally:
        torch.set_num_threads(before)
