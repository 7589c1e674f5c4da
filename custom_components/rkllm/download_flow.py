"""Config flow steps that download a model from Hugging Face into the configuration's ``models`` folder.

The list shows the catalog's models that fit this board first, and says why the others do not;
any repository and file may be given instead. The download runs behind Home Assistant's progress
screen (percent through progress updates; closing the dialog cancels it), then the file is
checked like one given by path before the entry is created.
"""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from pathlib import Path
from typing import Any

import probatio as vol
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.helpers.selector import (
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from rkllm_runtime import RKLLMError
from rkllm_runtime.errors import DownloadError
from rkllm_runtime.library import check_library
from rkllm_runtime.models import CatalogEntry, Choice, choices, detect_board, load_catalog
from rkllm_runtime.models.download import Progress, download_model, read_records

from .const import (
    CONF_ADVANCED,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODE,
    CONF_MODEL_PATH,
    DEFAULT_MAX_CONTEXT_LEN,
    LOGGER,
)
from .loader import default_library, error_key, models_dir
from .schemas import context_box

CONF_CATALOG_MODEL = "catalog_model"
CONF_REPO = "repo"
CONF_FILE = "file"
CONF_HF_TOKEN = "hf_token"
OTHER_FILE = "other"


def _survey(library: str, folder: Path) -> tuple[list[Choice], str | None]:
    """The catalog ranked for this board and runtime (blocking: reads /proc, the disk and the library)."""
    try:
        release: str | None = check_library(library).version
    except RKLLMError:
        release = None
    downloaded = set(read_records(folder))
    return choices(load_catalog(), detect_board(folder), release, downloaded), release


def _size_text(size: float) -> str:
    return f"{size / 2**30:.2f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


def _option(choice: Choice) -> SelectOptionDict:
    label = choice.entry.label
    if not choice.fits:
        label += f" ({'; '.join(choice.reasons)})"
    return SelectOptionDict(value=choice.entry.id, label=label)


def download_schema(ranked: list[Choice]) -> vol.Schema:
    """The form: the runtime library, a catalog model or any file, a token and the context length."""
    options = [_option(choice) for choice in ranked] + [SelectOptionDict(value=OTHER_FILE, label=OTHER_FILE)]
    default = next((choice.entry.id for choice in ranked if choice.fits), OTHER_FILE)
    return vol.Schema(
        {
            vol.Required(CONF_LIBRARY_PATH): TextSelector(),
            vol.Required(CONF_CATALOG_MODEL, default=default): SelectSelector(
                SelectSelectorConfig(
                    options=options, translation_key=CONF_CATALOG_MODEL, mode=SelectSelectorMode.LIST
                )
            ),
            vol.Optional(CONF_REPO): TextSelector(),
            vol.Optional(CONF_FILE): TextSelector(),
            vol.Optional(CONF_HF_TOKEN): TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
            vol.Required(CONF_MAX_CONTEXT_LEN, default=DEFAULT_MAX_CONTEXT_LEN): context_box(),
        }
    )


class ModelDownloadFlow(ConfigFlow):
    """The download steps of the RKLLM config flow (the flow itself declares the domain)."""

    _data: dict[str, Any]
    _errors: dict[str, str]
    _error_detail: str
    _form_step: str
    _download_task: asyncio.Task[None] | None = None
    _cancel: threading.Event | None = None
    _target = ""
    _size = ""

    async def async_step_download(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose a catalog model (what fits this board first) or any file on Hugging Face."""
        self._form_step = "download"
        folder = models_dir(self.hass)
        library = str(
            (user_input or {}).get(CONF_LIBRARY_PATH)
            or self._data.get(CONF_LIBRARY_PATH)
            or await self.hass.async_add_executor_job(default_library)
        )
        ranked, release = await self.hass.async_add_executor_job(_survey, library, folder)
        if user_input is not None and await self._async_start(user_input, ranked, release is not None):
            return await self.async_step_downloading()
        suggested = {CONF_LIBRARY_PATH: library, **(user_input or {})}
        suggested.pop(CONF_HF_TOKEN, None)
        return self.async_show_form(
            step_id="download",
            data_schema=self.add_suggested_values_to_schema(download_schema(ranked), suggested),
            errors=self._errors,
            description_placeholders={"error": self._error_detail, "folder": str(folder)},
        )

    async def _async_start(self, user_input: dict[str, Any], ranked: list[Choice], library_ok: bool) -> bool:
        """Validate the form and start the download; whether it started (else the form shows why)."""
        self._errors, self._error_detail = {}, ""
        entry: CatalogEntry | None = next(
            (c.entry for c in ranked if c.entry.id == user_input[CONF_CATALOG_MODEL]), None
        )
        repo = (user_input.get(CONF_REPO) or "").strip()
        file = (user_input.get(CONF_FILE) or "").strip()
        if entry is not None:
            repo, file = entry.repo, entry.file
        if not library_ok:
            self._errors = {CONF_LIBRARY_PATH: "library_not_found"}
        elif not repo or not file:
            self._errors = {"base": "repo_and_file_required"}
        if self._errors:
            return False
        path = models_dir(self.hass) / file
        self._data = {
            CONF_MODE: self._data[CONF_MODE],
            CONF_LIBRARY_PATH: user_input[CONF_LIBRARY_PATH].strip(),
            CONF_MODEL_PATH: str(path),
            CONF_MAX_CONTEXT_LEN: int(user_input[CONF_MAX_CONTEXT_LEN]),
            CONF_ADVANCED: {},
        }
        await self.async_set_unique_id(str(path))
        self._abort_if_unique_id_configured()
        self._target = f"{repo}/{file}"
        self._size = _size_text(entry.size_mb * 2**20) if entry is not None else "?"
        self._cancel = threading.Event()
        download = partial(
            download_model,
            repo,
            file,
            models_dir(self.hass),
            token=user_input.get(CONF_HF_TOKEN) or None,
            on_progress=self._on_progress,
            cancel=self._cancel,
        )
        self._download_task = self.hass.async_create_task(self._async_download(download))
        return True

    def _on_progress(self, progress: Progress) -> None:
        """From the download's thread: the share done, to the progress screen."""
        if progress.fraction is not None:
            self.hass.loop.call_soon_threadsafe(self._async_progressed, progress)

    def _async_progressed(self, progress: Progress) -> None:
        assert progress.fraction is not None
        self.async_update_progress(progress.fraction)
        if progress.total and self._size != (size := _size_text(progress.total)):
            self._size = size  # the hub's own figure: the screen is read again
            self.async_notify_flow_changed()

    async def _async_download(self, download: partial[Any]) -> None:
        try:
            await self.hass.async_add_executor_job(download)
        except DownloadError as err:
            LOGGER.warning("Cannot download %s: %s", self._target, err)
            self._errors, self._error_detail = {"base": error_key(err)}, str(err)

    async def async_step_downloading(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Wait for the download, then check the file as one given by path."""
        assert self._download_task is not None
        if not self._download_task.done():
            return self.async_show_progress(
                step_id="downloading",
                progress_action="download_model",
                progress_task=self._download_task,
                description_placeholders={"model": self._target, "size": self._size},
            )
        self._download_task = None
        return self.async_show_progress_done(next_step_id="download" if self._errors else "load")

    def async_remove(self) -> None:
        """The flow is closed: a download still running stops at its next block."""
        if self._cancel is not None:
            self._cancel.set()
        super().async_remove()
