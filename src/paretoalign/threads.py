"""CPU threads: how many this process may use, a passive OpenMP wait policy, and a governor that yields cores.

Why: PyTorch's CPU kernels run on an OpenMP pool whose idle threads spin. When another process wants the same
cores, every parallel region waits for a descheduled thread and small kernels (one decoding step, a gating
update) become 5–50× slower. Three levers, measured in ``benchmarks/bench_contention.py``:

- the thread count starts from the CPUs actually available (affinity mask, cgroup v1/v2 CPU quota), not the
  machine's core count;
- ``OMP_WAIT_POLICY=PASSIVE`` when other processes already keep a core busy at start-up (sampled for 0.2 s by
  `configure_threads`, before torch loads, unless the user set a policy): idle pool threads sleep instead of
  spinning; on an idle machine the default (spin, then sleep) stays, as it is faster there;
- in ``auto`` mode a governor, ticked by a forward pre-hook on each loaded model, reads (at most every
  ``interval`` seconds) how much CPU the other processes use (``/proc/stat`` minus our own CPU time); fine-grained
  calls (a decoding step) then run on the cores left free (at least one), coarse ones (a prefill, an embedding
  batch, a training step: ``COARSE_TOKENS`` tokens or more) on all of them. A fixed count disables it.

Settings: ``--threads auto|N|torch`` on every command, or ``PARETOALIGN_THREADS``; ``torch`` leaves torch's
threading and the OpenMP environment exactly as they are. Thread counts can change float rounding in a few
kernels, so a run that must repeat bit for bit across machine load should fix ``--threads N``.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ENV_THREADS = "PARETOALIGN_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
_MODES = ("auto", "torch")


class _Module(Protocol):
    def register_forward_pre_hook(self, hook: Callable, *args, **kwargs): ...


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited."""
    candidates = [(root / "cpu.max", None)]
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        candidates.append((v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            text = quota_file.read_text().split()
            if period_file is None:
                quota, period = text[0], text[1] if len(text) > 1 else "100000"
            else:
                quota, period = text[0], period_file.read_text().split()[0]
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            q, p = int(quota), int(period)
        except ValueError:
            continue
        if q > 0 and p > 0:
            return q / p
    return None


def affinity_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def available_cpus() -> int:
    """Whole CPUs this process may use: its affinity mask, capped by a cgroup quota (at least 1)."""
    n = len(affinity_cpus())
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return max(1, n)


def parse_threads(value: str | int | None, *, source: str = "--threads") -> str | int:
    """'auto' | 'torch' | a positive int, from a flag or the environment (InputError naming `source`)."""
    from paretoalign.errors import InputError

    if value is None or value == "":
        return "auto"
    if isinstance(value, int):
        n, text = value, str(value)
    else:
        text = str(value).strip().lower()
        if text in _MODES:
            return text
        try:
            n = int(text)
        except ValueError:
            n = 0
    if n < 1:
        raise InputError(f"expected 'auto', 'torch' or a positive integer, got {text!r}",
                         path="command line" if source.startswith("--") else None, field=source)
    return n


def wait_policy_in_force() -> str | None:
    """The OpenMP wait policy torch's runtime reads (or has read): the OMP_WAIT_POLICY environment variable."""
    value = os.environ.get(WAIT_POLICY_ENV)
    return value.strip().upper() if value else None


def choose_wait_policy(others_busy: float | None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE when other processes keep a core busy, before torch loads; True if it was set.

    Measured (benchmarks/bench_contention.py): next to a busy process, spinning idle threads make an embedding
    2.9x slower and passive ones 2.0x; alone, passive costs 5-25 %, so on an idle machine the default stays. Never
    overrides a policy the user set, and does nothing once torch is loaded (its runtime has read it).
    """
    if "torch" in sys.modules or WAIT_POLICY_ENV in os.environ:
        return False
    if others_busy is None or others_busy < BUSY_AT_START:
        return False
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return True


BUSY_AT_START = 0.5
"""Cores used by other processes at start-up from which idle OpenMP threads should sleep, not spin."""


def startup_load(seconds: float = 0.2) -> float | None:
    """Cores other processes used over the next `seconds` (None where /proc/stat cannot be read)."""
    cpus = affinity_cpus()
    first = read_cpu_sample(cpus)
    if first is None:
        return None
    time.sleep(seconds)
    last = read_cpu_sample(cpus)
    if last is None or last.wall <= first.wall:
        return None
    return max(0.0, (last.busy - first.busy) - (last.own - first.own)) / (last.wall - first.wall)


@dataclass
class CpuSample:
    """Busy and total jiffies of our CPUs, our own CPU seconds and the wall clock, at one instant."""

    busy: float
    wall: float
    own: float


def read_cpu_sample(cpus: list[int], stat_path: str = "/proc/stat") -> CpuSample | None:
    """Busy CPU seconds of `cpus` since boot (from /proc/stat), with our own process CPU time; None if unreadable."""
    try:
        with open(stat_path, encoding="ascii") as f:
            lines = f.readlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = 0
    found = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
            fields = [int(x) for x in parts[1:9]]
            busy += fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
            found += 1
    if not found:
        return None
    return CpuSample(busy=busy / _clock_ticks(), wall=time.monotonic(), own=time.process_time())


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


COARSE_TOKENS = 128
"""Tokens in one forward call from which it counts as coarse work (see ThreadGovernor)."""


class ThreadGovernor:
    """Sets torch's intra-op threads per forward call: all of them for coarse work, the free cores for fine work.

    A decoding step is hundreds of small kernels, each ending in a barrier of the OpenMP team: while another
    process holds a core, one descheduled thread stalls the whole team, so fewer threads win (measured: Best-of-8
    next to a matmul loop 1.3x slower with 1 thread, 1.55x with 2). A forward over many tokens (prefill, embedding,
    training) is a few long matrix products: there each thread's CPU share counts and, with the passive wait
    policy, all threads win (embedding next to the same loop: 2.0x with 2 threads, 2.7x with 1); with spinning
    idle threads (the policy is chosen at start-up, see `choose_wait_policy`) it too runs on the free cores. The
    free cores are re-read from the load every `interval` seconds.
    """

    def __init__(self, max_threads: int, *, interval: float = 0.5, coarse_tokens: int = COARSE_TOKENS,
                 passive: bool = True, sampler: Callable[[], CpuSample | None] | None = None,
                 set_threads: Callable[[int], None] | None = None) -> None:
        self.max_threads = max(1, int(max_threads))
        self.interval = interval
        self.coarse_tokens = coarse_tokens
        self.passive = passive
        """Whether idle OpenMP threads sleep; if they spin, coarse work too runs on the free cores only."""
        cpus = affinity_cpus()
        self._sampler = sampler or (lambda: read_cpu_sample(cpus))
        self._set_threads = set_threads or _torch_set_threads
        self.threads = self.max_threads
        """The thread count in force."""
        self.load_threads = self.max_threads
        """The threads for fine-grained work: the cores other processes leave free."""
        self.changes = 0
        self.others_busy: float | None = None
        self._last = self._sampler()
        self._next = time.monotonic() + interval

    def tick(self, tokens: int | None = None) -> int:
        """Before a forward call over `tokens` tokens (None: unknown, taken as fine work); returns the threads set."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._read_load()
        coarse = self.passive and tokens is not None and tokens >= self.coarse_tokens
        self.apply(self.max_threads if coarse else self.load_threads)
        return self.threads

    def _read_load(self) -> None:
        sample = self._sampler()
        last, self._last = self._last, sample
        if sample is None or last is None or sample.wall <= last.wall:
            return
        others = max(0.0, (sample.busy - last.busy) - (sample.own - last.own)) / (sample.wall - last.wall)
        self.others_busy = others
        self.load_threads = self.target(others)

    def target(self, others_busy: float) -> int:
        """Threads for fine work given the cores other processes use (the cores left free, at least 1)."""
        free = self.max_threads - others_busy
        current = self.load_threads
        # Hysteresis: grow only when a whole core is clearly free, shrink as soon as one is clearly taken.
        if free >= current + 0.75:
            return min(self.max_threads, int(free + 0.25))
        if free < current - 0.4:
            return max(1, min(self.max_threads, int(free + 0.6)))
        return current

    def apply(self, n: int) -> None:
        """Set the thread count (no call into torch when it does not change)."""
        if n != self.threads:
            self._set_threads(n)
            self.threads = n
            self.changes += 1


def _torch_set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


_governor: ThreadGovernor | None = None
_mode: str | int | None = None


def configure_threads(threads: str | int | None = None) -> str | int:
    """Apply a thread setting ('auto' default, 'torch', or N; None reads PARETOALIGN_THREADS); returns the mode."""
    global _governor, _mode
    mode = parse_threads(threads) if threads is not None else parse_threads(os.environ.get(ENV_THREADS),
                                                                             source=ENV_THREADS)
    _mode = mode
    _governor = None
    if mode == "torch":
        return mode
    if "torch" not in sys.modules and WAIT_POLICY_ENV not in os.environ:
        choose_wait_policy(startup_load())
    import torch

    n = available_cpus() if mode == "auto" else int(mode)
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    except Exception:  # noqa: BLE001 - BLAS limits are an optimisation, never a reason to fail
        pass
    if mode == "auto":
        _governor = ThreadGovernor(n, passive=wait_policy_in_force() == "PASSIVE")
    return mode


@contextmanager
def threads_scope(threads: str | int | None = None) -> Iterator[str | int]:
    """`configure_threads` for the duration of a block; torch's thread count and the governor are restored after."""
    global _governor, _mode
    saved = (_governor, _mode, _torch_threads_if_loaded())
    try:
        yield configure_threads(threads)
    finally:
        _governor, _mode = saved[0], saved[1]
        if saved[2] is not None:
            _torch_set_threads(saved[2])


def _torch_threads_if_loaded() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def governor() -> ThreadGovernor | None:
    """The active governor (auto mode after `configure_threads`), else None."""
    return _governor


def tick() -> None:
    """Let the governor re-check the load (cheap when called often)."""
    if _governor is not None:
        _governor.tick()


def forward_tokens(args: tuple, kwargs: dict) -> int | None:
    """Tokens in a forward call: `input_ids` / `inputs_embeds` (keyword, positional, or in a features dict)."""
    first = args[0] if args else None
    source = first if isinstance(first, dict) else kwargs
    ids = source.get("input_ids")
    if ids is None and source is kwargs:
        ids = first
    if getattr(ids, "shape", None) is not None and len(ids.shape) >= 1:
        return int(math.prod(ids.shape))
    embeds = source.get("inputs_embeds")
    if getattr(embeds, "shape", None) is not None and len(embeds.shape) >= 2:
        return int(math.prod(embeds.shape[:-1]))
    return None


def _pre_hook(module, args, kwargs) -> None:  # noqa: ARG001 - forward pre-hook signature
    if _governor is not None:
        _governor.tick(forward_tokens(args, kwargs))


def watch(model: _Module) -> None:
    """Tick the governor before each forward call of `model` (one hook per model; harmless without a governor)."""
    if getattr(model, "_paretoalign_threads_hook", False):
        return
    model.register_forward_pre_hook(_pre_hook, with_kwargs=True)
    try:
        model._paretoalign_threads_hook = True
    except AttributeError:
        pass


class CallLock:
    """A per-instance lock, `self._lock`, held around a model's whole call by the classes that inherit this.

    Why: Hugging Face fast tokenizers keep truncation / padding settings in shared state, so two threads calling
    one model at once can tokenize with each other's settings (wrong scores, or a crash). Copies and pickles leave
    the lock out; each copy gets its own.
    """

    _lock: threading.Lock

    def _init_lock(self) -> None:
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_lock()
