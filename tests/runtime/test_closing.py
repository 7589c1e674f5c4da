"""Leaving a ``with`` or ``async with`` block closes what it holds, however the block ends."""

from __future__ import annotations

import pytest

from rkllm_runtime.closing import AsyncClosing, Closing


class Door(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class AsyncDoor(AsyncClosing):
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_with_gives_itself_and_closes_once_even_on_error() -> None:
    door = Door()
    with door as entered:
        assert entered is door
        assert door.closed == 0
    assert door.closed == 1
    with pytest.raises(RuntimeError), Door() as failing:
        raise RuntimeError("inside")
    assert failing.closed == 1


async def test_async_with_gives_itself_and_closes_once_even_on_error() -> None:
    door = AsyncDoor()
    async with door as entered:
        assert entered is door
        assert door.closed == 0
    assert door.closed == 1
    with pytest.raises(RuntimeError):
        async with AsyncDoor() as failing:
            raise RuntimeError("inside")
    assert failing.closed == 1
