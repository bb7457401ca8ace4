"""Thread control: available CPUs, the setting's parsing, the load governor, the passive wait policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from paretoalign import threads
from paretoalign.cli import main
from paretoalign.errors import InputError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    write(tmp_path / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == pytest.approx(3.0)
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing") is None


def test_available_cpus_respects_quota_and_affinity(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.available_cpus() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cpus() == 4


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("AUTO", "auto"),
                                             ("torch", "torch"), ("3", 3), (2, 2)])
def test_parse_threads(value, expected):
    assert threads.parse_threads(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5", 0])
def test_parse_threads_rejects(value):
    with pytest.raises(InputError, match="--threads"):
        threads.parse_threads(value)


def test_read_cpu_sample_counts_only_our_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 0 500 9000 0 0 0 0 0 0\n"
                    "cpu0 100 10 50 900 7 1 2 3 0 0\n"
                    "cpu1 900 0 450 100 0 0 0 0 0 0\n"
                    "intr 12345\n")
    ticks = threads._clock_ticks()
    s = threads.read_cpu_sample([0], str(stat))
    assert s.busy == pytest.approx((100 + 10 + 50 + 1 + 2 + 3) / ticks)
    both = threads.read_cpu_sample([0, 1], str(stat))
    assert both.busy == pytest.approx((166 + 1350) / ticks)
    assert threads.read_cpu_sample([7], str(stat)) is None
    assert threads.read_cpu_sample([0], str(tmp_path / "nope")) is None


class FakeCpu:
    """Samples where other processes used `others` cores (and we used `own`) over each 1 s of wall clock."""

    def __init__(self):
        self.t = self.busy = self.own_t = 0.0
        self.others = 0.0
        self.own = 1.0

    def advance(self):
        self.t += 1.0
        self.busy += self.others + self.own
        self.own_t += self.own

    def __call__(self):
        return threads.CpuSample(busy=self.busy, wall=self.t, own=self.own_t)


def governed(max_threads=2):
    cpu = FakeCpu()
    calls = []
    gov = threads.ThreadGovernor(max_threads, interval=0.0, sampler=cpu, set_threads=calls.append)
    return gov, cpu, calls


def test_governor_yields_cores_to_other_processes_and_takes_them_back():
    gov, cpu, calls = governed(2)
    cpu.advance()
    assert gov.tick() == 2 and calls == []  # alone: all cores
    cpu.others = 1.0
    cpu.advance()
    assert gov.tick() == 1 and calls == [1]
    assert gov.others_busy == pytest.approx(1.0)
    cpu.advance()
    assert gov.tick() == 1 and calls == [1]  # no call into torch when nothing changes
    cpu.others = 0.05
    cpu.advance()
    assert gov.tick() == 2 and calls == [1, 2]
    assert gov.changes == 2


def test_governor_hysteresis_and_floor():
    gov, cpu, calls = governed(4)
    for others, expected in [(0.3, 4), (0.7, 3), (1.2, 3), (0.2, 4), (3.9, 1), (10.0, 1), (2.1, 2)]:
        cpu.others = others
        cpu.advance()
        assert gov.tick() == expected, others
    assert min(calls) >= 1


def test_governor_rate_limits(monkeypatch):
    cpu = FakeCpu()
    samples = []

    def sampler():
        samples.append(1)
        return cpu()

    gov = threads.ThreadGovernor(2, interval=3600.0, sampler=sampler, set_threads=lambda n: None)
    for _ in range(100):
        gov.tick()
    assert len(samples) == 1  # only the initial sample: the interval has not passed


def test_configure_fixed_and_torch_modes_restore_in_scope():
    before = torch.get_num_threads()
    with threads.threads_scope(1) as mode:
        assert mode == 1 and torch.get_num_threads() == 1 and threads.governor() is None
    assert torch.get_num_threads() == before
    torch.set_num_threads(1)
    try:
        with threads.threads_scope("torch"):
            assert torch.get_num_threads() == 1 and threads.governor() is None
        with threads.threads_scope("auto"):
            assert torch.get_num_threads() == threads.available_cpus()
            assert threads.governor() is not None
        assert threads.governor() is None and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_configure_reads_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV_THREADS, "1")
    with threads.threads_scope(None) as mode:
        assert mode == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV_THREADS, "lots")
    with pytest.raises(InputError, match=threads.ENV_THREADS):
        threads.configure_threads(None)


def test_watch_ticks_the_governor_before_each_forward(monkeypatch):
    gov, cpu, calls = governed(2)
    ticks = []
    monkeypatch.setattr(gov, "tick", lambda tokens=None: ticks.append(tokens) or 2)
    monkeypatch.setattr(threads, "_governor", gov)
    model = torch.nn.Linear(3, 2)
    threads.watch(model)
    threads.watch(model)  # one hook only
    model(torch.zeros(1, 3))
    model(torch.zeros(4, 5, 3))
    assert ticks == [3, 60]  # a positional tensor is read as input_ids: its size is the tokens of the call
    monkeypatch.setattr(threads, "_governor", None)
    model(torch.zeros(1, 3))  # no governor: the hook does nothing
    assert len(ticks) == 2


def test_coarse_calls_use_every_thread_fine_ones_the_free_cores():
    gov, cpu, calls = governed(2)
    cpu.others = 1.0
    cpu.advance()
    assert gov.tick(tokens=8) == 1  # a decoding step of 8 candidates on a busy machine
    assert gov.tick(tokens=threads.COARSE_TOKENS) == 2  # a prefill / embedding batch: all threads
    assert gov.tick(tokens=None) == 1  # unknown size: treated as fine work
    assert calls == [1, 2, 1]
    cpu.others = 0.0
    cpu.advance()
    assert gov.tick(tokens=8) == 2  # idle again: all threads for everything


def test_forward_tokens_reads_ids_and_embeds():
    ids = torch.zeros(3, 7, dtype=torch.long)
    assert threads.forward_tokens((), {"input_ids": ids}) == 21
    assert threads.forward_tokens((ids,), {}) == 21
    assert threads.forward_tokens(({"input_ids": ids, "attention_mask": ids},), {}) == 21  # sentence-transformers
    assert threads.forward_tokens((), {"inputs_embeds": torch.zeros(2, 5, 16)}) == 10
    assert threads.forward_tokens((), {"attention_mask": ids}) is None


def _wait_policy_after_configure(mode: str, load: float, **env) -> str:
    """OMP_WAIT_POLICY once `configure_threads(mode)` ran in a fresh process whose start-up load reads `load`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", threads.ENV_THREADS)}
    clean.update(env)
    code = ("import os, sys\nfrom paretoalign import threads\n"
            "threads.startup_load = lambda seconds=0.2: float(sys.argv[2])\n"
            "threads.configure_threads(sys.argv[1])\nimport torch\n"
            "gov = threads.governor()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), None if gov is None else gov.passive)")
    out = subprocess.run([sys.executable, "-c", code, mode, str(load)], env=clean, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_passive_wait_policy_only_on_a_busy_machine_and_never_over_the_user():
    assert _wait_policy_after_configure("auto", 1.5) == "PASSIVE True"  # busy at start: idle threads sleep
    assert _wait_policy_after_configure("auto", 0.1) == "None False"  # idle: the faster spinning default stays
    assert _wait_policy_after_configure("2", 1.5) == "PASSIVE None"  # a fixed count, no governor
    assert _wait_policy_after_configure("torch", 1.5) == "None None"  # torch: nothing touched
    assert _wait_policy_after_configure("auto", 1.5, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"


def test_startup_load_reads_proc_stat():
    load = threads.startup_load(0.05)
    assert load is None or 0.0 <= load <= len(threads.affinity_cpus()) + 0.5


def test_with_spinning_threads_coarse_work_also_yields():
    cpu = FakeCpu()
    calls = []
    gov = threads.ThreadGovernor(2, interval=0.0, passive=False, sampler=cpu, set_threads=calls.append)
    cpu.others = 1.0
    cpu.advance()
    assert gov.tick(tokens=10_000) == 1  # spinning idle threads: a busy core hurts coarse work too
    cpu.others = 0.0
    cpu.advance()
    assert gov.tick(tokens=10_000) == 2


def test_cli_threads_flag_is_checked(capsys, monkeypatch):
    assert main(["score", "--threads", "0", "--model", "m", "--input", "i.jsonl", "--output", "o.jsonl"]) == 2
    assert "--threads" in capsys.readouterr().err
    monkeypatch.setenv(threads.ENV_THREADS, "-1")
    assert main(["score", "--model", "m", "--input", "i.jsonl", "--output", "o.jsonl"]) == 2
    assert threads.ENV_THREADS in capsys.readouterr().err
