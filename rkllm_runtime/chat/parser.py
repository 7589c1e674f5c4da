"""Splitting streamed model text into what is said, what is thought, and tool calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum, auto

from .events import MalformedToolCall, TextDelta, ThinkingDelta, ToolCallDelta
from .tool_calls import (
    MalformedCallError,
    ParsedCall,
    parse_block,
    parse_json_call,
    resolve_name,
    to_tool_call,
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"

ParsedEvent = TextDelta | ThinkingDelta | ToolCallDelta | MalformedToolCall


class _Mode(Enum):
    TEXT = auto()
    THINK = auto()
    CALL = auto()
    CLOSING = auto()  # a call's JSON is complete: what remains up to its closing tag is layout
    BARE = auto()  # the reply may be a bare JSON tool call: hold it until the end


_TAGS = {
    _Mode.TEXT: (THINK_OPEN, CALL_OPEN),
    _Mode.THINK: (THINK_CLOSE,),
    _Mode.CALL: (CALL_CLOSE,),
    _Mode.CLOSING: (CALL_CLOSE,),
}
_AFTER_TAG = {THINK_OPEN: _Mode.THINK, CALL_OPEN: _Mode.CALL, THINK_CLOSE: _Mode.TEXT, CALL_CLOSE: _Mode.TEXT}


class StreamParser:
    """Incremental: feed chunks as they arrive, then call :meth:`finish`.

    Tags split across chunks are held back only as long as they could still be a tag.
    A reply that starts like JSON is held whole when tools exist: it may be a bare call.
    Calls come out with their names resolved against ``tool_names`` and arguments repaired, as
    soon as their JSON is complete (before the closing tag).
    """

    def __init__(self, tool_names: Sequence[str] = ()) -> None:
        self._tool_names = tool_names
        self._mode = _Mode.TEXT
        self._buffer = ""
        self._said_anything = False
        self._after_think_tag = False  # the newlines that follow a think tag are layout

    def feed(self, chunk: str) -> list[ParsedEvent]:
        """Events complete so far."""
        self._buffer += chunk
        events: list[ParsedEvent] = []
        while True:
            if self._mode is _Mode.BARE:
                return events
            if self._mode is _Mode.TEXT and not self._said_anything:
                stripped = self._buffer.lstrip()
                if not stripped:
                    return events
                if stripped[0] in "{`" and self._tool_names:
                    self._mode = _Mode.BARE
                    return events
            tags = _TAGS[self._mode]
            found = [(self._buffer.find(tag), tag) for tag in tags if tag in self._buffer]
            if not found:
                if self._mode is _Mode.CALL and (end := _complete_json_end(self._buffer)):
                    events.append(self._call(self._buffer[:end]))
                    self._buffer = self._buffer[end:]
                    self._mode = _Mode.CLOSING
                    continue
                if self._mode in (_Mode.CALL, _Mode.CLOSING):
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
            case _Mode.CLOSING:
                pass

    def _call(self, block: str) -> ParsedEvent:
        try:
            return ToolCallDelta(to_tool_call(parse_block(block), self._tool_names))
        except MalformedCallError as err:
            return MalformedToolCall(block, str(err))

    def finish(self) -> list[ParsedEvent]:
        """Events for whatever the stream left unfinished."""
        rest, self._buffer = self._buffer, ""
        match self._mode:
            case _Mode.BARE if (call := self._bare_call(rest)) is not None:
                return [ToolCallDelta(to_tool_call(call, self._tool_names))]
            case _Mode.BARE | _Mode.TEXT:
                return [TextDelta(rest.strip())] if rest.strip() else []
            case _Mode.THINK:
                return [ThinkingDelta(rest)] if rest else []
            case _Mode.CALL:
                return [self._call(rest)]
            case _Mode.CLOSING:
                return []

    def _bare_call(self, text: str) -> ParsedCall | None:
        """A whole reply that is a JSON call of a known tool."""
        try:
            call = parse_json_call(text)
        except MalformedCallError:
            return None
        return call if resolve_name(call.name, self._tool_names) in self._tool_names else None


_DECODER = json.JSONDecoder()


def _complete_json_end(text: str) -> int:
    """Where the JSON object ``text`` starts with (after blanks) ends, 0 while it is incomplete."""
    start = len(text) - len(text.lstrip())
    if not text.rstrip().endswith("}") or text[start : start + 1] != "{":
        return 0
    try:
        return _DECODER.raw_decode(text, start)[1]
    except json.JSONDecodeError:
        return 0


def _partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that starts one of ``tags``."""
    for length in range(min(len(text), max(len(tag) for tag in tags) - 1), 0, -1):
        if any(tag.startswith(text[-length:]) for tag in tags):
            return length
    return 0
