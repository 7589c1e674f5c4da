"""Run large language models on the Rockchip NPU through librkllmrt.so."""

from __future__ import annotations

from pathlib import Path

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ConfigEntryError, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.typing import ConfigType

from rkllm_runtime import LibraryError, ModelRejectedError, RKLLMError
from rkllm_runtime.chat import ChatEngine, PromptCacheStore

from .const import CONF_LIBRARY_PATH, DOMAIN, MAX_WAITING_REQUESTS, PROMPT_CACHE_MAX_BYTES
from .loader import error_key, kv_mode, load_runtime
from .models import RKLLMConfigEntry, RKLLMData
from .runtime_log import async_route_runtime_log
from .services import async_setup_services

PLATFORMS = (Platform.AI_TASK, Platform.CONVERSATION, Platform.SENSOR)
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's services."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> bool:
    """Load the model onto the NPU."""
    issue_id = f"runtime_unusable_{entry.entry_id}"
    async_route_runtime_log(hass)
    try:
        runtime = await hass.async_add_executor_job(load_runtime, entry.data)
    except LibraryError as err:
        key = error_key(err)
        ir.async_create_issue(
            hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=key,
            translation_placeholders={"path": entry.data[CONF_LIBRARY_PATH], "error": str(err)},
        )
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key=key, translation_placeholders={"error": str(err)}
        ) from err
    except ModelRejectedError as err:
        # The NPU may still be held by another process, or the file may be replaced: retry later.
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="model_rejected",
            translation_placeholders={"error": str(err)},
        ) from err
    except RKLLMError as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key=error_key(err),
            translation_placeholders={"error": str(err)},
        ) from err
    ir.async_delete_issue(hass, DOMAIN, issue_id)
    _async_warn_about_release(hass, entry, runtime.library.release, runtime.library.warning)

    caches = PromptCacheStore(
        Path(hass.config.path(".storage", DOMAIN, "prompt_cache")), PROMPT_CACHE_MAX_BYTES
    )
    engine = ChatEngine(
        runtime, max_waiting=MAX_WAITING_REQUESTS, kv_mode=kv_mode(entry.data), prompt_caches=caches
    )
    entry.runtime_data = RKLLMData(engine)

    async def _close_on_stop(_: Event) -> None:
        await engine.aclose()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _close_on_stop))
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


def _async_warn_about_release(
    hass: HomeAssistant, entry: RKLLMConfigEntry, release: str, warning: str | None
) -> None:
    """Raise (or clear) a warning about a known fault of the loaded runtime release."""
    issue_id = f"runtime_release_warning_{entry.entry_id}"
    if warning is None:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="runtime_release_warning",
        translation_placeholders={"release": release, "warning": warning},
    )


async def async_unload_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> bool:
    """Abort any generation, then free the NPU."""
    if not await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        return False
    await entry.runtime_data.engine.aclose()
    return True


async def _async_update_listener(hass: HomeAssistant, entry: RKLLMConfigEntry) -> None:
    """Reload when the entry or one of its subentries changed."""
    await hass.config_entries.async_reload(entry.entry_id)
