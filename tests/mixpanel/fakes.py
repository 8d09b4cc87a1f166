"""Test doubles shared by the client's unit tests."""

from __future__ import annotations


class VirtualTime:
    """A clock whose ``sleep`` advances it at once and records every sleep."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
