"""The subentry flows: conversation agents and AI tasks, with the recommended settings or their own."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import llm
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import SAMPLING_OPTIONS, SUBENTRY_AI_TASK, SUBENTRY_CONVERSATION
from custom_components.rkllm.subentry_flow import ADMIN_LLM_API
from rkllm_runtime.types import RUNTIME_SAMPLING


async def test_conversation_subentry_with_recommended_settings(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    result = await hass.config_entries.subentries.async_init(
        (init_integration.entry_id, SUBENTRY_CONVERSATION), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "set_options"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Kitchen agent",
            CONF_LLM_HASS_API: ["assist"],
            "think": True,
            "action_speech": False,
            "recommended": True,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Kitchen agent"
    assert result["data"] == {
        "prompt": llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_LLM_HASS_API: ["assist"],
        "think": True,
        "action_speech": False,
        "recommended": True,
    }
    await hass.async_block_till_done()
    assert hass.states.get("conversation.kitchen_agent") is not None


async def advanced_form(hass: HomeAssistant, entry: MockConfigEntry) -> Any:
    """The second page of a new conversation agent without the recommended settings."""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CONVERSATION), context={"source": SOURCE_USER}
    )
    return await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Tuned agent", "recommended": False}
    )


async def test_conversation_subentry_with_own_settings(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    result = await advanced_form(hass, init_integration)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "advanced"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            "max_new_tokens": 64.0,
            "temperature": 0.3,
            "top_k": 5.0,
            "top_p": 0.5,
            "repeat_penalty": 1.1,
            "max_history": 4.0,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"]["max_new_tokens"] == 64
    assert isinstance(result["data"]["max_new_tokens"], int)
    assert (result["data"]["temperature"], result["data"]["top_k"]) == (0.3, 5)
    assert "repeat_penalty" not in result["data"]  # left at the runtime's value: the runtime's own
    assert result["data"]["recommended"] is False
    assert CONF_LLM_HASS_API not in result["data"]  # none selected
    await hass.async_block_till_done()


KEPT = {"max_new_tokens": 256.0, "max_history": 10.0}


def suggested(form: dict[str, Any]) -> dict[str, Any]:
    """The values a form shows: suggested, or else its defaults."""
    shown = {}
    for marker in form["data_schema"].schema:
        shown[marker.schema] = (
            marker.description["suggested_value"] if marker.description else marker.default()
        )
    return shown


async def test_sampling_shows_the_runtimes_values_and_stores_only_changed_ones(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    result = await advanced_form(hass, init_integration)
    assert suggested(result) == {
        "max_new_tokens": 256,
        "max_history": 10,
        "temperature": RUNTIME_SAMPLING.temperature,
        "top_k": RUNTIME_SAMPLING.top_k,
        "top_p": RUNTIME_SAMPLING.top_p,
        "repeat_penalty": RUNTIME_SAMPLING.repeat_penalty,
    }
    # The user changes the temperature, keeps top K and empties top P.
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {**KEPT, "temperature": 0.3, "top_k": 40.0, "repeat_penalty": 1.05},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    sampling = {key: result["data"][key] for key in SAMPLING_OPTIONS if key in result["data"]}
    assert sampling == {"temperature": 0.3, "repeat_penalty": 1.05}
    await hass.async_block_till_done()


async def test_stored_sampling_is_shown_kept_and_can_be_emptied(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A subentry saved when the integration had sampling defaults of its own keeps its values."""
    stored = {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "repeat_penalty": 1.05}
    subentry = next(
        s for s in init_integration.subentries.values() if s.subentry_type == SUBENTRY_CONVERSATION
    )
    old = {**subentry.data, "recommended": False, "max_new_tokens": 256, "max_history": 10, **stored}
    hass.config_entries.async_update_subentry(init_integration, subentry, data=old)
    await hass.async_block_till_done()
    result = await init_integration.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"think": False, "recommended": False}
    )
    assert {key: suggested(result)[key] for key in stored} == stored
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {**KEPT, "temperature": 0.7, "top_p": 0.8, "repeat_penalty": 1.05},
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    data = init_integration.subentries[subentry.subentry_id].data
    assert {key: data.get(key) for key in stored} == {**stored, "top_k": None}  # emptied: the runtime's


async def test_reconfigure_subentry(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    subentry = next(s for s in init_integration.subentries.values() if s.subentry_type == SUBENTRY_AI_TASK)
    result = await init_integration.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"think": False, "recommended": False}
    )
    assert result["step_id"] == "advanced"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"max_new_tokens": 99, "temperature": 0.2}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert init_integration.subentries[subentry.subentry_id].data["max_new_tokens"] == 99
    # Back to the recommended settings: the own values are dropped.
    result = await init_integration.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"think": False, "recommended": True}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert "max_new_tokens" not in init_integration.subentries[subentry.subentry_id].data


async def test_subentry_needs_a_loaded_model(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    result = await hass.config_entries.subentries.async_init(
        (config_entry.entry_id, SUBENTRY_AI_TASK), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


class AdminAPI(llm.API):
    """Home Assistant 2026.11's admin-only "Home Assistant" API, where the release lacks it."""

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(self, "", llm_context, [])


async def test_the_admin_only_api_with_a_small_context_is_warned_about(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    if ADMIN_LLM_API not in {api.id for api in llm.async_get_apis(hass)}:
        llm.async_register_api(hass, AdminAPI(hass=hass, id=ADMIN_LLM_API, name="Home Assistant"))
    result = await hass.config_entries.subentries.async_init(
        (init_integration.entry_id, SUBENTRY_CONVERSATION), context={"source": SOURCE_USER}
    )
    apis = ["assist", ADMIN_LLM_API]
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Admin agent", CONF_LLM_HASS_API: apis, "recommended": True}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "admin_api"  # the model entry's context holds 4,096 tokens
    assert result["description_placeholders"] == {"min_context": "8192"}
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], {})
    await hass.async_block_till_done()  # the new subentry reloads the model entry
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_LLM_HASS_API] == apis
