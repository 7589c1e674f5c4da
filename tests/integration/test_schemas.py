"""Every form of the flows has its strings: a title, and a label and a description for each field."""

from __future__ import annotations

from homeassistant.core import HomeAssistant

from custom_components.rkllm.const import (
    MODE_CHILD,
    MODE_IN_PROCESS,
    MODE_SERVER,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from custom_components.rkllm.schemas import advanced_schema, model_schema, server_schema, subentry_schema
from tests.integration.conftest import STRINGS


def test_every_form_field_has_a_label_and_a_description(hass: HomeAssistant) -> None:
    forms = STRINGS["config"]["step"] | {
        f"{kind}.{step}": strings
        for kind, subentry in STRINGS["config_subentries"].items()
        for step, strings in subentry["step"].items()
    }
    for name, step in forms.items():
        assert step.get("title"), name
        assert set(step.get("data", {})) == set(step.get("data_description", {})), name
        for section in step.get("sections", {}).values():
            assert set(section["data"]) == set(section["data_description"]), name
    assert forms["user"]["menu_options"].keys() == {MODE_IN_PROCESS, MODE_CHILD, MODE_SERVER}
    for mode in (MODE_IN_PROCESS, MODE_CHILD):
        assert forms[mode]["menu_options"].keys() == {f"{mode}_file", "download"}
        assert set(model_schema().schema) == {*forms[f"{mode}_file"]["data"], "advanced"}
    assert set(server_schema().schema) == set(forms[MODE_SERVER]["data"])
    for kind in (SUBENTRY_CONVERSATION, SUBENTRY_AI_TASK):
        assert set(subentry_schema(hass, kind, True, {}).schema) == set(forms[f"{kind}.set_options"]["data"])
        assert set(advanced_schema(kind, {}).schema) == set(forms[f"{kind}.advanced"]["data"])
    assert STRINGS["config_subentries"][SUBENTRY_AI_TASK]["initiate_flow"]["user"] == "Add AI task"
