"""The accuracy benchmark's home: floors, areas and 30 devices exposed to Assist, reset before each request.

Every device is a template entity (a universal media player for the speaker) whose state lives in
input_boolean and input_number helpers, so Home Assistant's intents really change it, and a reset
only sets the helpers back. The shopping list is Home Assistant's own; timers run on a satellite
device that handles them, so Assist offers the timer intents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.components.intent.timers import (
    TIMER_DATA,
    TimerEventType,
    TimerInfo,
    async_register_timer_handler,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from homeassistant.setup import async_setup_component
from homeassistant.util import slugify
from pytest_homeassistant_custom_component.common import MockConfigEntry

FLOORS = {"Ground floor": ({"downstairs"}, 0), "First floor": ({"upstairs"}, 1)}
AREAS = {
    "Kitchen": "Ground floor",
    "Living room": "Ground floor",
    "Dining room": "Ground floor",
    "Hallway": "Ground floor",
    "Garage": "Ground floor",
    "Bedroom": "First floor",
    "Kids room": "First floor",
    "Office": "First floor",
    "Bathroom": "First floor",
    "Garden": None,
}


@dataclass(frozen=True)
class Device:
    """A device as Assist sees it: on (open, locked, heating, playing) or not, and its level.

    The level is the brightness or fan speed in %, the cover's position, the target temperature,
    or the speaker's volume in %.
    """

    domain: str
    name: str
    area: str
    on: bool = False
    level: float = 100

    @property
    def entity_id(self) -> str:
        return f"{self.domain}.{slugify(self.name)}"

    @property
    def switch(self) -> str:
        return f"input_boolean.{self.domain}_{slugify(self.name)}"

    @property
    def number(self) -> str:
        return f"input_number.{self.domain}_{slugify(self.name)}"


DEVICES = (
    Device("light", "Kitchen ceiling light", "Kitchen"),
    Device("light", "Kitchen counter lights", "Kitchen", on=True, level=80),
    Device("light", "Living room lamp", "Living room", on=True, level=60),
    Device("light", "Living room ceiling light", "Living room"),
    Device("light", "Dining table light", "Dining room"),
    Device("light", "Hallway light", "Hallway", on=True),
    Device("light", "Garage light", "Garage"),
    Device("light", "Bedroom light", "Bedroom"),
    Device("light", "Bedside lamp", "Bedroom", on=True, level=30),
    Device("light", "Kids room light", "Kids room"),
    Device("light", "Desk lamp", "Office"),
    Device("light", "Bathroom light", "Bathroom", on=True),
    Device("light", "Porch light", "Garden"),
    Device("switch", "Coffee machine", "Kitchen"),
    Device("switch", "Christmas tree", "Living room"),
    Device("switch", "Sprinkler", "Garden"),
    Device("fan", "Bedroom ceiling fan", "Bedroom", level=50),
    Device("fan", "Office fan", "Office", on=True, level=40),
    Device("cover", "Living room blinds", "Living room", level=100),
    Device("cover", "Bedroom curtains", "Bedroom", level=0),
    Device("cover", "Garage door", "Garage", level=0),
    Device("climate", "Thermostat", "Hallway", on=True, level=20),
    Device("lock", "Front door", "Hallway", on=True),
    Device("lock", "Back door", "Kitchen"),
    Device("media_player", "Living room speaker", "Living room", on=True, level=30),
)
SPEAKER = next(device for device in DEVICES if device.domain == "media_player")
TRACK = "input_number.speaker_track"
# name, area, state, unit, device class
SENSORS = (
    ("Outside temperature", "Garden", "12", "°C", "temperature"),
    ("Living room temperature", "Living room", "21.5", "°C", "temperature"),
    ("Bedroom humidity", "Bedroom", "48", "%", "humidity"),
)
WINDOW = ("Kitchen window", "Kitchen")
SHOPPING_LIST = "todo.shopping_list"
SATELLITE = "Kitchen satellite"


def _act(action: str, entity_id: str, **data: Any) -> dict[str, Any]:
    return {"action": action, "target": {"entity_id": entity_id}, **({"data": data} if data else {})}


def _template(device: Device) -> tuple[str, dict[str, Any]]:
    """The template (or universal) platform's configuration of a device: (domain, config)."""
    on, off = _act("input_boolean.turn_on", device.switch), _act("input_boolean.turn_off", device.switch)
    is_on = f"{{{{ is_state('{device.switch}', 'on') }}}}"
    level = f"{{{{ states('{device.number}') | float(0) }}}}"

    def set_level(value: str) -> dict[str, Any]:
        return _act("input_number.set_value", device.number, value=value)

    common = {"name": device.name, "unique_id": slugify(device.name)}
    match device.domain:
        case "light":
            return "light", common | {
                "state": is_on,
                "level": f"{{{{ (states('{device.number}') | float(0) * 2.55) | round }}}}",
                "turn_on": [on],
                "turn_off": [off],
                "set_level": [set_level("{{ (brightness / 2.55) | round }}"), on],
            }
        case "switch":
            return "switch", common | {"state": is_on, "turn_on": [on], "turn_off": [off]}
        case "fan":
            return "fan", common | {
                "state": is_on,
                "percentage": level,
                "turn_on": [on],
                "turn_off": [off],
                "set_percentage": [set_level("{{ percentage }}"), on],
            }
        case "cover":
            return "cover", common | {
                "position": level,
                "open_cover": [set_level("100")],
                "close_cover": [set_level("0")],
                "set_cover_position": [set_level("{{ position }}")],
            }
        case "lock":
            return "lock", common | {
                "state": f"{{{{ 'locked' if is_state('{device.switch}', 'on') else 'unlocked' }}}}",
                "lock": [on],
                "unlock": [off],
            }
        case "climate":
            return "climate", common | {
                "hvac_modes": "{{ ['off', 'heat'] }}",
                "hvac_mode": f"{{{{ 'heat' if is_state('{device.switch}', 'on') else 'off' }}}}",
                "set_hvac_mode": [
                    {
                        "action": "input_boolean.turn_{{ 'off' if hvac_mode == 'off' else 'on' }}",
                        "target": {"entity_id": device.switch},
                    }
                ],
                "current_temperature": "{{ 19.5 }}",
                "target_temperature": level,
                "set_temperature": [set_level("{{ temperature }}")],
                "min_temperature": 7,
                "max_temperature": 30,
                "target_temperature_step": 0.5,
                "temperature_unit": "°C",
            }
    return "media_player", {
        "platform": "universal",
        **common,
        "state_template": f"{{{{ 'playing' if is_state('{device.switch}', 'on') else 'paused' }}}}",
        "commands": {
            "media_play": on,
            "media_pause": off,
            "media_stop": off,
            "media_play_pause": _act("input_boolean.toggle", device.switch),
            "media_next_track": _act("input_number.increment", TRACK),
            "media_previous_track": _act("input_number.decrement", TRACK),
            "volume_set": set_level("{{ volume_level }}"),
        },
        "attributes": {"volume_level": device.number},
    }


def _helpers() -> tuple[dict[str, Any], dict[str, Any]]:
    """The input_boolean and input_number configuration behind the devices."""
    booleans = {device.switch.split(".")[1]: {} for device in DEVICES if device.domain != "cover"}
    numbers: dict[str, Any] = {
        device.number.split(".")[1]: {
            "min": 0,
            "max": 100,
            "step": 0.5,
            "mode": "box",
            "initial": device.level,
        }
        for device in DEVICES
        if device.domain not in ("switch", "lock")
    }
    volume = SPEAKER.level / 100
    numbers[SPEAKER.number.split(".")[1]] = {
        "min": 0,
        "max": 1,
        "step": 0.01,
        "mode": "box",
        "initial": volume,
    }
    numbers[TRACK.split(".")[1]] = {"min": 0, "max": 1000, "step": 1, "mode": "box", "initial": 1}
    return booleans, numbers


class Timers:
    """The timers started on the satellite, as its timer handler hears of them."""

    def __init__(self) -> None:
        self.started: list[TimerInfo] = []

    def handle(self, event_type: TimerEventType, timer: TimerInfo) -> None:
        if event_type is TimerEventType.STARTED:
            self.started.append(timer)


async def build_home(hass: HomeAssistant, timers: Timers) -> str:
    """Set up the home; return the satellite's device id (the device the requests come from)."""
    assert await async_setup_component(hass, "homeassistant", {})
    assert await async_setup_component(hass, "http", {})  # the shopping list's dependency; not started
    booleans, numbers = _helpers()
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": booleans})
    assert await async_setup_component(hass, "input_number", {"input_number": numbers})
    templates: dict[str, list[dict[str, Any]]] = {}
    speakers = []
    for device in DEVICES:
        domain, config = _template(device)
        if domain == "media_player":
            speakers.append(config)
        else:
            templates.setdefault(domain, []).append(config)
    templates["sensor"] = [
        {
            "name": name,
            "unique_id": slugify(name),
            "state": state,
            "unit_of_measurement": unit,
            "device_class": device_class,
            "state_class": "measurement",
        }
        for name, _area, state, unit, device_class in SENSORS
    ]
    templates["binary_sensor"] = [
        {"name": WINDOW[0], "unique_id": slugify(WINDOW[0]), "state": "{{ true }}", "device_class": "window"}
    ]
    assert await async_setup_component(hass, "template", {"template": [templates]})
    assert await async_setup_component(hass, "media_player", {"media_player": speakers})
    shopping = MockConfigEntry(domain="shopping_list")
    shopping.add_to_hass(hass)
    assert await hass.config_entries.async_setup(shopping.entry_id)
    assert await async_setup_component(hass, "intent", {})
    assert await async_setup_component(hass, "conversation", {})
    await hass.async_block_till_done()

    floors = fr.async_get(hass)
    areas = ar.async_get(hass)
    floor_ids = {
        name: floors.async_create(name, aliases=aliases, level=level).floor_id
        for name, (aliases, level) in FLOORS.items()
    }
    area_ids = {
        name: areas.async_create(name, floor_id=floor_ids[floor] if floor else None).id
        for name, floor in AREAS.items()
    }
    entities = er.async_get(hass)
    placed = [(d.entity_id, d.area) for d in DEVICES]
    placed += [(f"sensor.{slugify(name)}", area) for name, area, *_ in SENSORS]
    placed.append((f"binary_sensor.{slugify(WINDOW[0])}", WINDOW[1]))
    for entity_id, area in placed:
        entities.async_update_entity(entity_id, area_id=area_ids[area])
    exposed = {entity_id for entity_id, _ in placed} | {SHOPPING_LIST}
    for state in hass.states.async_all():
        async_expose_entity(hass, "conversation", state.entity_id, state.entity_id in exposed)

    satellite_entry = MockConfigEntry(domain="assist_satellite_bench")
    satellite_entry.add_to_hass(hass)
    satellite = dr.async_get(hass).async_get_or_create(
        config_entry_id=satellite_entry.entry_id, identifiers={("bench", "satellite")}, name=SATELLITE
    )
    dr.async_get(hass).async_update_device(satellite.id, area_id=area_ids["Kitchen"])
    async_register_timer_handler(hass, satellite.id, timers.handle)
    await reset(hass, timers)
    return satellite.id


async def reset(hass: HomeAssistant, timers: Timers) -> None:
    """Every device back to its initial state, the shopping list emptied, no timer running."""
    for device in DEVICES:
        if device.domain != "cover":
            action = "turn_on" if device.on else "turn_off"
            await hass.services.async_call(
                "input_boolean", action, {"entity_id": device.switch}, blocking=True
            )
        if device.domain not in ("switch", "lock"):
            value = device.level / 100 if device is SPEAKER else device.level
            await hass.services.async_call(
                "input_number", "set_value", {"entity_id": device.number, "value": value}, blocking=True
            )
    await hass.services.async_call(
        "input_number", "set_value", {"entity_id": TRACK, "value": 1}, blocking=True
    )
    shopping = hass.config_entries.async_entries("shopping_list")[0].runtime_data
    await shopping.async_remove_items({item["id"] for item in shopping.items})
    manager = hass.data[TIMER_DATA]
    for timer_id in list(manager.timers):
        manager.cancel_timer(timer_id)
    timers.started.clear()
    await hass.async_block_till_done()
