"""Packing and id parsing: the pure planning behind invariant 2 (pack deletions, never mix
retrievals)."""

from __future__ import annotations

import math

import pytest

from mixpanel_dsr.planning import (
    InvalidIdsError,
    Pending,
    Range,
    keyed_digest,
    pack,
    parse_id_list,
    split,
    uncovered,
)


def pending(owner: str, ids: list[str], start: int = 0) -> Pending:
    return Pending(owner, Range(start, start + len(ids)), tuple(ids))


def test_three_hundred_one_id_requests_make_one_task() -> None:
    items = [pending(f"ns/r{i}", [f"u{i}"]) for i in range(300)]
    tasks = pack(items, 2000)
    assert len(tasks) == 1
    assert len(tasks[0].ids) == 300
    assert [m.owner for m in tasks[0].members] == [f"ns/r{i}" for i in range(300)]
    assert all(m.range == Range(0, 1) for m in tasks[0].members)


def test_a_4500_id_request_is_split_in_three_with_exact_slices() -> None:
    ids = [f"u{i}" for i in range(4500)]
    tasks = pack([pending("ns/big", ids)], 2000)
    assert [len(t.ids) for t in tasks] == [2000, 2000, 500]
    assert [t.members[0].range for t in tasks] == [
        Range(0, 2000),
        Range(2000, 4000),
        Range(4000, 4500),
    ]
    assert [i for t in tasks for i in t.ids] == ids


@pytest.mark.parametrize("limit", [1, 7, 1999, 2000])
def test_packing_uses_the_fewest_tasks_and_every_slice_maps_back(limit: int) -> None:
    sizes = [3, 1, 2500, 17, 1, 1, 400]
    items = []
    for n, size in enumerate(sizes):
        items.append(pending(f"ns/r{n}", [f"r{n}-{i}" for i in range(size)]))
    tasks = pack(items, limit)
    assert len(tasks) == math.ceil(sum(sizes) / limit)
    assert all(len(t.ids) <= limit for t in tasks)
    # Each member's range, read from its own request, gives exactly the ids in the task.
    by_owner = {p.owner: p.ids for p in items}
    for task in tasks:
        rebuilt = [i for m in task.members for i in by_owner[m.owner][m.range.start : m.range.end]]
        assert rebuilt == task.ids
    # Every id of every request is in exactly one task.
    for item in items:
        covered = sorted(
            (m.range for t in tasks for m in t.members if m.owner == item.owner),
            key=lambda r: r.start,
        )
        assert uncovered(len(item.ids), covered) == []
        assert sum(len(r) for r in covered) == len(item.ids)


def test_an_id_asked_by_two_requests_is_sent_once_per_task() -> None:
    tasks = pack([pending("ns/a", ["x", "y"]), pending("ns/b", ["y", "z"])], 2000)
    assert tasks[0].ids == ["x", "y", "z"]
    assert len(tasks[0].members) == 2


def test_a_resumed_range_keeps_its_offsets() -> None:
    tasks = pack([Pending("ns/a", Range(5, 8), ("f", "g", "h"))], 2)
    assert [m.range for t in tasks for m in t.members] == [Range(5, 7), Range(7, 8)]


def test_retrievals_are_never_mixed() -> None:
    tasks = split(pending("ns/a", [f"u{i}" for i in range(2001)]), 2000)
    assert [len(t.ids) for t in tasks] == [2000, 1]
    assert {m.owner for t in tasks for m in t.members} == {"ns/a"}


def test_uncovered_finds_gaps() -> None:
    assert uncovered(10, [Range(2, 4), Range(6, 10)]) == [Range(0, 2), Range(4, 6)]
    assert uncovered(3, []) == [Range(0, 3)]
    assert uncovered(3, [Range(0, 3)]) == []


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a\nb\n\n  c  \n", ["a", "b", "c"]),
        ('["a", "b", "a"]', ["a", "b"]),
        ("x\r\ny\r\nx\r\n", ["x", "y"]),
    ],
)
def test_parse_id_list_accepts_lines_and_json(text: str, ids: list[str]) -> None:
    assert parse_id_list(text) == ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   \n", "holds no distinct ids"),
        ("[1, 2]", "only strings"),
        ('["a", " "]', "blank distinct id at array index 1"),
        ("[not json", "not a valid JSON array"),
        ("ok\n" + "x" * 300, "distinct id number 2 is longer than 255"),
    ],
)
def test_parse_id_list_names_the_problem_without_the_ids(text: str, message: str) -> None:
    with pytest.raises(InvalidIdsError, match=message) as err:
        parse_id_list(text)
    assert "xxxx" not in str(err.value)


def test_digest_is_keyed_stable_and_hides_ids() -> None:
    key = b"installation"
    assert keyed_digest(key, ["a", "b"]) == keyed_digest(key, ["a", "b"])
    assert keyed_digest(key, ["a", "b"]) != keyed_digest(key, ["b", "a"])
    # Without the key a guessed id cannot be confirmed: another key, another digest.
    assert keyed_digest(key, ["alice@example.com"]) != keyed_digest(b"other", ["alice@example.com"])
    digest = keyed_digest(key, ["alice@example.com"])
    assert digest.startswith("hmac-sha256:")
    assert len(digest) == len("hmac-sha256:") + 64
