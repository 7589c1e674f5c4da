"""The engine in Home Assistant's own process describes the library and model it runs."""

from __future__ import annotations

from pathlib import Path

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.local_engine import LocalEngine
from rkllm_runtime.chat import EngineState
from rkllm_runtime.emulator.build import DEFAULT_RELEASE


async def test_the_engine_names_its_model_and_library_until_it_is_closed(
    hass: HomeAssistant, init_integration: MockConfigEntry, model_path: Path
) -> None:
    engine = init_integration.runtime_data.engine
    assert isinstance(engine, LocalEngine)
    assert engine.status.model_file == model_path.name
    assert engine.status.release == DEFAULT_RELEASE[engine.runtime.library.abi_version]  # the emulator's
    described = engine.diagnostics()
    assert described["engine"] == {"state": EngineState.READY.value, "kv_mode": "conservative", "waiting": 0}
    assert described["runtime"]["release"] == engine.status.release
    assert described["runtime"]["params"]["max_context_len"] == 4096
    assert engine.available
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    assert not engine.available
