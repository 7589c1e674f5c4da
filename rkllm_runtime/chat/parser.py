"""Splitting streamed model text into what is said, what is thought, and tool calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum, auto

from .events import MalformedToolCall, TextDelta, ThinkingDelta, ToolCallDelta
from .tool_calls import (
    Block,
    MalformedCallError,
    Reading,
    block_start,
    next_block_start,
    object_end,
    parse_block,
    read_block,
    to_tool_call,
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"

ParsedEvent = TextDelta | ThinkingDelta | ToolCallDelta | MalformedToolCall


class _Mode(Enum):
    TEXT = auto()
    THINK = auto()
    CALL = auto()
    AFTER_CALL = auto()  # a call was made: the rest of the reply is read for calls only, never said


_TAGS = {_Mode.TEXT: (THINK_OPEN, CALL_OPEN), _Mode.THINK: (THINK_CLOSE,), _Mode.CALL: (CALL_CLOSE,)}
_AFTER_TAG = {
    THINK_OPEN: _Mode.THINK,
    CALL_OPEN: _Mode.CALL,
    THINK_CLOSE: _Mode.TEXT,
    CALL_CLOSE: _Mode.AFTER_CALL,
}


class StreamParser:
    """Incremental: feed chunks as they arrive, then call :meth:`finish`.

    Tags split across chunks are held back only as long as they could still be a tag. With
    tools, the start of a reply is held while it may be a call written as text (see
    :mod:`.tool_calls` for the rule): at most a line of lead, then the call. Calls come out
    with their names resolved against ``tool_names`` and arguments repaired as soon as their
    JSON is complete (before any closing tag or fence). After a call nothing more is said.
    """

    def __init__(self, tool_names: Sequence[str] = ()) -> None:
        self._tool_names = tool_names
        self._mode = _Mode.TEXT
        self._buffer = ""
        self._said_anything = False
        self._may_be_written_call = bool(tool_names)
        self._after_think_tag = False  # the newlines that follow a think tag are layout

    def feed(self, chunk: str) -> list[ParsedEvent]:
        """Events complete so far."""
        self._buffer += chunk
        return self._events(final=False)

    def finish(self) -> list[ParsedEvent]:
        """Events for whatever the stream left unfinished."""
        events = self._events(final=True)
        rest, self._buffer = self._buffer, ""
        match self._mode:
            case _Mode.TEXT:
                self._emit(events, rest.rstrip())
            case _Mode.THINK if rest:
                events.append(ThinkingDelta(rest))
            case _Mode.CALL:
                events.append(self._call(rest))
        return events

    def _events(self, *, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while True:
            if self._mode is _Mode.AFTER_CALL and not self._read_after_call(events, final=final):
                return events
            if self._holding():
                if not self._read_opening(events, final=final):
                    return events
                continue
            tags = _TAGS[self._mode]
            found = [(self._buffer.find(tag), tag) for tag in tags if tag in self._buffer]
            if not found:
                if self._mode is _Mode.CALL and (end := _complete_json_end(self._buffer)):
                    events.append(self._call(self._buffer[:end]))
                    self._buffer = self._buffer[end:]
                    self._mode = _Mode.AFTER_CALL
                    continue
                if self._mode is _Mode.CALL or final:
                    return events  # a call is read whole: its JSON or, in another form, up to its tag
                keep = _partial_tag_length(self._buffer, tags)
                self._emit(events, self._buffer[: len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return events
            index, tag = min(found)
            self._emit(events, self._buffer[:index])
            self._buffer = self._buffer[index + len(tag) :]
            self._mode = _AFTER_TAG[tag]
            self._after_think_tag = tag in (THINK_OPEN, THINK_CLOSE)

    def _holding(self) -> bool:
        """Nothing was said yet and the reply may still open with a call written as text."""
        if self._mode is not _Mode.TEXT or self._said_anything or not self._may_be_written_call:
            return False
        start = self._buffer.lstrip()
        return not (start.startswith(THINK_OPEN) or (start and THINK_OPEN.startswith(start)))

    def _read_opening(self, events: list[ParsedEvent], *, final: bool) -> bool:
        """Decide what held text is; False while it is undecided."""
        reading, start = block_start(self._buffer, final=final)
        if reading is Reading.CALL and self._buffer.startswith(CALL_OPEN, start):
            self._buffer = self._buffer[start:]  # the model's own markup, after a lead
            self._may_be_written_call = False
            return True
        block = (
            read_block(self._buffer, start, self._tool_names, final=final)
            if reading is Reading.CALL
            else None
        )
        if reading is Reading.UNDECIDED or (block is not None and block.reading is Reading.UNDECIDED):
            return False
        if block is None or block.reading is Reading.TEXT:
            self._may_be_written_call = False  # prose: said as it comes
            return True
        events.append(_block_event(block))
        self._buffer = self._buffer[block.end :]
        self._mode = _Mode.AFTER_CALL
        return True

    def _read_after_call(self, events: list[ParsedEvent], *, final: bool) -> bool:
        """Read the calls that follow a call and drop the rest; True when the model's own markup follows."""
        while (start := next_block_start(self._buffer)) >= 0:
            if self._buffer.startswith(CALL_OPEN, start):
                self._buffer = self._buffer[start + len(CALL_OPEN) :]
                self._mode = _Mode.CALL
                return True
            block = read_block(self._buffer, start, self._tool_names, final=final)
            if block.reading is Reading.UNDECIDED:
                self._buffer = self._buffer[start:]
                return False
            if block.reading is Reading.CALL:
                events.append(_block_event(block))
            self._buffer = self._buffer[max(block.end, start + 1) :]
        if final:
            self._buffer = ""
        return False

    def _emit(self, events: list[ParsedEvent], text: str) -> None:
        if self._after_think_tag:
            text = text.lstrip("\n")
            self._after_think_tag = not text
        if not text:
            return
        match self._mode:
            case _Mode.TEXT:
                if not self._said_anything:
                    text = text.lstrip()
                    if not text:
                        return
                    self._said_anything = True
                events.append(TextDelta(text))
            case _Mode.THINK:
                events.append(ThinkingDelta(text))
            case _Mode.CALL:
                events.append(self._call(text))
            case _Mode.AFTER_CALL:
                pass

    def _call(self, block: str) -> ParsedEvent:
        try:
            return ToolCallDelta(to_tool_call(parse_block(block), self._tool_names))
        except MalformedCallError as err:
            return MalformedToolCall(block, str(err))


def _block_event(block: Block) -> ParsedEvent:
    return ToolCallDelta(block.call) if block.call is not None else MalformedToolCall(block.raw, block.error)


def _complete_json_end(text: str) -> int:
    """Where the JSON object ``text`` starts with (after blanks) ends, 0 while it is incomplete or invalid."""
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] != "{" or not (end := object_end(text, start)):
        return 0
    try:
        json.loads(text[start:end])
    except ValueError:
        return 0
    return end


def _partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that starts one of ``tags``."""
    for length in range(min(len(text), max(len(tag) for tag in tags) - 1), 0, -1):
        if any(tag.startswith(text[-length:]) for tag in tags):
            return length
    return 0
