"""``with`` and ``async with`` for what has a ``close`` or an ``aclose``: leaving the block closes it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Closing(ABC):
    """``with x:`` gives ``x`` and calls ``x.close()`` on leaving, however the block ends."""

    @abstractmethod
    def close(self) -> None:
        """Free what it holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClosing(ABC):
    """``async with x:`` gives ``x`` and awaits ``x.aclose()`` on leaving, however the block ends."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop and free what it holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
