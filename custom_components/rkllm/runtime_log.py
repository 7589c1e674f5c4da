"""The runtime's own log lines (it writes them to stderr) in Home Assistant's log."""

from __future__ import annotations

from homeassistant.const import EVENT_HOMEASSISTANT_CLOSE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.util.hass_dict import HassKey

from rkllm_runtime.native_log import StderrRouter

from .const import DOMAIN, LOGGER

ROUTER: HassKey[StderrRouter] = HassKey(f"{DOMAIN}_stderr_router")
RUNTIME_LOGGER = LOGGER.getChild("runtime")


@callback
def async_route_runtime_log(hass: HomeAssistant) -> None:
    """Forward the runtime's lines to the ``custom_components.rkllm.runtime`` logger until shutdown."""
    if ROUTER in hass.data:
        return

    def sink(level: int, text: str) -> None:
        # Logged from the event loop: the reading thread must never wait on a log handler.
        hass.loop.call_soon_threadsafe(RUNTIME_LOGGER.log, level, text)

    router = hass.data[ROUTER] = StderrRouter(sink)
    router.start()

    async def _stop(_: Event) -> None:
        await hass.async_add_executor_job(router.stop)
        hass.data.pop(ROUTER, None)

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_CLOSE, _stop)
