"""The run's process tree and its host, sampled through psutil.

The tree is the training process plus every descendant (DataLoader workers, launched
subprocesses). Counters (CPU time, disk bytes) stay monotonic when a child exits: its last
reading moves into a "departed" total instead of vanishing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped, unused-ignore]

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def available_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a cgroup v2 ``cpu.max`` quota."""
    count = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    try:
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            count = min(count, float(quota) / float(period))
    except (OSError, ValueError):
        pass
    return max(count, 0.01)


@dataclass
class TreeSample:
    time_s: float
    processes: int = 0
    threads: int = 0
    rss_bytes: int = 0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    read_bytes: int = 0
    write_bytes: int = 0
    utilization: float | None = None
    pids: frozenset[int] = frozenset()
    host_cpu_utilization: float | None = None
    host_memory_used: int = 0
    host_memory_total: int = 0


@dataclass
class _Last:
    user: float = 0.0
    system: float = 0.0
    read: int = 0
    write: int = 0


@dataclass
class ProcessSampler:
    pid: int = field(default_factory=os.getpid)
    cpus: float = field(default_factory=available_cpus)

    def __post_init__(self) -> None:
        self._root = psutil.Process(self.pid)
        self._known: dict[int, psutil.Process] = {self.pid: self._root}
        self._last: dict[int, _Last] = {}
        self._departed = _Last()
        self._previous: TreeSample | None = None
        self.io_supported = True
        psutil.cpu_percent(interval=None)  # primes the host reading: its first call always returns 0

    def sample(self, rate: bool = True) -> TreeSample:
        """The tree now. ``rate=False`` (a point between two samples) leaves ``utilization`` None and
        does not move the window the next utilization is measured over."""
        now = time.monotonic()
        result = TreeSample(now)
        try:
            members = [self._root, *self._root.children(recursive=True)]
        except _GONE:
            members = []
        seen: dict[int, _Last] = {}
        for process in members:
            process = self._known.setdefault(process.pid, process)  # keep one object per pid
            try:
                with process.oneshot():
                    cpu = process.cpu_times()
                    rss = process.memory_info().rss
                    threads = process.num_threads()
                    io = self._io(process)
            except _GONE:
                continue
            reading = _Last(cpu.user, cpu.system, io[0], io[1])
            seen[process.pid] = reading
            result.processes += 1
            result.threads += threads
            result.rss_bytes += rss
        for pid, last in self._last.items():
            if pid not in seen:  # exited since the last sample: keep what it had used
                self._departed.user += last.user
                self._departed.system += last.system
                self._departed.read += last.read
                self._departed.write += last.write
                self._known.pop(pid, None)
        self._last = seen
        result.pids = frozenset(seen)
        result.cpu_user_s = self._departed.user + sum(r.user for r in seen.values())
        result.cpu_system_s = self._departed.system + sum(r.system for r in seen.values())
        result.read_bytes = self._departed.read + sum(r.read for r in seen.values())
        result.write_bytes = self._departed.write + sum(r.write for r in seen.values())
        if not rate:
            return result
        previous = self._previous
        if previous is not None and now > previous.time_s:
            used = (result.cpu_user_s + result.cpu_system_s) - (previous.cpu_user_s + previous.cpu_system_s)
            result.utilization = max(0.0, used / ((now - previous.time_s) * self.cpus))
        result.host_cpu_utilization = psutil.cpu_percent(interval=None) / 100.0
        memory = psutil.virtual_memory()
        result.host_memory_used, result.host_memory_total = memory.total - memory.available, memory.total
        self._previous = result
        return result

    def _io(self, process: psutil.Process) -> tuple[int, int]:
        if not self.io_supported:
            return 0, 0
        try:
            counters = process.io_counters()
        except (AttributeError, NotImplementedError):
            self.io_supported = False
            return 0, 0
        except psutil.AccessDenied:
            return 0, 0
        return counters.read_bytes, counters.write_bytes
