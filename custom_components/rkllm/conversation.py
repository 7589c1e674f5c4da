"""Conversation agents for Assist, answering with the model on the NPU."""

from __future__ import annotations

from typing import Literal

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .confirmation import async_prepare
from .const import CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH, DOMAIN, SUBENTRY_CONVERSATION
from .entity import RKLLMBaseLLMEntity
from .models import RKLLMConfigEntry

# The engine queues requests itself.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one agent per conversation subentry."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == SUBENTRY_CONVERSATION:
            async_add_entities(
                [RKLLMConversationEntity(entry, subentry)], config_subentry_id=subentry.subentry_id
            )


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

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Any language the model speaks."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register as an agent; ready Home Assistant's own confirmations in its language."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)
        if self.subentry.data.get(CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH):
            self.hass.async_create_background_task(
                async_prepare(self.hass, self.hass.config.language), f"{DOMAIN} confirmations"
            )

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
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                options.get(CONF_LLM_HASS_API),
                options.get(CONF_PROMPT),
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        await self._async_handle_chat_log(
            chat_log,
            action_speech=bool(options.get(CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH)),
            language=user_input.language,
        )
        return conversation.async_get_result_from_chat_log(user_input, chat_log)
