"""Config flow: where the model runs; its library and file (loaded once to check them) or its server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import probatio as vol
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlowResult,
    ConfigSubentryFlow,
)
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import callback
from homeassistant.data_entry_flow import AbortFlow
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from rkllm_runtime import RKLLMError
from rkllm_runtime.remote.client import AuthenticationError, RemoteEngine, server_models

from .const import (
    CHILD_START_TIMEOUT_S,
    CONF_LIBRARY_PATH,
    CONF_MODE,
    CONF_MODEL_PATH,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DOMAIN,
    LOGGER,
    MODE_CHILD,
    MODE_IN_PROCESS,
    MODE_SERVER,
    MODES,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from .download_flow import ModelDownloadFlow
from .loader import (
    check_dir,
    check_files,
    check_in_child,
    default_library,
    error_key,
    prompt_cache_dir,
    server_process,
)
from .runtime_log import async_route_runtime_log
from .schemas import (
    default_ai_task_options,
    default_conversation_options,
    model_data,
    model_schema,
    reauth_schema,
    server_model_schema,
    server_schema,
)
from .subentry_flow import RKLLMSubentryFlow


class RKLLMConfigFlow(ModelDownloadFlow, domain=DOMAIN):
    """Add a model on the NPU."""

    VERSION = 1
    MINOR_VERSION = 2

    def __init__(self) -> None:
        """Start with an empty form."""
        self._data: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._error_detail = ""
        self._form_step = ""  # where a failed check returns
        self._load_task: asyncio.Task[None] | None = None
        self._models: list[str] = []

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask where the model runs."""
        return self.async_show_menu(step_id="user", menu_options=list(MODES))

    async def async_step_in_process(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """In Home Assistant's own process: use a model file, or download one."""
        self._data[CONF_MODE] = MODE_IN_PROCESS
        return self.async_show_menu(step_id=MODE_IN_PROCESS, menu_options=["in_process_file", "download"])

    async def async_step_child(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """In a process of its own on this machine: use a model file, or download one."""
        self._data[CONF_MODE] = MODE_CHILD
        return self.async_show_menu(step_id=MODE_CHILD, menu_options=["child_file", "download"])

    async def async_step_in_process_file(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the library and the model file."""
        return await self._async_step_form("in_process_file", user_input)

    async def async_step_child_file(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the library and the model file."""
        return await self._async_step_form("child_file", user_input)

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Change the library, the model or its parameters; or the server's address and key."""
        if not self._data and user_input is None:
            self._data = dict(self._get_reconfigure_entry().data)
        if self._data[CONF_MODE] == MODE_SERVER:
            return await self.async_step_server(user_input)
        return await self._async_step_form("reconfigure", user_input)

    async def _async_step_form(self, step_id: str, user_input: dict[str, Any] | None) -> ConfigFlowResult:
        self._form_step = step_id
        try:
            submitted = model_schema()(user_input) if user_input else None
        except vol.Invalid:
            submitted = None  # not this form's fields (a client re-posting to a finished step): show the form
        if submitted is not None:
            self._data = {CONF_MODE: self._data[CONF_MODE], **model_data(submitted)}
            await self.async_set_unique_id(str(Path(self._data[CONF_MODEL_PATH])))
            if self.source == SOURCE_RECONFIGURE:
                self._abort_if_unique_id_configured_elsewhere()
            else:
                self._abort_if_unique_id_configured()
            # The quick checks answer on the form itself: a failure that came before the frontend
            # followed the progress screen would leave that screen hanging.
            if await self._async_failed(check_files):
                return self._async_show_model_form(step_id)
            return await self.async_step_load()
        return self._async_show_model_form(step_id, await self._async_suggested())

    async def _async_suggested(self) -> dict[str, Any]:
        if CONF_MODEL_PATH in self._data:
            return self._data
        return {CONF_LIBRARY_PATH: await self.hass.async_add_executor_job(default_library)}

    def _async_show_model_form(
        self, step_id: str, suggested: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(model_schema(), suggested or self._data),
            errors=self._errors,
            description_placeholders={"error": self._error_detail},
        )

    def _abort_if_unique_id_configured_elsewhere(self) -> None:
        own = self._get_reconfigure_entry().entry_id
        for entry in self._async_current_entries(include_ignore=False):
            if entry.unique_id == self.unique_id and entry.entry_id != own:
                raise AbortFlow("already_configured")

    async def async_step_load(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Load the model in the executor while the user waits."""
        if self._load_task is None:
            self._load_task = self.hass.async_create_task(self._async_try_load())
        if not self._load_task.done():
            return self.async_show_progress(
                step_id="load", progress_action="load_model", progress_task=self._load_task
            )
        self._load_task = None
        if self._errors:
            return self.async_show_progress_done(next_step_id=self._form_step)
        return self.async_show_progress_done(next_step_id="finish")

    async def _async_try_load(self) -> None:
        if self._data[CONF_MODE] == MODE_CHILD:
            await self._async_try_child()
        else:
            verdicts = check_dir(self.hass)
            await self._async_failed(lambda data: check_in_child(data, verdicts))

    async def _async_failed(self, check: Callable[[dict[str, Any]], None]) -> bool:
        """Run a blocking check of the entry data; record its error for the form."""
        self._errors, self._error_detail = {}, ""
        async_route_runtime_log(self.hass)  # the runtime says why it refuses a model on stderr
        try:
            await self.hass.async_add_executor_job(check, self._data)
        except RKLLMError as err:
            LOGGER.warning("Cannot load %s: %s", self._data[CONF_MODEL_PATH], err)
            self._errors = {"base": error_key(err)}
            self._error_detail = str(err)
        return bool(self._errors)

    async def _async_try_child(self) -> None:
        """Start the model's process once, and ask it whether the model loaded."""
        self._errors, self._error_detail = {}, ""
        process = server_process(self._data, prompt_cache_dir(self.hass))
        try:
            await process.start(CHILD_START_TIMEOUT_S)
            engine = RemoteEngine(
                async_get_clientsession(self.hass), process.url, process.model, process.api_key
            )
            await engine.refresh()
        except RKLLMError as err:
            LOGGER.warning("The process for %s could not load it: %s", self._data[CONF_MODEL_PATH], err)
            self._errors, self._error_detail = {"base": "child_failed"}, str(err)
        finally:
            await process.stop()

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """An rkllm-server announced itself: offer its models."""
        properties = discovery_info.properties
        scheme = "https" if properties.get("tls") == "1" else "http"
        url = f"{scheme}://{discovery_info.host}:{discovery_info.port}"
        name = discovery_info.name.removesuffix(f".{discovery_info.type}")
        await self.async_set_unique_id(name)
        self._abort_if_unique_id_configured()
        self._async_abort_entries_match({CONF_URL: url})
        self._data = {CONF_MODE: MODE_SERVER, CONF_URL: url}
        self.context["title_placeholders"] = {"name": name, "models": properties.get("models", "")}
        return await self.async_step_server()

    async def async_step_server(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """On another machine: the address of its rkllm-server and its API key."""
        self._data[CONF_MODE] = MODE_SERVER
        errors: dict[str, str] = {}
        if user_input is not None:
            url, key = user_input[CONF_URL].strip().rstrip("/"), user_input.get(CONF_API_KEY, "").strip()
            errors = await self._async_read_models(url, key)
            if not errors:
                self._data.update({CONF_URL: url, CONF_API_KEY: key})
                return await self.async_step_server_model()
        suggested: dict[str, Any] = {
            key: self._data[key] for key in (CONF_URL, CONF_API_KEY) if key in self._data
        }
        return self.async_show_form(
            step_id="reconfigure" if self.source == SOURCE_RECONFIGURE else "server",
            data_schema=self.add_suggested_values_to_schema(server_schema(), user_input or suggested),
            errors=errors,
            description_placeholders={"error": self._error_detail},
        )

    async def _async_read_models(self, url: str, key: str) -> dict[str, str]:
        """Read the server's models; the form's errors."""
        self._error_detail = ""
        try:
            self._models = await server_models(async_get_clientsession(self.hass), url, key or None)
        except AuthenticationError:
            return {"base": "invalid_auth"}
        except RKLLMError as err:
            self._error_detail = str(err)
            return {"base": "cannot_connect"}
        return {} if self._models else {"base": "no_models"}

    async def async_step_server_model(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose one of the server's models."""
        if user_input is None and len(self._models) > 1:
            return self.async_show_form(
                step_id="server_model",
                data_schema=server_model_schema(self._models, self._data.get(CONF_MODEL)),
            )
        self._data[CONF_MODEL] = user_input[CONF_MODEL] if user_input else self._models[0]
        await self.async_set_unique_id(f"{self._data[CONF_URL]}/{self._data[CONF_MODEL]}")
        if self.source == SOURCE_RECONFIGURE:
            self._abort_if_unique_id_configured_elsewhere()
        else:
            self._abort_if_unique_id_configured()
        return await self.async_step_finish()

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The server refused the key."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the server's key again."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            key = user_input.get(CONF_API_KEY, "").strip()
            errors = await self._async_read_models(entry.data[CONF_URL], key)
            if not errors:
                return self.async_update_reload_and_abort(entry, data_updates={CONF_API_KEY: key})
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=reauth_schema(),
            errors=errors,
            description_placeholders={"url": entry.data[CONF_URL], "error": self._error_detail},
        )

    async def async_step_finish(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Create or update the entry."""
        if self._data[CONF_MODE] == MODE_SERVER:
            title = f"{self._data[CONF_MODEL]} ({self._data[CONF_URL].split('://')[-1]})"
        else:
            title = Path(self._data[CONF_MODEL_PATH]).stem
        if self.source == SOURCE_RECONFIGURE:
            return self.async_update_reload_and_abort(
                self._get_reconfigure_entry(), unique_id=self.unique_id, title=title, data=self._data
            )
        return self.async_create_entry(
            title=title,
            data=self._data,
            subentries=[
                {
                    "subentry_type": SUBENTRY_CONVERSATION,
                    "data": default_conversation_options(),
                    "title": DEFAULT_CONVERSATION_NAME,
                    "unique_id": None,
                },
                {
                    "subentry_type": SUBENTRY_AI_TASK,
                    "data": default_ai_task_options(),
                    "title": DEFAULT_AI_TASK_NAME,
                    "unique_id": None,
                },
            ],
        )

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Conversation agents and AI tasks run on a model entry."""
        return {SUBENTRY_CONVERSATION: RKLLMSubentryFlow, SUBENTRY_AI_TASK: RKLLMSubentryFlow}
