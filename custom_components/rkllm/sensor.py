"""Sensors of a model: speed, latency, memory, KV cache, state, and the NPU itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfInformation, UnitOfTemperature, UnitOfTime
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from rkllm_runtime.chat import ChatResult, EngineState, EngineStats
from rkllm_runtime.system import NPUReading

from .const import LOGGER
from .entity import model_device_info
from .runtime_data import RKLLMConfigEntry, RKLLMData

# The model's figures are pushed by the engine; only the two NPU sensors poll, one at a time.
PARALLEL_UPDATES = 1
SCAN_INTERVAL = timedelta(seconds=10)
TOKENS_PER_SECOND = "tokens/s"
TOKENS = "tokens"
MODEL_STATES = ["prefilling", "ready", "generating", "error"]
MODEL_STATE = "model_state"


def model_state(data: RKLLMData) -> str:
    """The model state sensor's value."""
    state = data.engine.state
    if state is EngineState.READY and data.engine.stats.last_error is not None:
        return "error"
    return {EngineState.PREFILLING: "prefilling", EngineState.GENERATING: "generating"}.get(state, "ready")


@dataclass(frozen=True, kw_only=True)
class RKLLMSensorDescription(SensorEntityDescription):
    """How a sensor reads the model's statistics."""

    value: Callable[[RKLLMData], StateType]
    restore: bool = True  # a figure of the last request, shown again after a restart


def _figure(
    key: str,
    value: Callable[[RKLLMData], StateType],
    unit: str | None = None,
    *,
    state_class: SensorStateClass = SensorStateClass.MEASUREMENT,
    device_class: SensorDeviceClass | None = None,
    precision: int | None = None,
    enabled: bool = True,
    restore: bool = True,
) -> RKLLMSensorDescription:
    """A diagnostic figure of the model."""
    return RKLLMSensorDescription(
        key=key,
        translation_key=key,
        device_class=device_class,
        native_unit_of_measurement=unit,
        state_class=state_class,
        entity_category=EntityCategory.DIAGNOSTIC,
        suggested_display_precision=precision,
        entity_registry_enabled_default=enabled,
        value=value,
        restore=restore,
    )


def _last_request(read: Callable[[ChatResult], float | int]) -> Callable[[RKLLMData], StateType]:
    """A figure of the last request (none before the first)."""

    def value(data: RKLLMData) -> StateType:
        last = data.engine.stats.last
        return None if last is None else read(last)

    return value


def _count(key: str, read: Callable[[EngineStats], int]) -> RKLLMSensorDescription:
    """A count since the model loaded (not restored after a restart)."""
    return _figure(
        key,
        lambda data: read(data.engine.stats),
        state_class=SensorStateClass.TOTAL_INCREASING,
        enabled=False,
        restore=False,
    )


SENSORS: tuple[RKLLMSensorDescription, ...] = (
    _figure(
        "decode_speed",
        _last_request(lambda r: r.perf.decode_tokens_per_second),
        TOKENS_PER_SECOND,
        precision=1,
    ),
    _figure(
        "prefill_speed",
        _last_request(lambda r: r.perf.prefill_tokens_per_second),
        TOKENS_PER_SECOND,
        precision=0,
    ),
    _figure(
        "time_to_first_token",
        _last_request(lambda r: r.perf.prefill_time_ms),
        UnitOfTime.MILLISECONDS,
        device_class=SensorDeviceClass.DURATION,
        precision=0,
    ),
    _figure(
        "peak_memory",
        _last_request(lambda r: r.perf.memory_usage_mb),
        UnitOfInformation.MEGABYTES,
        device_class=SensorDeviceClass.DATA_SIZE,
        precision=0,
    ),
    _figure("prompt_tokens", _last_request(lambda r: r.prompt_tokens), TOKENS, enabled=False),
    _figure("prefilled_tokens", _last_request(lambda r: r.perf.prefill_tokens), TOKENS, enabled=False),
    # What the cache holds now: empty after a restart.
    _figure("kv_cache_tokens", lambda d: d.engine.stats.kv_tokens, TOKENS, enabled=False, restore=False),
    _count("cache_hits", lambda stats: stats.cache_hits),
    _count("cache_misses", lambda stats: stats.cache_misses),
    RKLLMSensorDescription(
        key=MODEL_STATE,
        translation_key=MODEL_STATE,
        device_class=SensorDeviceClass.ENUM,
        options=MODEL_STATES,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=model_state,
        restore=False,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: RKLLMConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the model's sensors, and the NPU's where the board exposes them."""
    async_add_entities(RKLLMModelSensor(entry, description) for description in SENSORS)
    async_add_entities(
        [
            NPUSensor(entry, "npu_load", lambda npu: npu.load, PERCENTAGE, None),
            NPUSensor(
                entry,
                "npu_temperature",
                lambda npu: npu.temperature,
                UnitOfTemperature.CELSIUS,
                SensorDeviceClass.TEMPERATURE,
            ),
        ],
        update_before_add=True,
    )


class RKLLMModelSensor(RestoreSensor):
    """A figure of the model, updated as requests finish; unavailable once the model is unloaded."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    entity_description: RKLLMSensorDescription

    def __init__(self, entry: RKLLMConfigEntry, description: RKLLMSensorDescription) -> None:
        """Initialise for one statistic of the entry's model."""
        self.entity_description = description
        self._data = entry.runtime_data
        self._title = entry.title
        self._restored: StateType | date | datetime | Decimal = None
        self._attr_unique_id = f"{entry.entry_id}_{description.key}"
        self._attr_device_info = model_device_info(entry)

    @property
    def available(self) -> bool:
        """Whether the model's engine is loaded and reachable."""
        return self._data.engine.available

    @property
    def native_value(self) -> StateType | date | datetime | Decimal:
        """The statistic now (before the first request: the one before the restart)."""
        value = self.entity_description.value(self._data)
        return self._restored if value is None else value

    async def async_added_to_hass(self) -> None:
        """Restore the last figure, then follow the engine."""
        await super().async_added_to_hass()
        if self.entity_description.restore and (last := await self.async_get_last_sensor_data()):
            self._restored = last.native_value
        self.async_on_remove(self._data.engine.add_listener(self._handle_update))

    @callback
    def _handle_update(self) -> None:
        if self.entity_description.key == MODEL_STATE and self._data.engine.closed:  # logged once per model
            LOGGER.info("The model %s was unloaded: its sensors are unavailable", self._title)
        self.async_write_ha_state()


class NPUSensor(SensorEntity):
    """NPU load or temperature of the board running the model (unavailable without the vendor driver)."""

    _attr_has_entity_name = True
    _attr_state_class = SensorStateClass.MEASUREMENT
    _attr_entity_category = EntityCategory.DIAGNOSTIC

    def __init__(
        self,
        entry: RKLLMConfigEntry,
        key: str,
        read: Callable[[NPUReading], float | None],
        unit: str,
        device_class: SensorDeviceClass | None,
    ) -> None:
        """Initialise a polled board sensor."""
        self._read = read
        self._engine = entry.runtime_data.engine
        self._attr_translation_key = key
        self._attr_unique_id = f"{entry.entry_id}_{key}"
        self._attr_native_unit_of_measurement = unit
        self._attr_device_class = device_class
        self._attr_device_info = model_device_info(entry)
        self._label = f"{key} of {entry.title}"
        self._unavailable_logged = False

    async def async_update(self) -> None:
        """Read the value (/sys, or the server's last status); log once when it goes and once when back."""
        value = self._read(await self._engine.read_npu())
        self._attr_available = value is not None and self._engine.available
        self._attr_native_value = value
        if value is None and not self._unavailable_logged:
            LOGGER.info("%s cannot be read (the board does not expose it): unavailable", self._label)
            self._unavailable_logged = True
        elif value is not None and self._unavailable_logged:
            LOGGER.info("%s can be read again", self._label)
            self._unavailable_logged = False
