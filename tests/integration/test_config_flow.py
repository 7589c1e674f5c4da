"""The config flow loads the model for real and names each failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

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
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from rkllm_runtime import Library
from rkllm_runtime.emulator import build_cached
from tests.conftest import ModelFactory
from tests.integration.conftest import STRINGS
from tests.runtime.test_loading import fake_elf


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
        "custom_components.rkllm.loader.find_library", lambda: Path("/usr/local/lib/librkllmrt.so")
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
