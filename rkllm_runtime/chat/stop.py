"""Stop strings: the reply ends where one of them starts."""

from __future__ import annotations

from collections.abc import Sequence

from .events import ChatEvent, TextDelta


class StopFilter:
    """Passes text on until a stop string appears; holds back what may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.stopped = False
        """A stop string was found: nothing more is passed on."""

    def feed(self, text: str) -> str:
        """The part of ``text`` that is certainly reply."""
        if self.stopped or not self._stops:
            return "" if self.stopped else text
        text = self._held + text
        found = [index for stop in self._stops if (index := text.find(stop)) >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)]
        keep = max(
            (size for stop in self._stops for size in range(1, len(stop)) if text.endswith(stop[:size])),
            default=0,
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back, at the end of the reply."""
        held, self._held = self._held, ""
        return held

    def events(self, events: Sequence[ChatEvent]) -> list[ChatEvent]:
        """The events before the first stop string (text cut where it starts)."""
        passed: list[ChatEvent] = []
        for event in events:
            if isinstance(event, TextDelta):
                if text := self.feed(event.text):
                    passed.append(TextDelta(text))
            elif not self.stopped:
                passed.append(event)
        return passed
