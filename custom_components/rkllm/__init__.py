"""Run large language models on the Rockchip NPU through librkllmrt.so."""

from __future__ import annotations

from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL, EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryError, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.typing import ConfigType

from rkllm_runtime import LibraryError, RKLLMError
from rkllm_runtime.chat import PromptCacheStore
from rkllm_runtime.chat.contract import ModelEngine
from rkllm_runtime.errors import ModelCrashedError, ModelIncompatibleError
from rkllm_runtime.remote.client import AuthenticationError, RemoteEngine, UnknownModelError

from .const import (
    CONF_LIBRARY_PATH,
    CONF_MODE,
    DOMAIN,
    MODE_CHILD,
    MODE_IN_PROCESS,
    MODE_SERVER,
    PROMPT_CACHE_MAX_BYTES,
)
from .issues import (
    CONTEXT_TOO_SMALL,
    RUNTIME_CRASHING,
    RUNTIME_RELEASE_WARNING,
    RUNTIME_UNUSABLE,
    async_create_entry_issue,
    async_delete_entry_issue,
    async_watch_context_room,
)
from .loader import (
    check_dir,
    child_pid_file,
    error_key,
    kv_mode,
    load_runtime,
    prompt_cache_dir,
    server_process,
)
from .local_engine import LocalEngine
from .runtime_data import RKLLMConfigEntry, RKLLMData
from .runtime_log import async_route_runtime_log
from .services import async_setup_services
from .supervision import ChildSupervisor, ServerWatch

PLATFORMS = (Platform.AI_TASK, Platform.CONVERSATION, Platform.SENSOR)
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's services."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> bool:
    """Load the model in this process, start its own process, or connect to its server."""
    child = None
    engine: ModelEngine
    if entry.data[CONF_MODE] == MODE_SERVER:
        engine = await _async_connect(hass, entry)
    elif entry.data[CONF_MODE] == MODE_CHILD:
        child = await _async_start_child(hass, entry)
        engine = child.engine
    else:
        engine = await _async_load(hass, entry)
    entry.runtime_data = RKLLMData(engine, child)
    async_watch_context_room(hass, entry, engine)

    async def _close_on_stop(_: Event) -> None:
        await engine.aclose()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _close_on_stop))
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def _async_load(hass: HomeAssistant, entry: RKLLMConfigEntry) -> LocalEngine:
    """Load the runtime into this process."""
    async_route_runtime_log(hass)
    try:
        runtime = await hass.async_add_executor_job(load_runtime, entry.data, check_dir(hass))
    except LibraryError as err:
        key = error_key(err)
        async_create_entry_issue(
            hass,
            entry,
            RUNTIME_UNUSABLE,
            severity=ir.IssueSeverity.ERROR,
            translation_key=key,
            translation_placeholders={"path": entry.data[CONF_LIBRARY_PATH], "error": str(err)},
        )
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key=key, translation_placeholders={"error": str(err)}
        ) from err
    except (ModelIncompatibleError, ModelCrashedError) as err:  # the file itself cannot run here
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key=error_key(err),
            translation_placeholders={"error": str(err)},
        ) from err
    except RKLLMError as err:
        # The NPU may still be held by another process, or the file may be replaced: retry later.
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key=error_key(err),
            translation_placeholders={"error": str(err)},
        ) from err
    async_delete_entry_issue(hass, entry, RUNTIME_UNUSABLE)
    _async_warn_about_release(hass, entry, runtime.library.release, runtime.library.warning)
    return LocalEngine(
        runtime,
        kv_mode=kv_mode(entry.data),
        prompt_caches=PromptCacheStore(prompt_cache_dir(hass), PROMPT_CACHE_MAX_BYTES),
    )


async def _async_start_child(hass: HomeAssistant, entry: RKLLMConfigEntry) -> ChildSupervisor:
    """Start the model's own rkllm-server process and connect to it."""
    process = server_process(entry.data, prompt_cache_dir(hass), child_pid_file(hass, entry.entry_id))
    engine = RemoteEngine(async_get_clientsession(hass), "", process.model, None)
    child = ChildSupervisor(hass, entry, engine, process)
    try:
        await child.async_start()
    except RKLLMError as err:
        await child.async_stop()
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="child_failed",
            translation_placeholders={"error": str(err)},
        ) from err
    child.async_watch()
    return child


async def _async_connect(hass: HomeAssistant, entry: RKLLMConfigEntry) -> RemoteEngine:
    """Connect to the model's rkllm-server."""
    url = entry.data[CONF_URL]
    engine = RemoteEngine(
        async_get_clientsession(hass), url, entry.data[CONF_MODEL], entry.data.get(CONF_API_KEY) or None
    )
    try:
        await engine.refresh()
    except AuthenticationError as err:
        raise ConfigEntryAuthFailed(translation_domain=DOMAIN, translation_key="invalid_auth") from err
    except UnknownModelError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="unknown_model",
            translation_placeholders={"error": str(err)},
        ) from err
    except RKLLMError as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="server_unavailable",
            translation_placeholders={"url": url, "error": str(err)},
        ) from err
    ServerWatch(hass, entry, engine).async_start()
    return engine


def _async_warn_about_release(
    hass: HomeAssistant, entry: RKLLMConfigEntry, release: str, warning: str | None
) -> None:
    """Raise (or clear) a warning about a known fault of the loaded runtime release."""
    if warning is None:
        async_delete_entry_issue(hass, entry, RUNTIME_RELEASE_WARNING)
        return
    async_create_entry_issue(
        hass,
        entry,
        RUNTIME_RELEASE_WARNING,
        severity=ir.IssueSeverity.WARNING,
        translation_key="runtime_release_warning",
        translation_placeholders={"release": release, "warning": warning},
    )


async def async_unload_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> bool:
    """Abort any generation, then free the NPU (or stop the model's process).

    Never returns False (Home Assistant 2026.11 turns that into an untranslated error).
    """
    if not await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        raise ConfigEntryError(translation_domain=DOMAIN, translation_key="unload_failed")
    await entry.runtime_data.engine.aclose()
    return True


async def async_remove_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> None:
    """Clear the entry's repair issues (Home Assistant 2026.11 does it for those that carry the entry)."""
    for issue in (RUNTIME_UNUSABLE, RUNTIME_RELEASE_WARNING, RUNTIME_CRASHING, CONTEXT_TOO_SMALL):
        async_delete_entry_issue(hass, entry, issue)


async def async_migrate_entry(hass: HomeAssistant, entry: RKLLMConfigEntry) -> bool:
    """Entries from before the choice of where the model runs ran it in this process.

    Never returns False: Home Assistant itself refuses entries of a later major version.
    """
    if entry.minor_version < 2:
        hass.config_entries.async_update_entry(
            entry, data={CONF_MODE: MODE_IN_PROCESS, **entry.data}, minor_version=2
        )
    return True


async def _async_update_listener(hass: HomeAssistant, entry: RKLLMConfigEntry) -> None:
    """Reload when the entry or one of its subentries changed."""
    await hass.config_entries.async_reload(entry.entry_id)
