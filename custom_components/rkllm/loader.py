"""An entry's runtime from its configuration: loaded here (blocking: in the executor) or in a child."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant

from rkllm_runtime import (
    InsufficientMemoryError,
    LibraryError,
    LibraryNotFoundError,
    ModelNotFoundError,
    ModelParams,
    ModelRejectedError,
    NotALibraryError,
    RKLLMError,
    RKLLMRuntime,
    UnsupportedVersionError,
    VersionMismatchError,
    WrongArchitectureError,
    find_library,
    load_library,
)
from rkllm_runtime.chat import KVMode
from rkllm_runtime.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadError,
    InsufficientDiskError,
    ModelCrashedError,
    ModelIncompatibleError,
    NotAModelError,
)
from rkllm_runtime.library import check_library
from rkllm_runtime.models import check_model, detect_board
from rkllm_runtime.runtime import check_model_file
from rkllm_runtime.server.child import ServerProcess

from .const import (
    CONF_ADVANCED,
    CONF_BASE_DOMAIN_ID,
    CONF_EMBED_FLASH,
    CONF_KV_STRATEGY,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODE,
    CONF_MODEL_PATH,
    CONF_N_KEEP,
    CONF_PLATFORM,
    CONF_RUNTIME_RELEASE,
    DEFAULT_KV_STRATEGY,
    DEFAULT_MAX_CONTEXT_LEN,
    DEFAULT_PLATFORM,
    DOMAIN,
    LOGGER,
    MODE_IN_PROCESS,
    PLATFORM_CPU_MASKS,
)

DEFAULT_LIBRARY_PATH = "/usr/lib/librkllmrt.so"

# Translation keys of the errors a user can act on, most specific first.
ERROR_KEYS: tuple[tuple[type[RKLLMError], str], ...] = (
    (LibraryNotFoundError, "library_not_found"),
    (NotALibraryError, "library_not_found"),
    (WrongArchitectureError, "wrong_architecture"),
    (VersionMismatchError, "version_mismatch"),
    (UnsupportedVersionError, "unsupported_version"),
    (LibraryError, "library_not_found"),
    (ModelNotFoundError, "model_not_found"),
    (InsufficientMemoryError, "insufficient_memory"),
    (ModelIncompatibleError, "model_incompatible"),
    (ModelCrashedError, "model_crashed"),
    (NotAModelError, "not_a_model"),
    (ModelRejectedError, "model_rejected"),
    (ChecksumMismatchError, "checksum_mismatch"),
    (InsufficientDiskError, "insufficient_disk"),
    (DownloadCancelledError, "download_cancelled"),
    (DownloadError, "download_failed"),
)


def error_key(err: RKLLMError) -> str:
    """The translation key describing a loading error."""
    return next((key for kind, key in ERROR_KEYS if isinstance(err, kind)), "unknown")


def model_params(data: Mapping[str, Any]) -> ModelParams:
    """Load-time parameters from an entry's data."""
    advanced = data.get(CONF_ADVANCED, {})
    return ModelParams(
        max_context_len=int(data.get(CONF_MAX_CONTEXT_LEN, DEFAULT_MAX_CONTEXT_LEN)),
        n_keep=int(advanced.get(CONF_N_KEEP, -1)),
        enabled_cpus_mask=PLATFORM_CPU_MASKS[advanced.get(CONF_PLATFORM, DEFAULT_PLATFORM)],
        embed_flash=bool(advanced.get(CONF_EMBED_FLASH, False)),
        base_domain_id=int(advanced.get(CONF_BASE_DOMAIN_ID, 0)),
    )


def kv_mode(data: Mapping[str, Any]) -> KVMode:
    """How the engine uses the KV cache, from an entry's data."""
    return KVMode(data.get(CONF_ADVANCED, {}).get(CONF_KV_STRATEGY, DEFAULT_KV_STRATEGY))


def default_library() -> str:
    """The runtime library found on this machine, or where it is usually installed (blocking)."""
    return str(find_library() or DEFAULT_LIBRARY_PATH)


def check_files(data: Mapping[str, Any]) -> None:
    """The quick checks before loading: the library is usable, the model exists and fits in memory.

    For a model run in its own process the library is only read here, never loaded: a faulty
    one must not take Home Assistant down.
    """
    if data[CONF_MODE] == MODE_IN_PROCESS:
        load_library(data[CONF_LIBRARY_PATH], _release(data))
    else:
        check_library(data[CONF_LIBRARY_PATH], _release(data))
    check_model_file(Path(data[CONF_MODEL_PATH]))


def _release(data: Mapping[str, Any]) -> str | None:
    return data.get(CONF_ADVANCED, {}).get(CONF_RUNTIME_RELEASE) or None


def models_dir(hass: HomeAssistant) -> Path:
    """Where downloaded models are kept: the configuration directory's ``models`` folder."""
    return Path(hass.config.path("models"))


def check_dir(hass: HomeAssistant) -> Path:
    """Where the verdicts of model checks are kept, so that only a file's first load is checked."""
    return Path(hass.config.path(".storage", DOMAIN, "checked"))


def check_in_child(data: Mapping[str, Any], verdicts: Path | None) -> None:
    """Load the entry's model once in a process of its own and compare its header with the board.

    A file for another chip or runtime release, which can crash the runtime, is refused here
    before Home Assistant's own process loads it (blocking).
    """
    check_model(
        Path(data[CONF_LIBRARY_PATH]),
        Path(data[CONF_MODEL_PATH]),
        chip=detect_board().chip,
        release=_release(data),
        max_context_len=int(data.get(CONF_MAX_CONTEXT_LEN, DEFAULT_MAX_CONTEXT_LEN)),
        verdicts=verdicts,
    )


def prompt_cache_dir(hass: HomeAssistant) -> Path:
    """Where prompt-cache files persist, whichever process on this machine runs the model."""
    return Path(hass.config.path(".storage", DOMAIN, "prompt_cache"))


def child_pid_file(hass: HomeAssistant, entry_id: str) -> Path:
    """Where the process id of an entry's child is kept, for a restarted Home Assistant to find it."""
    return Path(hass.config.path(".storage", DOMAIN, f"child_{entry_id}.pid"))


def server_process(data: Mapping[str, Any], cache_dir: Path, pid_file: Path | None = None) -> ServerProcess:
    """The rkllm-server child that runs an entry's model (not started; its pid kept in ``pid_file``)."""
    model_path = Path(data[CONF_MODEL_PATH])
    return ServerProcess(
        Path(data[CONF_LIBRARY_PATH]),
        model_path.stem,
        model_path,
        params=model_params(data),
        kv_mode=kv_mode(data),
        prompt_cache_dir=cache_dir,
        release=_release(data),
        on_log=lambda line: LOGGER.debug("rkllm-server: %s", line),
        pid_file=pid_file,
    )


def load_runtime(data: Mapping[str, Any], verdicts: Path | None = None) -> RKLLMRuntime:
    """Check the library, check the model in a child process, then load it; raises an :class:`RKLLMError`."""
    check_in_child(data, verdicts)
    return RKLLMRuntime.open(
        data[CONF_LIBRARY_PATH], data[CONF_MODEL_PATH], model_params(data), release=_release(data)
    )
