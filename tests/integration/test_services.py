"""The rkllm.generate service."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import Context, HomeAssistant, ServiceResponse
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser

from custom_components.rkllm.const import DOMAIN
from tests.integration.conftest import IN_EVERY_MODE

MODEL_STATE = "sensor.qwen_model_state"


async def generate(
    hass: HomeAssistant, data: dict[str, Any], context: Context | None = None
) -> ServiceResponse:
    """Call rkllm.generate and return its response."""
    response = await hass.services.async_call(
        DOMAIN, "generate", data, blocking=True, return_response=True, context=context
    )
    assert response is not None
    return response


@IN_EVERY_MODE
async def test_generate_returns_text_and_figures(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    response = await hass.services.async_call(
        DOMAIN,
        "generate",
        {"config_entry_id": init_integration.entry_id, "prompt": "say hello", "system_prompt": "Be nice."},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["text"] == "Hello! How can I help?"
    assert response["thinking"] == ""
    assert response["prompt_tokens"] > 10
    assert response["completion_tokens"] == 8  # Hello ! ␣How ␣can ␣I ␣help ? <|im_end|>
    assert response["time_to_first_token_ms"] >= 0
    assert response["tokens_per_second"] > 0


@IN_EVERY_MODE
async def test_generate_with_thinking(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    response = await hass.services.async_call(
        DOMAIN,
        "generate",
        {"config_entry_id": init_integration.entry_id, "prompt": "weather today?", "thinking": True},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["text"] == "It is sunny."
    assert response["thinking"] == "The user asks about the weather."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"config_entry_id": "nope", "prompt": "hi"}, "No RKLLM model with entry ID nope"),
        ({"prompt": "   "}, "The prompt is empty"),
    ],
)
async def test_bad_input_is_a_validation_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, data: dict[str, str], message: str
) -> None:
    with pytest.raises(ServiceValidationError, match=message):
        await hass.services.async_call(
            DOMAIN,
            "generate",
            {"config_entry_id": init_integration.entry_id, **data},
            blocking=True,
            return_response=True,
        )


@IN_EVERY_MODE
async def test_unloaded_model(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    await hass.config_entries.async_unload(init_integration.entry_id)
    with pytest.raises(ServiceValidationError, match="is not loaded"):
        await hass.services.async_call(
            DOMAIN,
            "generate",
            {"config_entry_id": init_integration.entry_id, "prompt": "hi"},
            blocking=True,
            return_response=True,
        )


async def test_generate_is_for_administrators(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_read_only_user: MockUser,
    hass_admin_user: MockUser,
) -> None:
    data = {"config_entry_id": init_integration.entry_id, "prompt": "say hello"}
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN,
            "generate",
            data,
            blocking=True,
            return_response=True,
            context=Context(user_id=hass_read_only_user.id),
        )
    assert init_integration.runtime_data.engine.stats.requests == 0  # the NPU was not touched
    response = await generate(hass, data, Context(user_id=hass_admin_user.id))
    assert response["text"] == "Hello! How can I help?"


@IN_EVERY_MODE
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("hello \ud800 there", "unpaired surrogate at position 6"),
        ("hello\0 and the rest", "NUL character at position 5"),
    ],
)
async def test_text_a_c_string_cannot_carry_is_refused(
    hass: HomeAssistant, init_integration: MockConfigEntry, prompt: str, message: str
) -> None:
    with pytest.raises(ServiceValidationError, match=f"The text cannot be sent to the model: .*{message}"):
        await generate(hass, {"config_entry_id": init_integration.entry_id, "prompt": prompt})
    engine = init_integration.runtime_data.engine
    assert engine.stats.last_error is None  # not the model's fault: its state stays "ready"
    await hass.async_block_till_done()
    assert hass.states.get(MODEL_STATE).state == "ready"
    response = await generate(hass, {"config_entry_id": init_integration.entry_id, "prompt": "say hello"})
    assert response["text"] == "Hello! How can I help?"


@IN_EVERY_MODE
async def test_prompt_longer_than_the_context_says_how_much_fits(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    with pytest.raises(ServiceValidationError) as raised:
        await generate(hass, {"config_entry_id": init_integration.entry_id, "prompt": "lamp " * 100_000})
    assert raised.value.translation_key == "prompt_too_long"
    placeholders = raised.value.translation_placeholders
    assert placeholders is not None
    assert placeholders["limit"] == "4096"
    assert int(placeholders["tokens"]) > 4096
    assert "the context holds 4096 tokens" in str(raised.value)
    engine = init_integration.runtime_data.engine
    assert engine.stats.requests == 0  # refused before running
    assert engine.stats.last_error is None
    await hass.async_block_till_done()
    assert hass.states.get(MODEL_STATE).state == "ready"
