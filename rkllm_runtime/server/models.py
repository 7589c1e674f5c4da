"""The models the server serves: one engine each, loaded at start."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rkllm_runtime.chat import ChatEngine, PromptCacheStore
from rkllm_runtime.errors import RKLLMError
from rkllm_runtime.runtime import RKLLMRuntime
from rkllm_runtime.types import ModelParams

from .config import ServerConfig
from .errors import ApiError

_LOGGER = logging.getLogger(__name__)


class ModelState(StrEnum):
    """Where a model is in its life."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(slots=True)
class ServedModel:
    """One model and its engine."""

    name: str
    path: Path
    state: ModelState = ModelState.LOADING
    engine: ChatEngine | None = None
    error: str | None = None
    loaded_at: float = 0.0
    """Unix time the model finished loading."""

    @property
    def size(self) -> int:
        """Bytes of the model file."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def ready_engine(self) -> ChatEngine:
        """The engine, or the error a request gets while there is none."""
        if self.state is ModelState.READY and self.engine is not None:
            return self.engine
        if self.state is ModelState.LOADING:
            raise ApiError(503, f"model {self.name!r} is still loading", retry_after=5)
        raise ApiError(503, f"model {self.name!r} is not available: {self.error or self.state}")


class ModelRegistry:
    """The served models by name."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self.models = {name: ServedModel(name, path) for name, path in config.models.items()}

    def get(self, name: object) -> ServedModel:
        """The model a request names (``name:latest`` finds ``name``); 404 for unknown ones."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, '"model" is required')
        model = self.models.get(name) or self.models.get(name.removesuffix(":latest"))
        if model is None:
            raise ApiError(404, f"model {name!r} not found; this server has: {', '.join(self.models)}")
        return model

    async def load(self) -> None:
        """Load every model, one after the other (each gets its own NPU memory domain)."""
        loop = asyncio.get_running_loop()
        for domain, model in enumerate(self.models.values()):
            params = ModelParams(
                max_context_len=self._config.context_length,
                n_keep=self._config.n_keep,
                enabled_cpus_mask=self._config.enabled_cpus_mask,
                embed_flash=self._config.embed_flash,
                base_domain_id=self._config.base_domain_id + domain,
            )
            try:
                runtime = await loop.run_in_executor(None, self._open, model.path, params)
            except RKLLMError as err:
                model.state, model.error = ModelState.FAILED, str(err)
                _LOGGER.error("Model %s could not be loaded: %s", model.name, err)
                continue
            caches = None
            if self._config.prompt_cache_dir is not None:
                caches = PromptCacheStore(self._config.prompt_cache_dir / model.name)
            model.engine = ChatEngine(
                runtime,
                max_waiting=self._config.max_waiting,
                kv_mode=self._config.kv_mode,
                prompt_caches=caches,
            )
            model.state, model.loaded_at = ModelState.READY, time.time()
            _LOGGER.info("Model %s is ready (%s)", model.name, model.path)

    def _open(self, path: Path, params: ModelParams) -> RKLLMRuntime:
        return RKLLMRuntime.open(self._config.library, path, params, release=self._config.release)

    async def close(self) -> None:
        """Abort what runs, record prompt caches and free every handle."""
        for model in self.models.values():
            if model.engine is not None:
                model.state = ModelState.CLOSED
                await model.engine.aclose()
