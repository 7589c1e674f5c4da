"""The AI-task entity: free text, and structured data with one retry."""

from __future__ import annotations

from pathlib import Path

import probatio as vol
import pytest
from homeassistant.components import ai_task
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import config_validation as cv
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.integration.conftest import IN_EVERY_MODE

TASK = "ai_task.rkllm_ai_task"


@IN_EVERY_MODE
async def test_generate_text(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    result = await ai_task.async_generate_data(
        hass, task_name="greet", entity_id=TASK, instructions="Say hello"
    )
    assert result.data == "Hello! How can I help?"


@IN_EVERY_MODE
async def test_structured_output_is_validated_and_retried(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The first answer is cut-off JSON; the retry prompt gets a valid object."""
    structure = vol.Schema({vol.Required("items"): [cv.string]})
    result = await ai_task.async_generate_data(
        hass, task_name="list", entity_id=TASK, instructions="Make a shopping list", structure=structure
    )
    assert result.data == {"items": ["milk", "bread"]}


@IN_EVERY_MODE
async def test_structured_output_that_never_validates(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    structure = vol.Schema({vol.Required("count"): int})
    with pytest.raises(HomeAssistantError, match="did not produce valid data"):
        await ai_task.async_generate_data(
            hass, task_name="count", entity_id=TASK, instructions="How many?", structure=structure
        )


@IN_EVERY_MODE
async def test_structured_output_under_the_schema_with_the_models_vocabulary(
    hass: HomeAssistant, qwen_vocabulary: Path, init_integration: MockConfigEntry
) -> None:
    """The request above that never validates, with the model's tokenizer.json beside it."""
    structure = vol.Schema({vol.Required("count"): int})
    result = await ai_task.async_generate_data(
        hass, task_name="count", entity_id=TASK, instructions="How many?", structure=structure
    )
    assert isinstance(result.data["count"], int)


async def test_without_evaluations_in_home_assistant_the_entity_generates_data_only(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The release the tests run (2026.10) has no evaluations: the entity neither offers nor needs them."""
    assert "EVALUATE" not in ai_task.AITaskEntityFeature.__members__
    state = hass.states.get(TASK)
    assert state is not None
    assert state.attributes["supported_features"] == ai_task.AITaskEntityFeature.GENERATE_DATA
