"""The forms of the config and subentry flows, and the options a subentry stores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import probatio as vol
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_MODEL, CONF_NAME, CONF_PROMPT, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import section
from homeassistant.helpers import llm
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from rkllm_runtime.chat import KVMode
from rkllm_runtime.types import RUNTIME_SAMPLING

from .const import (
    CONF_ACTION_SPEECH,
    CONF_ADVANCED,
    CONF_BASE_DOMAIN_ID,
    CONF_EMBED_FLASH,
    CONF_KV_STRATEGY,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MAX_HISTORY,
    CONF_MAX_NEW_TOKENS,
    CONF_MODEL_PATH,
    CONF_N_KEEP,
    CONF_PLATFORM,
    CONF_RECOMMENDED,
    CONF_REPEAT_PENALTY,
    CONF_RUNTIME_RELEASE,
    CONF_TEMPERATURE,
    CONF_THINK,
    CONF_TOP_K,
    CONF_TOP_P,
    DEFAULT_ACTION_SPEECH,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_KV_STRATEGY,
    DEFAULT_MAX_CONTEXT_LEN,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PLATFORM,
    PLATFORM_CPU_MASKS,
    SAMPLING_OPTIONS,
    SUBENTRY_CONVERSATION,
)

# Subentry options stored as integers (number selectors return floats).
INT_OPTIONS = {CONF_MAX_NEW_TOKENS, CONF_TOP_K, CONF_MAX_HISTORY}


def number_box(minimum: float, maximum: float, step: float = 1) -> NumberSelector:
    """A number typed into a box."""
    return NumberSelector(
        NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    )


def context_box() -> NumberSelector:
    """The context length of a model, in tokens."""
    return number_box(128, 131072)


def model_schema() -> vol.Schema:
    """The form of the parent entry."""
    return vol.Schema(
        {
            vol.Required(CONF_LIBRARY_PATH): TextSelector(),
            vol.Required(CONF_MODEL_PATH): TextSelector(),
            vol.Required(CONF_MAX_CONTEXT_LEN, default=DEFAULT_MAX_CONTEXT_LEN): context_box(),
            vol.Required(CONF_ADVANCED): section(
                vol.Schema(
                    {
                        vol.Required(CONF_PLATFORM, default=DEFAULT_PLATFORM): SelectSelector(
                            SelectSelectorConfig(
                                options=list(PLATFORM_CPU_MASKS),
                                translation_key=CONF_PLATFORM,
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                        vol.Required(CONF_N_KEEP, default=-1): number_box(-1, 131072),
                        vol.Required(CONF_EMBED_FLASH, default=False): BooleanSelector(),
                        vol.Required(CONF_BASE_DOMAIN_ID, default=0): number_box(0, 15),
                        vol.Required(CONF_KV_STRATEGY, default=DEFAULT_KV_STRATEGY): SelectSelector(
                            SelectSelectorConfig(
                                options=[mode.value for mode in KVMode],
                                translation_key=CONF_KV_STRATEGY,
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                        vol.Optional(CONF_RUNTIME_RELEASE): TextSelector(),
                    }
                ),
                {"collapsed": True},
            ),
        }
    )


def model_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Entry data from the model form: numbers as ints, paths stripped."""
    advanced = dict(user_input.get(CONF_ADVANCED, {}))
    for key in (CONF_N_KEEP, CONF_BASE_DOMAIN_ID):
        advanced[key] = int(advanced.get(key, 0 if key == CONF_BASE_DOMAIN_ID else -1))
    return {
        CONF_LIBRARY_PATH: user_input[CONF_LIBRARY_PATH].strip(),
        CONF_MODEL_PATH: user_input[CONF_MODEL_PATH].strip(),
        CONF_MAX_CONTEXT_LEN: int(user_input[CONF_MAX_CONTEXT_LEN]),
        CONF_ADVANCED: advanced,
    }


def api_key_selector() -> TextSelector:
    """A server's API key, hidden as it is typed."""
    return TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))


def server_schema() -> vol.Schema:
    """The form of a server: its address and key."""
    return vol.Schema(
        {
            vol.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            vol.Optional(CONF_API_KEY): api_key_selector(),
        }
    )


def server_model_schema(models: list[str], current: str | None) -> vol.Schema:
    """The choice of one of a server's models, ``current`` first if the server still has it."""
    default = current if current in models else models[0]
    return vol.Schema(
        {vol.Required(CONF_MODEL, default=default): SelectSelector(SelectSelectorConfig(options=models))}
    )


def reauth_schema() -> vol.Schema:
    """The form asking for a server's key again."""
    return vol.Schema({vol.Required(CONF_API_KEY): api_key_selector()})


def default_conversation_options() -> dict[str, Any]:
    """Options of the conversation agent created with a model (recommended settings)."""
    return {
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_THINK: False,
        CONF_ACTION_SPEECH: DEFAULT_ACTION_SPEECH,
        CONF_RECOMMENDED: True,
    }


def default_ai_task_options() -> dict[str, Any]:
    """Options of the AI task created with a model (recommended settings)."""
    return {CONF_THINK: False, CONF_RECOMMENDED: True}


def advanced_options(subentry_type: str) -> dict[str, tuple[Any, NumberSelector]]:
    """The settings behind "Recommended settings": key -> (default, selector).

    The default of a sampling setting is the runtime's own value, which applies when it is not set.
    """
    runtime = RUNTIME_SAMPLING
    options = {
        CONF_MAX_NEW_TOKENS: (DEFAULT_MAX_NEW_TOKENS, number_box(1, 16384)),
        CONF_TEMPERATURE: (runtime.temperature, number_box(0, 2, 0.05)),
    }
    if subentry_type == SUBENTRY_CONVERSATION:
        options |= {
            CONF_TOP_K: (runtime.top_k, number_box(1, 200)),
            CONF_TOP_P: (runtime.top_p, number_box(0, 1, 0.05)),
            CONF_REPEAT_PENALTY: (runtime.repeat_penalty, number_box(0.5, 2, 0.05)),
            CONF_MAX_HISTORY: (DEFAULT_MAX_HISTORY, number_box(0, 100)),
        }
    return options


def subentry_schema(
    hass: HomeAssistant, subentry_type: str, is_new: bool, options: Mapping[str, Any]
) -> vol.Schema:
    """The first form of a conversation or AI-task subentry, pre-filled with ``options``."""
    schema: dict[Any, Any] = {}
    if is_new:
        default_name = (
            DEFAULT_CONVERSATION_NAME if subentry_type == SUBENTRY_CONVERSATION else DEFAULT_AI_TASK_NAME
        )
        schema[vol.Required(CONF_NAME, default=default_name)] = str
    if subentry_type == SUBENTRY_CONVERSATION:
        apis = [SelectOptionDict(label=api.name, value=api.id) for api in llm.async_get_apis(hass)]
        valid = {option["value"] for option in apis}
        selected = [api for api in options.get(CONF_LLM_HASS_API, []) if api in valid]
        schema[vol.Optional(CONF_PROMPT, description={"suggested_value": options.get(CONF_PROMPT)})] = (
            TemplateSelector()
        )
        schema[vol.Optional(CONF_LLM_HASS_API, description={"suggested_value": selected})] = SelectSelector(
            SelectSelectorConfig(options=apis, multiple=True)
        )
    schema[vol.Optional(CONF_THINK, description={"suggested_value": options.get(CONF_THINK, False)})] = (
        BooleanSelector()
    )
    if subentry_type == SUBENTRY_CONVERSATION:
        speech = options.get(CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH)
        schema[vol.Optional(CONF_ACTION_SPEECH, description={"suggested_value": speech})] = BooleanSelector()
    # Subentries made before the toggle existed hold their own values: not the recommended ones.
    recommended = options.get(CONF_RECOMMENDED, not set(options) & set(advanced_options(subentry_type)))
    schema[vol.Required(CONF_RECOMMENDED, default=recommended)] = BooleanSelector()
    return vol.Schema(schema)


def advanced_schema(subentry_type: str, options: Mapping[str, Any]) -> vol.Schema:
    """The second form: sampling and history, pre-filled with ``options`` or the defaults.

    A sampling setting may be emptied: the runtime's own value applies.
    """
    schema: dict[Any, Any] = {}
    for key, (default, selector) in advanced_options(subentry_type).items():
        value = options.get(key, default)
        if key in SAMPLING_OPTIONS:
            schema[vol.Optional(key, description={"suggested_value": value})] = selector
        else:
            schema[vol.Required(key, default=value)] = selector
    return vol.Schema(schema)
