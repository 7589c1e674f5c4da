"""Setting up, unloading and reloading a model entry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntryState, ConfigSubentry
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import (
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODEL_PATH,
    DOMAIN,
    MODE_CHILD,
    MODE_IN_PROCESS,
)
from custom_components.rkllm.issues import CONTEXT_TOO_SMALL
from rkllm_runtime.chat import TURN_TOKENS, EngineState
from rkllm_runtime.emulator import build_cached
from tests.integration.conftest import IN_EVERY_MODE, until
from tests.runtime.test_loading import fake_elf

AGENT = "conversation.rkllm_conversation"


@IN_EVERY_MODE
async def test_setup_and_unload_free_the_npu(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    engine = init_integration.runtime_data.engine
    assert engine.state is EngineState.READY
    assert engine.available
    assert (
        any(thread.name.startswith("rkllm") for thread in threading.enumerate()) or engine.stats.requests == 0
    )
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    assert init_integration.state is ConfigEntryState.NOT_LOADED
    assert engine.state is EngineState.CLOSED
    assert not any(thread.name.startswith("rkllm") for thread in threading.enumerate())


async def test_adding_a_subentry_reloads(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    old_engine = init_integration.runtime_data.engine
    hass.config_entries.async_add_subentry(
        init_integration,
        ConfigSubentry(
            data={"max_new_tokens": 32}, subentry_type="ai_task_data", title="Second task", unique_id=None
        ),
    )
    await hass.async_block_till_done()
    assert init_integration.state is ConfigEntryState.LOADED
    assert init_integration.runtime_data.engine is not old_engine
    assert old_engine.state is EngineState.CLOSED
    assert hass.states.get("ai_task.second_task") is not None


@pytest.mark.parametrize(
    ("library", "issue"),
    [("missing", "library_not_found"), ("aarch64", "wrong_architecture"), ("1.2.0", "unsupported_version")],
)
async def test_unusable_library_raises_a_repair_issue(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path, library: str, issue: str
) -> None:
    path = {
        "missing": lambda: tmp_path / "nowhere" / "librkllmrt.so",
        "aarch64": lambda: fake_elf(tmp_path / "librkllmrt.so", machine=183),
        "1.2.0": lambda: build_cached("1.2", "1.2.0"),
    }[library]()
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_LIBRARY_PATH: str(path)}
    )
    assert not await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    found = ir.async_get(hass).async_get_issue(DOMAIN, f"runtime_unusable_{config_entry.entry_id}")
    assert found is not None
    assert found.translation_key == issue
    assert str(path) in found.translation_placeholders["path"]


async def test_runtime_1_3_0_gets_a_warning_issue(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_LIBRARY_PATH: str(build_cached("1.3", "1.3.0"))}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    found = ir.async_get(hass).async_get_issue(DOMAIN, f"runtime_release_warning_{config_entry.entry_id}")
    assert found is not None
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.translation_placeholders["release"] == "1.3.0"
    assert "Illegal instruction" in found.translation_placeholders["warning"]


async def test_repair_issue_goes_away_once_fixed(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    good = config_entry.data[CONF_LIBRARY_PATH]
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_LIBRARY_PATH: str(tmp_path / "missing.so")}
    )
    assert not await hass.config_entries.async_setup(config_entry.entry_id)
    hass.config_entries.async_update_entry(config_entry, data={**config_entry.data, CONF_LIBRARY_PATH: good})
    assert await hass.config_entries.async_reload(config_entry.entry_id)
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"runtime_unusable_{config_entry.entry_id}") is None
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_missing_model_is_retried(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A model on a disk that is not mounted yet: not ready, retried later."""
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_MODEL_PATH: str(tmp_path / "later.rkllm")}
    )
    assert not await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert "does not exist" in (config_entry.reason or "")


async def test_unload_during_generation(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    engine = init_integration.runtime_data.engine
    task = hass.async_create_task(
        conversation.async_converse(
            hass, "tell me a story", None, Context(), agent_id="conversation.rkllm_conversation"
        )
    )
    await until(lambda: engine.runtime.is_running)
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    result = await asyncio.wait_for(task, 10)
    assert result.response.speech["plain"]["speech"] in (
        "The model was unloaded while answering",
        "The request was cancelled before the model finished (Home Assistant is stopping, "
        "the model was unloaded, or the caller went away)",
    )
    assert engine.state is EngineState.CLOSED
    # The engine's threads are gone; the runtime's log router stays until Home Assistant stops.
    assert not [
        t.name for t in threading.enumerate() if t.name.startswith("rkllm") and t.name != "rkllm-stderr"
    ]


def test_the_integration_does_not_import_the_http_server() -> None:
    """In Home Assistant's process only the child process's starter is needed, not rkllm-server."""
    code = (
        "import sys\n"
        "from custom_components.rkllm import ai_task, config_flow, conversation, diagnostics, sensor\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('rkllm_runtime.server'))))\n"
    )
    modules = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert modules == ["rkllm_runtime.server", "rkllm_runtime.server.child"]


async def test_repairs_carry_the_entry_where_home_assistant_supports_it(
    hass: HomeAssistant, config_entry: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2026.11 takes the entry (and clears its issues with it); 2026.10 does not know the parameter."""
    issue_id = f"runtime_release_warning_{config_entry.entry_id}"
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_LIBRARY_PATH: str(build_cached("1.3", "1.3.0"))}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None
    linked: list[str | None] = []
    release = ir.async_create_issue

    def newer_release(
        hass: HomeAssistant, domain: str, issue_id: str, *, config_entry_id: str | None = None, **kwargs: Any
    ) -> None:
        linked.append(config_entry_id)
        release(hass, domain, issue_id, **kwargs)

    monkeypatch.setattr(ir, "async_create_issue", newer_release)
    assert await hass.config_entries.async_reload(config_entry.entry_id)
    assert linked == [config_entry.entry_id]
    await hass.config_entries.async_remove(config_entry.entry_id)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None


async def test_an_unload_that_fails_keeps_the_model_and_says_why(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never False from unload: 2026.11 would turn it into an error that names no reason."""

    async def refuse(entry: MockConfigEntry, platforms: object) -> bool:
        return False

    monkeypatch.setattr(hass.config_entries, "async_unload_platforms", refuse)
    engine = init_integration.runtime_data.engine
    assert not await hass.config_entries.async_unload(init_integration.entry_id)
    assert init_integration.state is ConfigEntryState.FAILED_UNLOAD
    assert "could not be removed" in (init_integration.reason or "")
    assert not engine.closed
    await engine.aclose()


@pytest.mark.parametrize("mode", [MODE_IN_PROCESS, MODE_CHILD], indirect=True)
async def test_a_context_without_room_for_a_turn_raises_a_repair_issue(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The Assist prompt and tools of the default agent, in 4,096 tokens and in a context just larger."""
    issue_id = f"{CONTEXT_TOO_SMALL}_{init_integration.entry_id}"
    await conversation.async_converse(hass, "hello there", None, Context(), agent_id=AGENT)
    room = init_integration.runtime_data.engine.stats.context_room
    assert room is not None
    assert room >= TURN_TOKENS
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    system = 4096 - room
    hass.config_entries.async_update_entry(
        init_integration, data={**init_integration.data, CONF_MAX_CONTEXT_LEN: system + 300}
    )
    await hass.async_block_till_done()
    await conversation.async_converse(hass, "hello there", None, Context(), agent_id=AGENT)
    found = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    assert found is not None
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.translation_placeholders == {"title": "qwen", "room": "300", "needed": str(TURN_TOKENS)}
    hass.config_entries.async_update_entry(
        init_integration, data={**init_integration.data, CONF_MAX_CONTEXT_LEN: 4096}
    )
    await hass.async_block_till_done()
    await conversation.async_converse(hass, "hello there", None, Context(), agent_id=AGENT)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
