"""The config flow loads the model for real and names each failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import llm
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.config_flow import (
    ADMIN_LLM_API,
    advanced_schema,
    model_schema,
    server_schema,
    subentry_schema,
)
from custom_components.rkllm.const import (
    CONF_ADVANCED,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODE,
    CONF_MODEL_PATH,
    CONF_PLATFORM,
    CONF_RUNTIME_RELEASE,
    DOMAIN,
    MODE_CHILD,
    MODE_IN_PROCESS,
    MODE_SERVER,
    SAMPLING_OPTIONS,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from rkllm_runtime import Library
from rkllm_runtime.emulator import build_cached
from rkllm_runtime.types import RUNTIME_SAMPLING
from tests.conftest import ModelFactory
from tests.runtime.test_loading import fake_elf

STRINGS = json.loads((Path(__file__).parents[2] / "custom_components/rkllm/strings.json").read_text())


def form_input(library: Path | str, model: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        CONF_LIBRARY_PATH: str(library),
        CONF_MODEL_PATH: str(model),
        CONF_MAX_CONTEXT_LEN: extra.pop(CONF_MAX_CONTEXT_LEN, 2048),
        CONF_ADVANCED: {CONF_PLATFORM: "rk3588", **extra},
    }


async def through_loading(hass: HomeAssistant, result: Any) -> dict[str, Any]:
    """The outcome once the model has loaded.

    Home Assistant continues a flow by itself when its progress task ends, so a quick load
    may already have finished the flow within the call that started it.
    """
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        assert result["progress_action"] == "load_model"
        await hass.async_block_till_done()
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
    return dict(result)


async def choose(hass: HomeAssistant, mode: str) -> dict[str, Any]:
    """Start a flow, answer where the model runs and, on this machine, that a model file is used."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == [MODE_IN_PROCESS, MODE_CHILD, MODE_SERVER]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": mode})
    if mode == MODE_SERVER:
        return dict(result)
    assert result["menu_options"] == [f"{mode}_file", "download"]
    return dict(
        await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": f"{mode}_file"})
    )


async def submit(
    hass: HomeAssistant, user_input: dict[str, Any], mode: str = MODE_IN_PROCESS
) -> dict[str, Any]:
    """Choose a mode, then run its form through the loading progress to its outcome."""
    result = await choose(hass, mode)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == f"{mode}_file"
    return await through_loading(
        hass, await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    )


async def test_happy_path_creates_the_model_with_an_agent_and_a_task(
    hass: HomeAssistant, emulator_library: Path, model_path: Path
) -> None:
    result = await submit(hass, form_input(emulator_library, model_path))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == model_path.stem
    assert result["data"][CONF_MODEL_PATH] == str(model_path)
    assert result["data"][CONF_ADVANCED][CONF_PLATFORM] == "rk3588"
    entry = result["result"]
    kinds = sorted(subentry.subentry_type for subentry in entry.subentries.values())
    assert kinds == [SUBENTRY_AI_TASK, SUBENTRY_CONVERSATION]
    conversation = next(s for s in entry.subentries.values() if s.subentry_type == SUBENTRY_CONVERSATION)
    assert conversation.data[CONF_LLM_HASS_API] == ["assist"]
    assert entry.unique_id == str(model_path)


async def test_form_is_prefilled_with_a_found_library(
    hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "custom_components.rkllm.config_flow.find_library", lambda: Path("/usr/local/lib/librkllmrt.so")
    )
    result = await choose(hass, MODE_IN_PROCESS)
    schema = result["data_schema"].schema
    library_key = next(key for key in schema if key == CONF_LIBRARY_PATH)
    assert library_key.description["suggested_value"] == "/usr/local/lib/librkllmrt.so"


def library_case(kind: str, tmp_path: Path) -> Path:
    match kind:
        case "missing":
            return tmp_path / "librkllmrt.so"
        case "aarch64":
            return fake_elf(tmp_path / "librkllmrt.so", machine=183)
        case "old":
            return build_cached("1.2", "1.1.2")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "error"),
    [("missing", "library_not_found"), ("aarch64", "wrong_architecture"), ("old", "unsupported_version")],
)
@pytest.mark.parametrize("flow_mode", [MODE_IN_PROCESS, MODE_CHILD])
async def test_library_errors(
    hass: HomeAssistant, model_path: Path, tmp_path: Path, kind: str, error: str, *, flow_mode: str
) -> None:
    result = await submit(hass, form_input(library_case(kind, tmp_path), model_path), flow_mode)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert result["description_placeholders"]["error"]


@pytest.mark.parametrize(("abi", "override"), [("1.2", "1.3.0"), ("1.3", "1.2.3")])
async def test_runtime_release_disagreeing_with_the_library_is_refused(
    hass: HomeAssistant, model_path: Path, abi: str, override: str
) -> None:
    """The override would load the library with the other ABI's layout, which crashes in rkllm_run."""
    result = await submit(hass, form_input(build_cached(abi), model_path, **{CONF_RUNTIME_RELEASE: override}))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "version_mismatch"}
    assert override in result["description_placeholders"]["error"]
    assert not hass.config_entries.async_entries(DOMAIN)


async def test_model_errors(
    hass: HomeAssistant,
    emulator_library: Path,
    make_model: ModelFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await submit(hass, form_input(emulator_library, tmp_path / "missing.rkllm"))
    assert result["errors"] == {"base": "model_not_found"}

    corrupt = tmp_path / "corrupt.rkllm"
    corrupt.write_bytes(b"\0garbage")
    result = await submit(hass, form_input(emulator_library, corrupt))
    assert result["errors"] == {"base": "not_a_model"}

    small = make_model(max_context=1024)
    result = await submit(hass, form_input(emulator_library, small, max_context_len=8192))
    assert result["errors"] == {"base": "model_incompatible"}
    assert "at most 1024 tokens" in result["description_placeholders"]["error"]

    huge = tmp_path / "huge.rkllm"
    with huge.open("wb") as file:
        file.truncate(2**40)
    result = await submit(hass, form_input(emulator_library, huge))
    assert result["errors"] == {"base": "insufficient_memory"}

    monkeypatch.setenv("RKLLM_EMU_NPU_MEMORY_MB", "100")
    result = await submit(hass, form_input(emulator_library, make_model(npu_memory_mb=500)))
    assert result["errors"] == {"base": "model_rejected"}

    # Nothing is left loaded by the failures: with memory available, a model goes through.
    monkeypatch.delenv("RKLLM_EMU_NPU_MEMORY_MB")
    result = await submit(hass, form_input(emulator_library, make_model(npu_memory_mb=500)))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_one_entry_per_model_file(
    hass: HomeAssistant, config_entry: MockConfigEntry, emulator_library: Path, model_path: Path
) -> None:
    result = await submit(hass, form_input(emulator_library, model_path))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reconfigure(
    hass: HomeAssistant, init_integration: MockConfigEntry, emulator_library: Path, make_model: ModelFactory
) -> None:
    other = make_model(name="another")
    result = await init_integration.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    result = await through_loading(
        hass,
        await hass.config_entries.flow.async_configure(
            result["flow_id"], form_input(emulator_library, other, max_context_len=1024)
        ),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert init_integration.data[CONF_MODEL_PATH] == str(other)
    assert init_integration.runtime_data.engine.runtime.params.max_context_len == 1024


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


async def test_wrong_library_answers_on_the_form_without_a_progress_screen(
    hass: HomeAssistant, model_path: Path, tmp_path: Path
) -> None:
    """A failure that comes before the frontend follows the progress screen would leave it hanging."""
    result = await choose(hass, MODE_IN_PROCESS)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], form_input(tmp_path / "nowhere" / "librkllmrt.so", model_path)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "library_not_found"}


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    """A model file the runtime refuses (after the quick checks pass)."""
    path = tmp_path / "corrupt.rkllm"
    path.write_bytes(b"\0garbage")
    return path


async def test_empty_post_after_loading_shows_the_form_again(
    hass: HomeAssistant, emulator_library: Path, corrupt: Path
) -> None:
    result = await choose(hass, MODE_IN_PROCESS)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], form_input(emulator_library, corrupt)
    )
    await hass.async_block_till_done()  # the load failed and Home Assistant moved the flow on
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "in_process_file"
    assert result["errors"] == {"base": "not_a_model"}


async def test_second_flow_for_the_same_model_is_told_why(
    hass: HomeAssistant, emulator_library: Path, corrupt: Path
) -> None:
    first = await submit(hass, form_input(emulator_library, corrupt))
    assert first["type"] is FlowResultType.FORM  # still open, for the same model file
    second = await submit(hass, form_input(emulator_library, corrupt))
    assert second["type"] is FlowResultType.ABORT
    assert second["reason"] == "already_in_progress"
    assert second["reason"] in STRINGS["config"]["abort"]


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


@pytest.mark.parametrize("mode", [MODE_CHILD], indirect=True)
async def test_child_process_mode_is_checked_by_starting_it(
    hass: HomeAssistant,
    mode: str,
    emulator_library: Path,
    model_path: Path,
    *,
    make_model: ModelFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RKLLM_EMU_NPU_MEMORY_MB", "100")  # the child inherits it: the model does not fit
    result = await submit(hass, form_input(emulator_library, make_model(npu_memory_mb=500)), MODE_CHILD)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "child_file"
    assert result["errors"] == {"base": "child_failed"}
    assert result["description_placeholders"]["error"]  # what the process said
    monkeypatch.delenv("RKLLM_EMU_NPU_MEMORY_MB")
    result = await through_loading(
        hass,
        await hass.config_entries.flow.async_configure(
            result["flow_id"], form_input(emulator_library, model_path)
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODE] == MODE_CHILD
    await hass.async_block_till_done()
    entry = result["result"]
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.child is not None
    assert entry.runtime_data.child.process.running
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize("mode", [MODE_CHILD], indirect=True)
async def test_child_process_mode_never_loads_the_library_into_home_assistant(
    hass: HomeAssistant, mode: str, emulator_library: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Path] = []

    def refuse(path: str | Path, release: str | None = None) -> Library:
        loaded.append(Path(path))
        raise AssertionError("the library was loaded into Home Assistant's process")

    for module in ("custom_components.rkllm.loader", "rkllm_runtime.runtime"):
        monkeypatch.setattr(f"{module}.load_library", refuse)
    result = await submit(hass, form_input(emulator_library, model_path), MODE_CHILD)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.engine.status.release != "unknown"  # the child loaded the library
    assert loaded == []
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_entries_from_before_the_modes_run_in_home_assistant(
    hass: HomeAssistant, emulator_library: Path, model_path: Path
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="qwen",
        version=1,
        minor_version=1,
        data={
            CONF_LIBRARY_PATH: str(emulator_library),
            CONF_MODEL_PATH: str(model_path),
            CONF_MAX_CONTEXT_LEN: 2048,
            CONF_ADVANCED: {},
        },
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.minor_version == 2
    assert entry.data[CONF_MODE] == MODE_IN_PROCESS
    assert await hass.config_entries.async_unload(entry.entry_id)


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
