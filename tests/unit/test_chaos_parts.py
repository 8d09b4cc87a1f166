"""The pure parts of the chaos run: its seeded schedule, the leak scanner, the memory verdict."""

from __future__ import annotations

import random
import re

from benchmarks.chaos import CANCEL_AIMS, ChaosConfig, plan
from benchmarks.chaos_leaks import Needle, Needles, Scanner
from benchmarks.chaos_watch import MIB, Memory, Sample
from benchmarks.kill_run import AIMS

from mixpanel_dsr.localcluster import Component


def test_the_schedule_is_seeded_and_does_what_was_asked() -> None:
    config = ChaosConfig()
    first = plan(config, random.Random(7))  # noqa: S311
    assert first == plan(config, random.Random(7))  # noqa: S311
    assert first != plan(config, random.Random(8))  # noqa: S311
    aims = list(first.aims.values())
    assert len(aims) == 20
    assert sum(a in AIMS for a in aims) == 6
    assert set(AIMS) <= set(aims)
    assert sum(a in CANCEL_AIMS for a in aims) == 4
    assert set(CANCEL_AIMS) <= set(aims)
    # Every batch applied exactly once, in order; creates are aimed right after a batch.
    batches = [b for k in sorted(first.before) for b in first.before[k]]
    assert batches == list(range(10))
    assert all(k in first.before for k, a in first.aims.items() if a in AIMS)
    assert first.aims.get(0, "random") not in CANCEL_AIMS
    restarts = sorted(c for cs in first.restarts.values() for c in cs)
    assert restarts == sorted([Component.APISERVER, Component.ETCD])
    assert len(first.bursts) == 8


def _scanner() -> Scanner:
    return Scanner(
        Needles(
            tokens={"oauth-abc123": "ns/p-gdpr"},
            ids={"person-00001-0-beef01", "person-00002-0-beef01"},
            id_pattern=re.compile(r"person-\d{5}-\d-beef01"),
            links={"https://h/_sandbox/exports/1?expires=9&signature=f00d": "ns/r-export"},
        )
    )


def test_the_scanner_finds_each_needle_outside_where_it_may_be() -> None:
    scanner = _scanner()
    found = scanner.scan(
        "Bearer oauth-abc123 for person-00002-0-beef01 at /exports/1?signature=f00d", "log:1"
    )
    assert [leak.needle for leak in found] == [
        Needle.TOKEN,
        Needle.DISTINCT_ID,
        Needle.EXPORT_LINK,
    ]
    assert not scanner.scan("3 ids, digest 5e1f, person-00003-0-beef01 (not used)", "log:2")
    # In their own Secrets they are where they belong; in another Secret they are not.
    assert not scanner.scan("oauth-abc123", "Secret", owner="ns/p-gdpr")
    assert not scanner.scan("...signature=f00d", "Secret", owner="ns/r-export")
    assert [leak.needle for leak in scanner.scan("oauth-abc123", "S", owner="ns/x")] == [
        Needle.TOKEN
    ]


def _memory(values: list[tuple[int, int]], done_after: int) -> Memory:
    memory = Memory([Sample(float(t), pid, int(mib * MIB)) for t, (pid, mib) in enumerate(values)])
    memory.done_at = float(done_after)
    return memory


def test_memory_that_grows_while_idle_or_past_every_process_fails() -> None:
    steady = _memory([(1, 150)] * 30 + [(2, 160)] * 30, done_after=50)
    assert not steady.failures()
    assert steady.start == 150 * MIB
    assert steady.peak == 160 * MIB
    creeping = _memory([(1, 150)] * 30 + [(2, 160)] * 20 + [(2, 250)] * 10, done_after=49)
    assert creeping.failures()
    assert not Memory().samples
    assert Memory().failures() == ["no memory samples"]
