"""The model in its own process: a runtime crash ends one answer, never Home Assistant."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from homeassistant.components import conversation
from homeassistant.const import EVENT_HOMEASSISTANT_STOP, STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import intent
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.rkllm.const import (
    CONF_BASE_DOMAIN_ID,
    CONF_EMBED_FLASH,
    CONF_N_KEEP,
    CONF_PLATFORM,
    DOMAIN,
    HEALTHY_AFTER_S,
    MODE_CHILD,
)
from custom_components.rkllm.loader import child_pid_file
from rkllm_runtime.remote.client import RemoteEngine
from tests.integration.conftest import until
from tests.server.conftest import launch

AGENT = "conversation.rkllm_conversation"
pytestmark = pytest.mark.parametrize("mode", [MODE_CHILD], indirect=True)


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("custom_components.rkllm.supervision.RESTART_BACKOFF_S", (0.2,))


async def converse(hass: HomeAssistant, text: str) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, None, Context(), agent_id=AGENT)


async def crash(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Crash the runtime mid-answer; wait until the process is back."""
    child = entry.runtime_data.child
    assert child is not None
    pid = child.process.pid
    result = await converse(hass, "please crash now")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    speech = result.response.speech["plain"]["speech"]
    assert "The model is not available right now" in speech
    assert "http" not in speech  # said in words: the connection's details go to the log
    assert "Error" not in speech
    await until(lambda: entry.runtime_data.engine.available and child.process.pid != pid)


async def test_a_crash_is_survived_and_the_next_answer_is_warm(
    hass: HomeAssistant, init_integration: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    engine = init_integration.runtime_data.engine
    await converse(hass, "hello there")
    cold = engine.stats.last
    assert cold is not None
    await crash(hass, init_integration)
    assert caplog.text.count("The model's process exited") == 1  # logged once
    assert hass.states.get(AGENT).state != STATE_UNAVAILABLE
    again = await converse(hass, "good evening")
    assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"
    warm = engine.stats.last
    assert warm is not None
    assert warm.cache_hit  # the new process read the Assist prompt from its prompt-cache file
    assert warm.perf.prefill_tokens < 20
    assert warm.cached_tokens > cold.prompt_tokens - 20
    assert not ir.async_get(hass).async_get_issue(DOMAIN, f"runtime_crashing_{init_integration.entry_id}")


async def test_entities_are_unavailable_while_the_process_is_away(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("custom_components.rkllm.supervision.RESTART_BACKOFF_S", (3600.0,))
    child = init_integration.runtime_data.child
    assert child is not None
    result = await converse(hass, "please crash now")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    await until(lambda: not child.process.running)
    await hass.async_block_till_done()
    assert hass.states.get(AGENT).state == STATE_UNAVAILABLE
    assert hass.states.get("sensor.qwen_model_state").state == STATE_UNAVAILABLE
    assert hass.states.get("ai_task.rkllm_ai_task").state == STATE_UNAVAILABLE


async def test_three_crashes_in_ten_minutes_raise_a_repair_issue(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    issue_id = f"runtime_crashing_{init_integration.entry_id}"
    for _ in range(2):
        await crash(hass, init_integration)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    await crash(hass, init_integration)
    issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["count"] == "3"
    assert "rkllm" in issue.translation_placeholders["log"]  # the runtime's own last lines
    again = await converse(hass, "hello there")
    assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"


async def test_the_crash_repair_goes_once_the_process_is_healthy_also_after_a_reload(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    issue_id = f"runtime_crashing_{init_integration.entry_id}"
    for _ in range(3):
        await crash(hass, init_integration)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None
    assert await hass.config_entries.async_reload(init_integration.entry_id)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None  # not healthy for long yet
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=HEALTHY_AFTER_S + 1))
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None


async def test_a_child_left_behind_is_stopped_before_a_new_one_starts(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    emulator_library: Path,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """Home Assistant was killed and its child survived (not on Linux, or the pid file of an old run)."""
    leftover = await hass.async_add_executor_job(
        lambda: launch(emulator_library, {model_path.stem: model_path}, [], tmp_path / "leftover.log")
    )
    try:
        pid_file = child_pid_file(hass, config_entry.entry_id)
        await hass.async_add_executor_job(
            lambda: (pid_file.parent.mkdir(parents=True), pid_file.write_text(f"{leftover.process.pid}\n"))
        )
        assert await hass.config_entries.async_setup(config_entry.entry_id)
        assert await hass.async_add_executor_job(leftover.process.wait, 10) == 0  # SIGTERM: a clean exit
        child = config_entry.runtime_data.child
        assert child is not None
        assert await hass.async_add_executor_job(pid_file.read_text) == f"{child.process.pid}\n"
        assert await hass.config_entries.async_unload(config_entry.entry_id)
        assert not await hass.async_add_executor_job(pid_file.exists)
    finally:
        leftover.close()


async def test_unload_ends_the_process(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    child = init_integration.runtime_data.child
    assert child is not None
    assert child.process.running
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    assert child.process.returncode == 0  # SIGTERM: it saved its prompt cache and exited


async def test_home_assistant_stopping_ends_the_process(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    child = init_integration.runtime_data.child
    assert child is not None
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    assert child.process.returncode == 0


async def test_a_process_that_does_not_stop_is_killed(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rkllm_runtime.server.child.STOP_TIMEOUT_S", 0.5)
    child = init_integration.runtime_data.child
    assert child is not None
    assert child.process.pid is not None
    os.kill(child.process.pid, signal.SIGSTOP)  # it cannot answer SIGTERM
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    assert child.process.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "entry_data",
    [{CONF_PLATFORM: "all_cores", CONF_N_KEEP: 64, CONF_EMBED_FLASH: True, CONF_BASE_DOMAIN_ID: 2}],
    indirect=True,
)
async def test_the_advanced_settings_reach_the_childs_runtime(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    engine = init_integration.runtime_data.engine
    assert isinstance(engine, RemoteEngine)
    params = engine.status.params
    assert params.max_context_len == 4096
    assert params.enabled_cpus_mask == 0xFF
    assert params.n_keep == 64
    assert params.embed_flash is True
    assert params.base_domain_id == 2
    result = await converse(hass, "hello there")
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"
