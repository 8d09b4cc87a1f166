"""Pure planning: which ids a request holds, and how pending ids become Mixpanel tasks.

Deletions of many requests that share a project, region and compliance type
are packed into tasks of up to the project's id limit (design invariant 2);
retrievals are never mixed across requests. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mixpanel_dsr.api.models import MAX_ID_LENGTH

#: Most ids one request may hold (from a Secret; inline lists are capped lower at admission).
MAX_IDS_PER_REQUEST_OBJECT = 1_000_000


class InvalidIdsError(ValueError):
    """The ids in a Secret cannot be used; the message names lines, never ids."""


def parse_id_list(text: str) -> list[str]:
    """Ids from a Secret value: a JSON array of strings, or one id per line.

    Surrounding whitespace and blank lines are ignored; repeated ids are kept
    once, in first-seen order (see :func:`distinct`).
    """
    # A byte order mark (editors on Windows write one) is not part of the first id.
    stripped = text.removeprefix("\ufeff").strip()
    if not stripped:
        raise InvalidIdsError("the Secret key holds no distinct ids")
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise InvalidIdsError(f"not a valid JSON array (line {err.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
            raise InvalidIdsError("the JSON array must hold only strings")
        raw = [i.strip() for i in data]
        blank = [n for n, i in enumerate(raw) if not i]
        if blank:
            raise InvalidIdsError(f"blank distinct id at array index {blank[0]}")
    else:
        # Lines end at \n (and \r\n) only: str.splitlines() would also split at U+2028,
        # U+0085, \x1c, \x0c..., turning one listed id into several that nobody listed.
        raw = [line.strip() for line in stripped.split("\n")]
        raw = [i for i in raw if i]
    too_long = [n for n, i in enumerate(raw) if len(i) > MAX_ID_LENGTH]
    if too_long:
        raise InvalidIdsError(
            f"distinct id number {too_long[0] + 1} is longer than {MAX_ID_LENGTH} characters"
        )
    ids = distinct(raw)
    if len(ids) > MAX_IDS_PER_REQUEST_OBJECT:
        raise InvalidIdsError(
            f"{len(ids)} distinct ids is more than {MAX_IDS_PER_REQUEST_OBJECT} in one request"
        )
    return ids


def distinct(ids: Iterable[str]) -> list[str]:
    """The ids without repeats, in first-seen order: the order slices index into."""
    return list(dict.fromkeys(ids))


def keyed_digest(key: bytes, ids: Sequence[str]) -> str:
    """HMAC-SHA256 of an id list under the installation's key: only a key holder can check
    a guessed id against it."""
    mac = hmac.new(key, "\n".join(ids).encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac}"


@dataclass(frozen=True, order=True)
class Range:
    """Half-open index range ``[start, end)`` into a request's distinct ids."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def uncovered(total: int, covered: Iterable[Range]) -> list[Range]:
    """The parts of ``[0, total)`` that no range in ``covered`` holds, in order."""
    gaps: list[Range] = []
    cursor = 0
    for rng in sorted(covered):
        if rng.start > cursor:
            gaps.append(Range(cursor, min(rng.start, total)))
        cursor = max(cursor, rng.end)
    if cursor < total:
        gaps.append(Range(cursor, total))
    return [g for g in gaps if len(g) > 0]


@dataclass(frozen=True)
class Pending:
    """Ids of one request waiting to be submitted: ``ids[range.start:range.end]``."""

    owner: str
    range: Range
    ids: tuple[str, ...]
    #: Submission attempt the task carrying these ids will be for this slice.
    attempt: int = 1


@dataclass(frozen=True)
class Member:
    """One request's share of a planned task."""

    owner: str
    range: Range
    attempt: int = 1


@dataclass
class PlannedTask:
    """A Mixpanel create call: its distinct ids and which request slices they come from."""

    members: list[Member] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, owner: str, rng: Range, ids: Sequence[str], attempt: int = 1) -> None:
        self.members.append(Member(owner, rng, attempt))
        for i in ids:
            if i not in self._seen:
                self._seen.add(i)
                self.ids.append(i)

    def room_for(self, ids: Sequence[str], limit: int) -> int:
        """How many leading ``ids`` fit before the task holds ``limit`` distinct ids."""
        free = limit - len(self.ids)
        taken = 0
        new: set[str] = set()
        for i in ids:
            if i not in self._seen and i not in new:
                if free == 0:
                    break
                free -= 1
                new.add(i)
            taken += 1
        return taken


def pack(pending: Sequence[Pending], limit: int) -> list[PlannedTask]:
    """Pack requests' pending ids into as few tasks as the id limit allows (deletions).

    Requests keep their queue order; a request's range is split where a task
    fills up, so every task but the last holds exactly ``limit`` distinct ids.
    """
    if limit < 1:
        raise ValueError("the id limit must be at least 1")
    tasks: list[PlannedTask] = []
    current = PlannedTask()
    for item in pending:
        offset = 0
        while offset < len(item.ids):
            rest = item.ids[offset:]
            fits = current.room_for(rest, limit)
            if fits == 0:
                tasks.append(current)
                current = PlannedTask()
                continue
            start = item.range.start + offset
            current.add(item.owner, Range(start, start + fits), rest[:fits], item.attempt)
            offset += fits
    if current.members:
        tasks.append(current)
    return tasks


def split(item: Pending, limit: int) -> list[PlannedTask]:
    """One request's pending ids alone, in tasks of up to ``limit`` ids (retrievals)."""
    return pack([item], limit)
