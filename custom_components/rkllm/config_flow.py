"""Config flow: where the model runs; its library and file (loaded once to check them) or its server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import probatio as vol
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlowResult,
    ConfigSubentryFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_MODEL, CONF_NAME, CONF_PROMPT, CONF_URL
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import AbortFlow, section
from homeassistant.helpers import llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from rkllm_runtime import RKLLMError, find_library
from rkllm_runtime.chat import KVMode
from rkllm_runtime.remote.client import AuthenticationError, RemoteEngine, server_models
from rkllm_runtime.types import RUNTIME_SAMPLING

from .const import (
    CHILD_START_TIMEOUT_S,
    CONF_ACTION_SPEECH,
    CONF_ADVANCED,
    CONF_BASE_DOMAIN_ID,
    CONF_EMBED_FLASH,
    CONF_KV_STRATEGY,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MAX_HISTORY,
    CONF_MAX_NEW_TOKENS,
    CONF_MODE,
    CONF_MODEL_PATH,
    CONF_N_KEEP,
    CONF_PLATFORM,
    CONF_RECOMMENDED,
    CONF_REPEAT_PENALTY,
    CONF_RUNTIME_RELEASE,
    CONF_TEMPERATURE,
    CONF_THINK,
    CONF_TOP_K,
    CONF_TOP_P,
    DEFAULT_ACTION_SPEECH,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_KV_STRATEGY,
    DEFAULT_MAX_CONTEXT_LEN,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PLATFORM,
    DOMAIN,
    LOGGER,
    MODE_CHILD,
    MODE_IN_PROCESS,
    MODE_SERVER,
    MODES,
    PLATFORM_CPU_MASKS,
    SAMPLING_OPTIONS,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from .download_flow import ModelDownloadFlow
from .loader import check_dir, check_files, check_in_child, error_key, prompt_cache_dir, server_process
from .runtime_log import async_route_runtime_log

DEFAULT_LIBRARY_PATH = "/usr/lib/librkllmrt.so"


def _box(minimum: float, maximum: float, step: float = 1) -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    )


def model_schema() -> vol.Schema:
    """The form of the parent entry."""
    return vol.Schema(
        {
            vol.Required(CONF_LIBRARY_PATH): TextSelector(),
            vol.Required(CONF_MODEL_PATH): TextSelector(),
            vol.Required(CONF_MAX_CONTEXT_LEN, default=DEFAULT_MAX_CONTEXT_LEN): _box(128, 131072),
            vol.Required(CONF_ADVANCED): section(
                vol.Schema(
                    {
                        vol.Required(CONF_PLATFORM, default=DEFAULT_PLATFORM): SelectSelector(
                            SelectSelectorConfig(
                                options=list(PLATFORM_CPU_MASKS),
                                translation_key=CONF_PLATFORM,
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                        vol.Required(CONF_N_KEEP, default=-1): _box(-1, 131072),
                        vol.Required(CONF_EMBED_FLASH, default=False): BooleanSelector(),
                        vol.Required(CONF_BASE_DOMAIN_ID, default=0): _box(0, 15),
                        vol.Required(CONF_KV_STRATEGY, default=DEFAULT_KV_STRATEGY): SelectSelector(
                            SelectSelectorConfig(
                                options=[mode.value for mode in KVMode],
                                translation_key=CONF_KV_STRATEGY,
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                        vol.Optional(CONF_RUNTIME_RELEASE): TextSelector(),
                    }
                ),
                {"collapsed": True},
            ),
        }
    )


# Subentry options stored as integers (number selectors return floats).
_INT_OPTIONS = {CONF_MAX_NEW_TOKENS, CONF_TOP_K, CONF_MAX_HISTORY}


def server_schema() -> vol.Schema:
    """The form of a server: its address and key."""
    return vol.Schema(
        {
            vol.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            vol.Optional(CONF_API_KEY): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
        }
    )


def _normalise(user_input: dict[str, Any]) -> dict[str, Any]:
    """Entry data from the form: numbers as ints, paths stripped."""
    advanced = dict(user_input.get(CONF_ADVANCED, {}))
    for key in (CONF_N_KEEP, CONF_BASE_DOMAIN_ID):
        advanced[key] = int(advanced.get(key, 0 if key == CONF_BASE_DOMAIN_ID else -1))
    return {
        CONF_LIBRARY_PATH: user_input[CONF_LIBRARY_PATH].strip(),
        CONF_MODEL_PATH: user_input[CONF_MODEL_PATH].strip(),
        CONF_MAX_CONTEXT_LEN: int(user_input[CONF_MAX_CONTEXT_LEN]),
        CONF_ADVANCED: advanced,
    }


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
            self._data = {CONF_MODE: self._data[CONF_MODE], **_normalise(submitted)}
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
        return {CONF_LIBRARY_PATH: await self._async_default_library()}

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

    async def _async_default_library(self) -> str:
        found = await self.hass.async_add_executor_job(find_library)
        return str(found or DEFAULT_LIBRARY_PATH)

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
            current = self._data.get(CONF_MODEL)
            return self.async_show_form(
                step_id="server_model",
                data_schema=vol.Schema(
                    {
                        vol.Required(
                            CONF_MODEL, default=current if current in self._models else self._models[0]
                        ): SelectSelector(SelectSelectorConfig(options=self._models))
                    }
                ),
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
            data_schema=vol.Schema(
                {vol.Required(CONF_API_KEY): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))}
            ),
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


# The admin-only "Home Assistant" LLM API of Home Assistant 2026.11 (llm.LLM_API_HOME_ASSISTANT):
# it refuses requests without an admin user, and its tools need a larger context than the default.
ADMIN_LLM_API = "homeassistant"
ADMIN_LLM_API_MIN_CONTEXT = 8192


def default_conversation_options() -> dict[str, Any]:
    """Options of the conversation agent created with a model (recommended settings)."""
    return {
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_THINK: False,
        CONF_ACTION_SPEECH: DEFAULT_ACTION_SPEECH,
        CONF_RECOMMENDED: True,
    }


def default_ai_task_options() -> dict[str, Any]:
    """Options of the AI task created with a model (recommended settings)."""
    return {CONF_THINK: False, CONF_RECOMMENDED: True}


def _advanced_options(subentry_type: str) -> dict[str, tuple[Any, NumberSelector]]:
    """The settings behind "Recommended settings": key -> (default, selector).

    The default of a sampling setting is the runtime's own value, which applies when it is not set.
    """
    runtime = RUNTIME_SAMPLING
    options = {
        CONF_MAX_NEW_TOKENS: (DEFAULT_MAX_NEW_TOKENS, _box(1, 16384)),
        CONF_TEMPERATURE: (runtime.temperature, _box(0, 2, 0.05)),
    }
    if subentry_type == SUBENTRY_CONVERSATION:
        options |= {
            CONF_TOP_K: (runtime.top_k, _box(1, 200)),
            CONF_TOP_P: (runtime.top_p, _box(0, 1, 0.05)),
            CONF_REPEAT_PENALTY: (runtime.repeat_penalty, _box(0.5, 2, 0.05)),
            CONF_MAX_HISTORY: (DEFAULT_MAX_HISTORY, _box(0, 100)),
        }
    return options


def subentry_schema(
    hass: HomeAssistant, subentry_type: str, is_new: bool, options: Mapping[str, Any]
) -> vol.Schema:
    """The first form of a conversation or AI-task subentry, pre-filled with ``options``."""
    schema: dict[Any, Any] = {}
    if is_new:
        default_name = (
            DEFAULT_CONVERSATION_NAME if subentry_type == SUBENTRY_CONVERSATION else DEFAULT_AI_TASK_NAME
        )
        schema[vol.Required(CONF_NAME, default=default_name)] = str
    if subentry_type == SUBENTRY_CONVERSATION:
        apis = [SelectOptionDict(label=api.name, value=api.id) for api in llm.async_get_apis(hass)]
        valid = {option["value"] for option in apis}
        selected = [api for api in options.get(CONF_LLM_HASS_API, []) if api in valid]
        schema[vol.Optional(CONF_PROMPT, description={"suggested_value": options.get(CONF_PROMPT)})] = (
            TemplateSelector()
        )
        schema[vol.Optional(CONF_LLM_HASS_API, description={"suggested_value": selected})] = SelectSelector(
            SelectSelectorConfig(options=apis, multiple=True)
        )
    schema[vol.Optional(CONF_THINK, description={"suggested_value": options.get(CONF_THINK, False)})] = (
        BooleanSelector()
    )
    if subentry_type == SUBENTRY_CONVERSATION:
        speech = options.get(CONF_ACTION_SPEECH, DEFAULT_ACTION_SPEECH)
        schema[vol.Optional(CONF_ACTION_SPEECH, description={"suggested_value": speech})] = BooleanSelector()
    # Subentries made before the toggle existed hold their own values: not the recommended ones.
    recommended = options.get(CONF_RECOMMENDED, not set(options) & set(_advanced_options(subentry_type)))
    schema[vol.Required(CONF_RECOMMENDED, default=recommended)] = BooleanSelector()
    return vol.Schema(schema)


def advanced_schema(subentry_type: str, options: Mapping[str, Any]) -> vol.Schema:
    """The second form: sampling and history, pre-filled with ``options`` or the defaults.

    A sampling setting may be emptied: the runtime's own value applies.
    """
    schema: dict[Any, Any] = {}
    for key, (default, selector) in _advanced_options(subentry_type).items():
        value = options.get(key, default)
        if key in SAMPLING_OPTIONS:
            schema[vol.Optional(key, description={"suggested_value": value})] = selector
        else:
            schema[vol.Required(key, default=value)] = selector
    return vol.Schema(schema)


class RKLLMSubentryFlow(ConfigSubentryFlow):
    """Add or change a conversation agent or an AI task."""

    options: dict[str, Any]

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Start from the recommended settings."""
        self.options = (
            default_conversation_options()
            if self._subentry_type == SUBENTRY_CONVERSATION
            else default_ai_task_options()
        )
        return await self.async_step_set_options()

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Start from the subentry's settings."""
        self.options = dict(self._get_reconfigure_subentry().data)
        return await self.async_step_set_options()

    async def async_step_set_options(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Name, instructions, tools; the recommended settings or a second form for the rest."""
        if self._get_entry().state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        if user_input is None:
            return self.async_show_form(
                step_id="set_options",
                data_schema=subentry_schema(self.hass, self._subentry_type, self._is_new, self.options),
            )
        self.options.pop(CONF_LLM_HASS_API, None)  # an emptied selection is left out of the input
        self.options |= user_input
        if ADMIN_LLM_API in self.options.get(CONF_LLM_HASS_API, []) and self._small_context:
            return await self.async_step_admin_api()
        return await self._async_step_next()

    async def async_step_admin_api(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Warn that the admin-only Home Assistant API fails without an admin and needs a large context."""
        if user_input is None:
            return self.async_show_form(
                step_id="admin_api",
                data_schema=vol.Schema({}),
                description_placeholders={"min_context": str(ADMIN_LLM_API_MIN_CONTEXT)},
            )
        return await self._async_step_next()

    async def _async_step_next(self) -> SubentryFlowResult:
        if self.options[CONF_RECOMMENDED]:
            for key in _advanced_options(self._subentry_type):
                self.options.pop(key, None)
            return self._async_save()
        return await self.async_step_advanced()

    async def async_step_advanced(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Sampling and history settings."""
        if user_input is None:
            return self.async_show_form(
                step_id="advanced", data_schema=advanced_schema(self._subentry_type, self.options)
            )
        self.options |= {
            key: int(value) if key in _INT_OPTIONS else value for key, value in user_input.items()
        }
        for key, (default, _) in _advanced_options(self._subentry_type).items():
            # Emptied or left at the runtime's value: not stored, so the runtime's own value applies.
            if key in SAMPLING_OPTIONS and user_input.get(key, default) == default:
                self.options.pop(key, None)
        return self._async_save()

    @property
    def _small_context(self) -> bool:
        """The model's context may leave no room next to the admin tools (a server's is unknown)."""
        context = self._get_entry().data.get(CONF_MAX_CONTEXT_LEN)
        return context is None or int(context) < ADMIN_LLM_API_MIN_CONTEXT

    @property
    def _is_new(self) -> bool:
        return self.source == SOURCE_USER

    def _async_save(self) -> SubentryFlowResult:
        data = dict(self.options)
        if self._is_new:
            return self.async_create_entry(title=str(data.pop(CONF_NAME)), data=data)
        return self.async_update_and_abort(self._get_entry(), self._get_reconfigure_subentry(), data=data)
