"""The rkllm.generate service: one prompt in, text and figures out."""

from __future__ import annotations

import probatio as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_CONFIG_ENTRY_ID
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import service

from rkllm_runtime.chat import ChatRequest, Message, ThinkingDelta

from .const import DEFAULT_MAX_NEW_TOKENS, DOMAIN
from .errors import user_facing_errors
from .runtime_data import RKLLMConfigEntry

SERVICE_GENERATE = "generate"
ATTR_PROMPT = "prompt"
ATTR_SYSTEM_PROMPT = "system_prompt"
ATTR_MAX_NEW_TOKENS = "max_new_tokens"
ATTR_THINKING = "thinking"

GENERATE_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_PROMPT): cv.string,
        vol.Optional(ATTR_SYSTEM_PROMPT, default=""): cv.string,
        vol.Optional(ATTR_MAX_NEW_TOKENS, default=DEFAULT_MAX_NEW_TOKENS): vol.All(
            vol.Coerce(int), vol.Range(min=1, max=16384)
        ),
        vol.Optional(ATTR_THINKING, default=False): cv.boolean,
    }
)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's services (admin only: a request keeps the NPU busy)."""
    service.async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_GENERATE,
        _async_generate,
        schema=GENERATE_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )


def _loaded_entry(hass: HomeAssistant, entry_id: str) -> RKLLMConfigEntry:
    entry: RKLLMConfigEntry | None = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_found",
            translation_placeholders={"entry_id": entry_id},
        )
    if entry.state is not ConfigEntryState.LOADED:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_loaded",
            translation_placeholders={"title": entry.title},
        )
    return entry


async def _async_generate(call: ServiceCall) -> ServiceResponse:
    """Generate a reply to one prompt (no conversation history)."""
    entry = _loaded_entry(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    prompt = call.data[ATTR_PROMPT].strip()
    if not prompt:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="empty_prompt")
    request = ChatRequest(
        system_prompt=call.data[ATTR_SYSTEM_PROMPT],
        messages=[Message("user", prompt)],
        enable_thinking=call.data[ATTR_THINKING],
        max_new_tokens=call.data[ATTR_MAX_NEW_TOKENS],
    )
    thinking: list[str] = []
    with user_facing_errors():
        async with entry.runtime_data.engine.chat(request) as stream:
            async for event in stream:
                if isinstance(event, ThinkingDelta):
                    thinking.append(event.text)
    assert stream.result is not None
    perf = stream.result.perf
    return {
        "text": stream.result.text.strip(),
        "thinking": "".join(thinking).strip(),
        "prompt_tokens": stream.result.prompt_tokens,
        "completion_tokens": perf.generate_tokens,
        "time_to_first_token_ms": round(perf.prefill_time_ms, 1),
        "tokens_per_second": round(perf.decode_tokens_per_second, 2),
    }
