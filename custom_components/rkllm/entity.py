"""Base entity: one chat log turned into RKLLM requests, streamed back as deltas."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import llm
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.json import json_dumps

from rkllm_runtime import Sampling
from rkllm_runtime.conversation import ChatRequest, Message
from rkllm_runtime.engine import ChatResult

from .const import (
    CONF_MAX_HISTORY,
    CONF_MAX_NEW_TOKENS,
    CONF_REPEAT_PENALTY,
    CONF_TEMPERATURE,
    CONF_THINK,
    CONF_TOP_K,
    CONF_TOP_P,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    DOMAIN,
    LOGGER,
    MAX_TOOL_ITERATIONS,
)
from .errors import user_facing_errors
from .models import RKLLMConfigEntry
from .stream_parser import Content, MalformedCall, StreamParser, Thinking, ToolCall
from .tool_calls import format_tools, to_tool_input

# What the model is told when its tool call could not be read, so it can retry.
MALFORMED_CALL_HINT = (
    'Write each call as <tool_call>{"name": "<tool name>", "arguments": {<arguments>}}</tool_call> '
    "using one of the tools you were given."
)


def model_device_info(entry: RKLLMConfigEntry) -> dr.DeviceInfo:
    """The device of a model entry (its sensors live there)."""
    runtime = entry.runtime_data.engine.runtime
    return dr.DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        name=entry.title,
        manufacturer="Rockchip",
        model=runtime.model_path.name,
        sw_version=f"RKLLM runtime {runtime.library.release}",
        entry_type=dr.DeviceEntryType.SERVICE,
    )


def chat_messages(chat_log: conversation.ChatLog) -> list[Message]:
    """The chat log's turns as engine messages (the system prompt is sent separately)."""
    messages: list[Message] = []
    for content in chat_log.content:
        match content:
            case conversation.UserContent():
                messages.append(Message("user", content.content))
            case conversation.AssistantContent():
                calls = [
                    json_dumps({"name": call.tool_name, "arguments": call.tool_args})
                    for call in content.tool_calls or ()
                ]
                text = "".join([content.content or "", *(f"<tool_call>\n{c}\n</tool_call>" for c in calls)])
                messages.append(Message("assistant", text))
            case conversation.ToolResultContent():
                result = {"name": content.tool_name, "content": content.result.data}
                messages.append(Message("tool", json_dumps(result)))
    return messages


def sampling(options: dict[str, Any]) -> Sampling:
    """Sampling settings of a subentry."""
    return Sampling(
        top_k=int(options.get(CONF_TOP_K, DEFAULT_TOP_K)),
        top_p=float(options.get(CONF_TOP_P, DEFAULT_TOP_P)),
        temperature=float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
        repeat_penalty=float(options.get(CONF_REPEAT_PENALTY, DEFAULT_REPEAT_PENALTY)),
    )


async def deltas(
    chunks: AsyncIterator[str], tool_names: list[str]
) -> AsyncGenerator[conversation.AssistantContentDeltaDict | conversation.ToolResultContentDeltaDict]:
    """Turn streamed text into chat-log deltas: content, thinking, tool calls."""
    parser = StreamParser(tool_names)
    yield {"role": "assistant"}
    reopen = False

    async def events() -> AsyncGenerator[Content | Thinking | ToolCall | MalformedCall]:
        async for chunk in chunks:
            for event in parser.feed(chunk):
                yield event
        for event in parser.finish():
            yield event

    async for event in events():
        if reopen:  # a tool result closed the previous message
            yield {"role": "assistant"}
            reopen = False
        match event:
            case Content(text):
                yield {"content": text}
            case Thinking(text):
                yield {"thinking_content": text}
            case ToolCall(call):
                yield {"tool_calls": [to_tool_input(call, tool_names)]}
            case MalformedCall(raw, error):
                LOGGER.debug("Malformed tool call %r: %s", raw, error)
                tool_input = llm.ToolInput(
                    tool_name="invalid_tool_call", tool_args={"text": raw}, external=True
                )
                yield {"tool_calls": [tool_input]}
                yield {
                    "role": "tool_result",
                    "tool_call_id": tool_input.id,
                    "tool_name": tool_input.tool_name,
                    "result": llm.ToolResult(
                        data={"error": "MalformedToolCall", "error_text": f"{error}. {MALFORMED_CALL_HINT}"},
                        error=True,
                    ),
                }
                reopen = True


class RKLLMBaseLLMEntity(Entity):
    """An LLM entity of a subentry, generating with the model of its parent entry."""

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: RKLLMConfigEntry, subentry: ConfigSubentry) -> None:
        """Initialise from the parent entry and the subentry."""
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        runtime = entry.runtime_data.engine.runtime
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer="Rockchip",
            model=runtime.model_path.name,
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    async def _async_handle_chat_log(
        self,
        chat_log: conversation.ChatLog,
        system_suffix: str = "",
    ) -> None:
        """Generate the answer to a chat log, running tools for at most MAX_TOOL_ITERATIONS rounds."""
        options = self.subentry.data
        tools, tool_names = "", []
        if chat_log.llm_api:
            tools = format_tools(chat_log.llm_api)
            tool_names = [tool.name for tool in chat_log.llm_api.tools]
        system = chat_log.content[0]
        assert isinstance(system, conversation.SystemContent)
        for _iteration in range(MAX_TOOL_ITERATIONS):
            request = ChatRequest(
                system_prompt=system.content + system_suffix,
                messages=chat_messages(chat_log),
                tools=tools,
                conversation_id=chat_log.conversation_id,
                enable_thinking=bool(options.get(CONF_THINK, False)),
                max_new_tokens=int(options.get(CONF_MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS)),
                sampling=sampling(dict(options)),
                max_history_turns=int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY)),
            )
            result = await self._async_generate(chat_log, request, tool_names)
            chat_log.async_trace(
                {
                    "stats": {
                        "input_tokens": result.prompt_tokens,
                        "cached_input_tokens": result.cached_tokens,
                        "output_tokens": result.perf.generate_tokens,
                    }
                }
            )
            if not chat_log.unresponded_tool_results:
                break

    async def _async_generate(
        self, chat_log: conversation.ChatLog, request: ChatRequest, tool_names: list[str]
    ) -> ChatResult:
        with user_facing_errors():
            async with self.entry.runtime_data.engine.chat(request) as stream:
                async for _content in chat_log.async_add_delta_content_stream(
                    self.entity_id, deltas(stream, tool_names)
                ):
                    pass
        assert stream.result is not None
        return stream.result
