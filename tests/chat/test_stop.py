"""Stop strings cut the reply where they start, also when split across chunks."""

from __future__ import annotations

import pytest

from rkllm_runtime.chat import TextDelta, ThinkingDelta, ToolCall, ToolCallDelta
from rkllm_runtime.chat.stop import StopFilter


@pytest.mark.parametrize(
    ("stops", "chunks", "passed", "stopped"),
    [
        ((), ["Hello", " world"], "Hello world", False),
        (("world",), ["Hello wor", "ld and more"], "Hello ", True),
        (("</s>", "END"), ["abc<", "/", "s>def"], "abc", True),
        (("END",), ["an EN", "try"], "an ENtry", False),  # held back, then let go
        (("ab", "b"), ["xab"], "x", True),  # the earliest stop wins
        (("stop",), ["st"], "st", False),  # held back until the end, then flushed
    ],
)
def test_stop_filter(stops: tuple[str, ...], chunks: list[str], passed: str, stopped: bool) -> None:
    stop = StopFilter(stops)
    text = "".join(stop.feed(chunk) for chunk in chunks)
    if not stop.stopped:
        text += stop.flush()
    assert (text, stop.stopped) == (passed, stopped)
    assert stop.feed("more") == ("" if stopped else "more")


def test_events_after_the_stop_are_dropped() -> None:
    call = ToolCall("HassTurnOn", {})
    events = [ThinkingDelta("hmm"), TextDelta("one STOP two"), ToolCallDelta(call)]
    assert StopFilter(["STOP"]).events(events) == [ThinkingDelta("hmm"), TextDelta("one ")]
    assert StopFilter([]).events(events) == events
