"""Conversation agents for Assist, answering with the model on the NPU."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from rkllm_runtime import RKLLMError
from rkllm_runtime.chat import ChatRequest

from . import confirmation
from .const import CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH, DOMAIN, LOGGER, SUBENTRY_CONVERSATION
from .entity import RKLLMBaseLLMEntity, async_add_subentry_entities, cached_prefix
from .runtime_data import RKLLMConfigEntry

# The engine queues requests itself.
PARALLEL_UPDATES = 0
# The conversation id of the chat log that only builds the prompt to prepare.
PREPARED = f"{DOMAIN}_prepared"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one agent per conversation subentry."""
    async_add_subentry_entities(entry, async_add_entities, SUBENTRY_CONVERSATION, RKLLMConversationEntity)


class RKLLMConversationEntity(
    conversation.ConversationEntity,
    AbstractConversationAgent,
    RKLLMBaseLLMEntity,
):
    """An Assist agent whose replies stream token by token."""

    _attr_supports_streaming = True

    def __init__(self, entry: RKLLMConfigEntry, subentry: ConfigSubentry) -> None:
        """Initialise the agent; it can control the home when an LLM API is selected."""
        super().__init__(entry, subentry)
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL
        # Whose prompt to prepare: the last message's device and user (a satellite's area is in it).
        self._last_context = llm.LLMContext(DOMAIN, None, None, conversation.DOMAIN, None)

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Any language the model speaks."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register as an agent; ready Home Assistant's own confirmations in its language."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)
        if self._action_speech:
            self.hass.async_create_background_task(
                confirmation.async_prepare(self.hass, self.hass.config.language), f"{DOMAIN} confirmations"
            )

    @property
    def _action_speech(self) -> bool:
        return bool(self.subentry.data.get(CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH))

    async def async_prepare(self, language: str | None = None) -> None:
        """While the user speaks (speech-to-text has started): bring the Assist prompt into the KV cache.

        The prompt is the one a new conversation from the last message's device gets. A model
        that is answering is left alone; the model of a server is loaded if need be.
        """
        language = language or self.hass.config.language
        if self._action_speech:
            await confirmation.async_prepare(self.hass, language)
        engine = self.entry.runtime_data.engine
        if not engine.available:
            return
        options = self.subentry.data
        chat_log = conversation.ChatLog(self.hass, PREPARED)  # never stored: only its prompt is read
        try:
            await chat_log.async_provide_llm_data(
                replace(self._last_context, language=language),
                options.get(CONF_LLM_HASS_API),
                options.get(CONF_PROMPT),
            )
        except conversation.ConverseError:
            return  # the message itself will say so
        system_prompt, _volatile, tools = cached_prefix(chat_log)
        try:
            outcome = await engine.warm(ChatRequest(system_prompt, [], tools))
        except RKLLMError as err:
            LOGGER.debug("%s could not prepare the model: %s", self.entity_id, err)
            return
        LOGGER.debug("%s prepared the model for a command in %s: %s", self.entity_id, language, outcome)

    async def async_will_remove_from_hass(self) -> None:
        """Unregister as an agent."""
        conversation.async_unset_agent(self.hass, self.entry)
        await super().async_will_remove_from_hass()

    async def _async_handle_message(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
    ) -> conversation.ConversationResult:
        """Answer one user message."""
        options = self.subentry.data
        self._last_context = user_input.as_llm_context(DOMAIN)
        try:
            await chat_log.async_provide_llm_data(
                self._last_context,
                options.get(CONF_LLM_HASS_API),
                options.get(CONF_PROMPT),
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        await self._async_handle_chat_log(
            chat_log,
            action_speech=self._action_speech,
            language=user_input.language,
        )
        return conversation.async_get_result_from_chat_log(user_input, chat_log)
