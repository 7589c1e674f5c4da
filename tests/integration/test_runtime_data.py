"""What a loaded entry keeps: the engine its entities talk to and, in that mode, the model's own process."""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import MODE_CHILD, MODE_IN_PROCESS
from custom_components.rkllm.local_engine import LocalEngine
from rkllm_runtime.remote.client import RemoteEngine
from tests.integration.conftest import IN_EVERY_MODE


@IN_EVERY_MODE
async def test_each_mode_keeps_its_engine_and_only_the_child_mode_a_process(
    hass: HomeAssistant, mode: str, init_integration: MockConfigEntry
) -> None:
    data = init_integration.runtime_data
    assert isinstance(data.engine, LocalEngine if mode == MODE_IN_PROCESS else RemoteEngine)
    if mode != MODE_CHILD:
        assert data.child is None
        return
    assert data.child is not None
    assert data.child.engine is data.engine
    assert data.child.process.running
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    assert not data.child.process.running  # stopped with the entry
