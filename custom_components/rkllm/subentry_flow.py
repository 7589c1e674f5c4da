"""Subentry flows: add or change a conversation agent or an AI task of a model entry."""

from __future__ import annotations

from typing import Any

import probatio as vol
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState, ConfigSubentryFlow, SubentryFlowResult
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME

from .const import CONF_MAX_CONTEXT_LEN, CONF_RECOMMENDED, SAMPLING_OPTIONS, SUBENTRY_CONVERSATION
from .schemas import (
    INT_OPTIONS,
    advanced_options,
    advanced_schema,
    default_ai_task_options,
    default_conversation_options,
    subentry_schema,
)

# The admin-only "Home Assistant" LLM API of Home Assistant 2026.11 (llm.LLM_API_HOME_ASSISTANT):
# it refuses requests without an admin user, and its tools need a larger context than the default.
ADMIN_LLM_API = "homeassistant"
ADMIN_LLM_API_MIN_CONTEXT = 8192


class RKLLMSubentryFlow(ConfigSubentryFlow):
    """Add or change a conversation agent or an AI task."""

    options: dict[str, Any]

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Start from the recommended settings."""
        self.options = (
            default_conversation_options()
            if self._subentry_type == SUBENTRY_CONVERSATION
            else default_ai_task_options()
        )
        return await self.async_step_set_options()

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Start from the subentry's settings."""
        self.options = dict(self._get_reconfigure_subentry().data)
        return await self.async_step_set_options()

    async def async_step_set_options(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Name, instructions, tools; the recommended settings or a second form for the rest."""
        if self._get_entry().state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        if user_input is None:
            return self.async_show_form(
                step_id="set_options",
                data_schema=subentry_schema(self.hass, self._subentry_type, self._is_new, self.options),
            )
        self.options.pop(CONF_LLM_HASS_API, None)  # an emptied selection is left out of the input
        self.options |= user_input
        if ADMIN_LLM_API in self.options.get(CONF_LLM_HASS_API, []) and self._small_context:
            return await self.async_step_admin_api()
        return await self._async_step_next()

    async def async_step_admin_api(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Warn that the admin-only Home Assistant API fails without an admin and needs a large context."""
        if user_input is None:
            return self.async_show_form(
                step_id="admin_api",
                data_schema=vol.Schema({}),
                description_placeholders={"min_context": str(ADMIN_LLM_API_MIN_CONTEXT)},
            )
        return await self._async_step_next()

    async def _async_step_next(self) -> SubentryFlowResult:
        if self.options[CONF_RECOMMENDED]:
            for key in advanced_options(self._subentry_type):
                self.options.pop(key, None)
            return self._async_save()
        return await self.async_step_advanced()

    async def async_step_advanced(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Sampling and history settings."""
        if user_input is None:
            return self.async_show_form(
                step_id="advanced", data_schema=advanced_schema(self._subentry_type, self.options)
            )
        self.options |= {
            key: int(value) if key in INT_OPTIONS else value for key, value in user_input.items()
        }
        for key, (default, _) in advanced_options(self._subentry_type).items():
            # Emptied or left at the runtime's value: not stored, so the runtime's own value applies.
            if key in SAMPLING_OPTIONS and user_input.get(key, default) == default:
                self.options.pop(key, None)
        return self._async_save()

    @property
    def _small_context(self) -> bool:
        """The model's context may leave no room next to the admin tools (a server's is unknown)."""
        context = self._get_entry().data.get(CONF_MAX_CONTEXT_LEN)
        return context is None or int(context) < ADMIN_LLM_API_MIN_CONTEXT

    @property
    def _is_new(self) -> bool:
        return self.source == SOURCE_USER

    def _async_save(self) -> SubentryFlowResult:
        data = dict(self.options)
        if self._is_new:
            return self.async_create_entry(title=str(data.pop(CONF_NAME)), data=data)
        return self.async_update_and_abort(self._get_entry(), self._get_reconfigure_subentry(), data=data)
