"""Watching the operator process through a chaos run: its memory, and exits nobody caused.

``WatchedOperator`` remembers the processes the run killed itself; ``Watch`` samples the
running process's resident memory (``/proc/PID/status``) every second and, when the
process died without being killed, records the exit and starts it again (a crash loop
shows as many such exits).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.operator_harness import Operator

MIB = 1024 * 1024


class WatchedOperator(Operator):
    """The harness's operator; ``killed`` holds the pids the run killed or stopped."""

    killed: set[int]

    def start(self) -> None:
        if not hasattr(self, "killed"):
            self.killed = set()
        super().start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.killed.add(self.proc.pid)
        super().kill(sig)


@dataclass(frozen=True)
class Exit:
    pid: int
    returncode: int | None
    at: float
    log_tail: str


@dataclass(frozen=True)
class Sample:
    at: float
    pid: int
    rss: int


def rss(pid: int) -> int | None:
    """Resident memory of a process in bytes (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Memory:
    """Resident memory of the operator across the run (bytes)."""

    samples: list[Sample] = field(default_factory=list)
    #: When every request was finished (the idle tail starts).
    done_at: float | None = None

    @property
    def start(self) -> int:
        """The highest sample of the first incarnation that ran 20 s or more."""
        first = self.incarnations()
        for pid_samples in first:
            if pid_samples[-1].at - pid_samples[0].at >= 20:
                return max(s.rss for s in pid_samples)
        return max((s.rss for s in self.samples), default=0)

    @property
    def peak(self) -> int:
        return max((s.rss for s in self.samples), default=0)

    @property
    def end(self) -> int:
        return self.samples[-1].rss if self.samples else 0

    @property
    def at_done(self) -> int:
        before = [s.rss for s in self.samples if self.done_at and s.at <= self.done_at]
        return before[-1] if before else self.end

    def incarnations(self) -> list[list[Sample]]:
        out: dict[int, list[Sample]] = {}
        for sample in self.samples:
            out.setdefault(sample.pid, []).append(sample)
        return list(out.values())

    @property
    def median_peak(self) -> int:
        peaks = [max(s.rss for s in samples) for samples in self.incarnations()]
        return int(statistics.median(peaks)) if peaks else 0

    def failures(self) -> list[str]:
        """Growth: the idle tail above the moment work ended by 20% (+ 8 MiB), or the
        last process above twice the median of every process's peak."""
        out = []
        if not self.samples:
            return ["no memory samples"]
        if self.end > 1.2 * self.at_done + 8 * MIB:
            out.append(
                f"memory grew while idle: {self.at_done / MIB:.0f} -> {self.end / MIB:.0f} MiB"
            )
        if self.end > 2 * self.median_peak:
            out.append(
                f"memory at the end {self.end / MIB:.0f} MiB > twice the median peak "
                f"{self.median_peak / MIB:.0f} MiB"
            )
        return out


class Watch:
    """Samples the operator's memory every ``every`` seconds; restarts it after an exit
    the run did not cause, and records that exit."""

    def __init__(self, operator: WatchedOperator, every: float = 1.0) -> None:
        self.operator = operator
        self.every = every
        self.memory = Memory()
        self.unplanned: list[Exit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            proc = self.operator.proc
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                value = rss(proc.pid)
                if value is not None:
                    self.memory.samples.append(Sample(time.time(), proc.pid, value))
                continue
            if proc.pid in self.operator.killed or self.operator.proc is not proc:
                continue
            self.unplanned.append(Exit(proc.pid, code, time.time(), self.operator.log_tail(30)))
            self.operator.killed.add(proc.pid)
            try:
                self.operator.start()
            except AssertionError:
                continue
