"""Base entity: one chat log turned into RKLLM requests, streamed back as deltas."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import llm
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from rkllm_runtime import Sampling
from rkllm_runtime.chat import ChatRequest, Message, ToolCall, ToolSpec, events
from rkllm_runtime.chat.contract import ModelEngine
from rkllm_runtime.types import RUNTIME_SAMPLING

from .attachments import async_read_images
from .confirmation import intent_speech
from .const import (
    CONF_MAX_HISTORY,
    CONF_MAX_NEW_TOKENS,
    CONF_THINK,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_NEW_TOKENS,
    DOMAIN,
    LOGGER,
    MAX_TOOL_ITERATIONS,
    SAMPLING_OPTIONS,
    TOOL_TURN_SAMPLING,
)
from .errors import user_facing_errors
from .guidance import tool_guidance
from .prompt import lean_prompt, lean_tool_result, tool_schema
from .runtime_data import RKLLMConfigEntry
from .tools import ToolNames, api_names, forgiving_intents
from .turn_end import CallKey, Ending, call_key, calls_made, closing_words, spoken, unrepeated


def model_device_info(entry: RKLLMConfigEntry) -> dr.DeviceInfo:
    """The device of a model entry (its sensors live there)."""
    engine = entry.runtime_data.engine
    return dr.DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        name=entry.title,
        manufacturer="Rockchip",
        model=engine.status.model_file,
        sw_version=f"RKLLM runtime {engine.status.release}",
        entry_type=dr.DeviceEntryType.SERVICE,
    )


# Home Assistant 2026.11 keeps a turn that raised in the chat log, closed by an assistant
# message with this prefix; earlier releases drop the turn. The feature check keeps a model's
# own "Error: ..." reply on those releases.
FAILED_TURN_PREFIX = "Error: "
KEEPS_FAILED_TURNS = hasattr(conversation.ChatLog, "async_add_error")


def _failed(turn: list[conversation.Content]) -> bool:
    last = turn[-1]
    return (
        KEEPS_FAILED_TURNS
        and isinstance(last, conversation.AssistantContent)
        and not last.tool_calls
        and (last.content or "").startswith(FAILED_TURN_PREFIX)
    )


def answered_turns(content: Iterable[conversation.Content]) -> list[conversation.Content]:
    """The chat log without the turns that failed: the user's message and what followed it."""
    kept: list[conversation.Content] = []
    turn: list[conversation.Content] = []
    for item in content:
        if isinstance(item, conversation.UserContent) and turn:
            kept += [] if _failed(turn) else turn
            turn = []
        turn.append(item)
    return kept + ([] if turn and _failed(turn) else turn)


def chat_messages(
    chat_log: conversation.ChatLog, images: Mapping[Path, bytes] | None = None
) -> list[Message]:
    """The chat log's answered turns as engine messages (the system prompt is sent separately).

    ``images`` holds the attachments read for the turn being answered, by path (see :mod:`.attachments`).
    """
    names = api_names(chat_log.llm_api)
    images = images or {}
    messages: list[Message] = []
    for content in answered_turns(chat_log.content):
        match content:
            case conversation.UserContent():
                attached = tuple(images[a.path] for a in content.attachments or () if a.path in images)
                messages.append(Message("user", content.content, images=attached))
            case conversation.AssistantContent():
                calls = tuple(
                    ToolCall(names.to_plain(call.tool_name), call.tool_args, id=call.id)
                    for call in content.tool_calls or ()
                )
                messages.append(Message("assistant", content.content or "", tool_calls=calls))
            case conversation.ToolResultContent():
                result = lean_tool_result(content.result)
                messages.append(Message("tool", result, name=names.to_plain(content.tool_name)))
    return messages


def tool_specs(api: llm.APIInstance) -> list[ToolSpec]:
    """The LLM API's tools under their plain names, their parameters as lean JSON schema."""
    names = api_names(api)
    return [
        ToolSpec(
            name=names.to_plain(tool.name),
            parameters=tool_schema(tool, api.custom_serializer),
            description=tool.description or "",
        )
        for tool in api.tools
    ]


def cached_prefix(chat_log: conversation.ChatLog) -> tuple[str, str, list[ToolSpec]]:
    """What the KV cache keeps of a chat log (its system prompt and tools), and the volatile lines."""
    tools = tool_specs(chat_log.llm_api) if chat_log.llm_api else []
    system = chat_log.content[0]
    assert isinstance(system, conversation.SystemContent)
    system_prompt, volatile = lean_prompt(api_names(chat_log.llm_api).in_text(system.content))
    if guidance := tool_guidance({tool.name for tool in tools}):
        system_prompt += "\n" + guidance
    return system_prompt, volatile, tools


def sampling_of(options: dict[str, Any], tools: bool = False) -> Sampling:
    """Sampling settings of a subentry; one it does not set keeps the runtime's own value.

    In a turn that offers ``tools``, an unset setting takes TOOL_TURN_SAMPLING's value if it has one.
    """
    chosen = (TOOL_TURN_SAMPLING if tools else {}) | {
        key: options[key] for key in SAMPLING_OPTIONS if options.get(key) is not None
    }
    # An int or a float, as the runtime's value (number selectors give floats).
    return Sampling(**{key: type(getattr(RUNTIME_SAMPLING, key))(value) for key, value in chosen.items()})


async def deltas(
    stream: AsyncIterator[events.ChatEvent], names: ToolNames
) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
    """Turn the engine's events into chat-log deltas: content, thinking, calls by Home Assistant's names."""
    yield {"role": "assistant"}
    async for event in stream:
        match event:
            case events.TextDelta(text):
                yield {"content": text}
            case events.ThinkingDelta(text):
                yield {"thinking_content": text}
            case events.ToolCallDelta(call):
                call_input = llm.ToolInput(
                    tool_name=names.to_hass(call.name), tool_args=call.arguments, id=call.id
                )
                yield {"tool_calls": [call_input]}
            case events.MalformedToolCall(raw, error):
                LOGGER.debug("Malformed tool call %r (the model was asked again): %s", raw, error)
            case events.Finished():
                pass


async def _spoken(text: str) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
    """A reply that is already known, as chat-log deltas."""
    yield {"role": "assistant"}
    yield {"content": text}


def follow_availability(entity: Entity, engine: ModelEngine) -> Callable[[], None]:
    """Write the entity's state whenever the engine comes or goes; returns a remover."""
    was = engine.available

    @callback
    def _changed() -> None:
        nonlocal was
        if engine.available != was:
            was = engine.available
            entity.async_write_ha_state()

    return engine.add_listener(_changed)


@callback
def async_add_subentry_entities(
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    subentry_type: str,
    entity: Callable[[RKLLMConfigEntry, ConfigSubentry], Entity],
) -> None:
    """Add one entity per subentry of ``subentry_type``, each on its own subentry."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == subentry_type:
            async_add_entities([entity(entry, subentry)], config_subentry_id=subentry.subentry_id)


class RKLLMBaseLLMEntity(Entity):
    """An LLM entity of a subentry, generating with the model of its parent entry."""

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: RKLLMConfigEntry, subentry: ConfigSubentry) -> None:
        """Initialise from the parent entry and the subentry."""
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer="Rockchip",
            model=entry.runtime_data.engine.status.model_file,
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    @property
    def available(self) -> bool:
        """Whether the model can answer now (its process or server may be away)."""
        return self.entry.runtime_data.engine.available

    async def async_added_to_hass(self) -> None:
        """Follow the engine's availability."""
        await super().async_added_to_hass()
        self.async_on_remove(follow_availability(self, self.entry.runtime_data.engine))

    async def _async_handle_chat_log(
        self,
        chat_log: conversation.ChatLog,
        system_suffix: str = "",
        action_speech: bool = False,
        language: str | None = None,
        output_schema: dict[str, Any] | None = None,
    ) -> None:
        """Generate the answer to a chat log, running tools for at most MAX_TOOL_ITERATIONS rounds.

        With ``output_schema``, the answer must be JSON that follows it (decoded under it where the
        engine can).

        With ``action_speech``, tool calls that only acted are confirmed in Home Assistant's words.
        With ``language``, a turn the model leaves without words ends with the integration's own.
        """
        options = self.subentry.data
        system_prompt, volatile, tools = cached_prefix(chat_log)
        names = api_names(chat_log.llm_api)
        images = await async_read_images(self.hass, chat_log)
        ending, rounds = Ending.OUT_OF_ROUNDS, 0
        while rounds < MAX_TOOL_ITERATIONS:
            rounds += 1
            request = ChatRequest(
                system_prompt=system_prompt + system_suffix,
                messages=chat_messages(chat_log, images),
                tools=tools,
                conversation_id=chat_log.conversation_id,
                enable_thinking=bool(options.get(CONF_THINK, False)),
                max_new_tokens=int(options.get(CONF_MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS)),
                sampling=sampling_of(dict(options), bool(tools)),
                max_history_turns=int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY)),
                context=volatile,
                output_schema=output_schema,
            )
            made = calls_made(chat_log)
            result = await self._async_generate(chat_log, request, made)
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
                ending = Ending.ANSWERED if spoken(chat_log) else Ending.NO_WORDS
                break
            if action_speech and (speech := await intent_speech(self.hass, chat_log)):
                await self._async_say(chat_log, speech)
                ending = Ending.CONFIRMED
                break
            if not result.tool_calls:
                ending = Ending.NO_WORDS
                break
            if made.issuperset(
                call_key(names.to_hass(call.name), call.arguments) for call in result.tool_calls
            ):
                ending = Ending.REPEATED_CALL
                break
        chat_log.async_trace(
            {"tool_rounds": {"used": rounds, "limit": MAX_TOOL_ITERATIONS, "ending": ending}}
        )
        if language is None or ending in (Ending.ANSWERED, Ending.CONFIRMED):
            LOGGER.debug("Turn of %s ended after %d rounds: %s", self.entity_id, rounds, ending)
            return
        words = await closing_words(self.hass, chat_log, language)
        LOGGER.info(
            "The model left a turn of %s without an answer after %d rounds (%s); said instead: %s",
            self.entity_id,
            rounds,
            ending,
            words,
        )
        await self._async_say(chat_log, words)

    async def _async_say(self, chat_log: conversation.ChatLog, text: str) -> None:
        """End the turn with words that are already known."""
        async for _content in chat_log.async_add_delta_content_stream(self.entity_id, _spoken(text)):
            pass

    async def _async_generate(
        self, chat_log: conversation.ChatLog, request: ChatRequest, made: set[CallKey]
    ) -> events.ChatResult:
        """One request; a call already ``made`` in this turn is not run again."""
        names = api_names(chat_log.llm_api)
        with user_facing_errors(), forgiving_intents(chat_log):
            async with self.entry.runtime_data.engine.chat(request) as stream:
                async for _content in chat_log.async_add_delta_content_stream(
                    self.entity_id, unrepeated(deltas(stream, names), set(made))
                ):
                    pass
        assert stream.result is not None
        return stream.result
