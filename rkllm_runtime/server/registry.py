"""The models the server serves: those named on its command line and the files of its models folder.

A model is loaded on first use (the ``--model`` ones at start), checked first in a process of its
own, and unloaded when idle for its ``keep_alive``; when ``--max-loaded`` models are loaded, or the
NPU's memory is full, the least recently used idle one makes room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rkllm_runtime.chat import ChatEngine, PromptCacheStore
from rkllm_runtime.errors import InsufficientMemoryError, ModelRejectedError, RKLLMError
from rkllm_runtime.library import check_library
from rkllm_runtime.models import check_model
from rkllm_runtime.models.download import read_records
from rkllm_runtime.runtime import RKLLMRuntime
from rkllm_runtime.types import ModelParams

from .config import ServerConfig
from .errors import ApiError

_LOGGER = logging.getLogger(__name__)


class ModelState(StrEnum):
    """Where a model is in its life."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


def ollama_name(name: str) -> str:
    """A name as Ollama lists it: ``qwen3`` is ``qwen3:latest``; paths and tagged names stay."""
    return name if ":" in name or "/" in name else f"{name}:latest"


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
    downloaded: bool = False
    """A file of the models folder (it may be deleted through the API)."""
    aliases: set[str] = field(default_factory=set)
    keep_alive: float | None = None
    """Seconds it stays loaded when idle (None: forever), as the last request asked."""
    last_used: float = 0.0
    in_use: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    expiry: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        """Bytes of the model file."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    @property
    def expires_at(self) -> float | None:
        """Unix time an idle model will be unloaded (None: never)."""
        return None if self.keep_alive is None or self.in_use else self.last_used + self.keep_alive

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
        try:
            self.runtime_release: str | None = check_library(config.library, config.release).version
        except RKLLMError:
            self.runtime_release = None  # each load fails, saying why
        """The runtime's release, against which pulled files are checked."""
        self._pulls: dict[str, asyncio.Lock] = {}
        self._unloading: set[asyncio.Task[None]] = set()  # referenced until done
        self.models = {name: ServedModel(name, path) for name, path in config.models.items()}
        for model in self.models.values():
            model.keep_alive = config.keep_alive
        self.scan()

    def scan(self) -> None:
        """Add the models folder's files not served yet (blocking: a directory listing)."""
        folder = self._config.models_dir
        if folder is None:
            return
        records = read_records(folder)
        served = {model.path.resolve() for model in self.models.values()}
        for path in sorted(folder.rglob("*.rkllm")):
            if path.resolve() in served or any(
                part.startswith(".") for part in path.relative_to(folder).parts
            ):
                continue
            record = records.get(path.relative_to(folder).as_posix(), {})
            name = ollama_name(record.get("name") or path.stem)
            aliases = {f"hf.co/{record['repo']}/{record['file']}"} if "repo" in record else set()
            self.add(name, path, aliases=aliases)

    def add(self, name: str, path: Path, *, aliases: set[str] | None = None) -> ServedModel:
        """Serve a file of the models folder, loaded on first use."""
        model = ServedModel(
            name,
            path,
            ModelState.UNLOADED,
            downloaded=True,
            aliases=aliases or set(),
            keep_alive=self._config.keep_alive,
        )
        self.models[name] = model
        return model

    def pull_lock(self, file: str) -> asyncio.Lock:
        """Held while ``file`` is pulled: a second pull of it waits, then finds it there."""
        return self._pulls.setdefault(file, asyncio.Lock())

    async def serve_download(self, name: str, path: Path, alias: str) -> ServedModel:
        """Serve a file just pulled; a model of that name loaded from an older file is unloaded first."""
        model = self.models.get(name)
        if model is None:
            return self.add(name, path, aliases={alias})
        if model.downloaded:
            async with model.lock:
                await self.unload(model)
            model.path = path
            model.aliases.add(alias)
        return model

    def find(self, name: str) -> ServedModel | None:
        """The model a name means: its name, ``name:latest`` or one of its aliases."""
        for candidate in (name, name.removesuffix(":latest"), ollama_name(name)):
            if candidate in self.models:
                return self.models[candidate]
        return next((model for model in self.models.values() if name in model.aliases), None)

    def get(self, name: object) -> ServedModel:
        """The model a request names (``name:latest`` finds ``name``); 404 for unknown ones."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, '"model" is required')
        model = self.find(name)
        if model is None:
            raise ApiError(404, f"model {name!r} not found; this server has: {', '.join(self.models)}")
        return model

    async def load(self) -> None:
        """Load the command line's models, one after the other (beyond ``--max-loaded``: on first use)."""
        for model in list(self.models.values()):
            if not model.downloaded:
                try:
                    await self._load(model)
                except ApiError:
                    model.state = ModelState.UNLOADED

    async def acquire(self, model: ServedModel, keep_alive: float | bool | None = False) -> ChatEngine:
        """The model's engine, loaded if need be, marked in use until :meth:`release`.

        ``keep_alive``: seconds to stay loaded once idle, None for ever, False: the server's default
        (as Ollama: each request sets it).
        """
        async with model.lock:
            if model.state is ModelState.UNLOADED or (model.state is ModelState.FAILED and model.downloaded):
                await self._load(model, make_room=True)
            engine = model.ready_engine()
            model.in_use += 1
        model.keep_alive = self._config.keep_alive if keep_alive is False else keep_alive
        if model.expiry is not None:
            model.expiry.cancel()
            model.expiry = None
        return engine

    def release(self, model: ServedModel) -> None:
        """A request is done with the model: unload it once its keep-alive has passed idle."""
        model.in_use -= 1
        model.last_used = time.time()
        if model.in_use or model.keep_alive is None or model.state is not ModelState.READY:
            return
        model.expiry = asyncio.get_running_loop().call_later(max(0.0, model.keep_alive), self._expire, model)

    def _expire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(self.unload(model))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    async def unload(self, model: ServedModel) -> None:
        """Free a model's handle (its prompt caches are kept); it loads again on its next use."""
        model.expiry = None
        if model.in_use or model.engine is None:
            return
        engine, model.engine = model.engine, None
        model.state = ModelState.UNLOADED
        await engine.aclose()
        _LOGGER.info("Model %s was unloaded", model.name)

    async def _make_room(self) -> bool:
        """Unload the least recently used idle model; whether there was one."""
        idle = [m for m in self.models.values() if m.state is ModelState.READY and not m.in_use]
        if not idle:
            return False
        await self.unload(min(idle, key=lambda m: m.last_used))
        return True

    async def _load(self, model: ServedModel, *, make_room: bool = False) -> None:
        """Load a model; ``make_room``: unload idle ones if the limit or the NPU's memory is reached."""
        loaded = sum(m.state is ModelState.READY for m in self.models.values())
        limit = self._config.max_loaded
        if limit and loaded >= limit and not (make_room and await self._make_room()):
            raise ApiError(503, f"{loaded} models are loaded and busy (--max-loaded)", retry_after=5)
        model.state, model.error = ModelState.LOADING, None
        loop = asyncio.get_running_loop()
        while True:
            try:
                runtime = await loop.run_in_executor(None, self._open, model)
                break
            except (InsufficientMemoryError, ModelRejectedError) as err:
                if make_room and await self._make_room():  # the NPU's memory may be held by an idle model
                    continue
                self._failed(model, err)
                return
            except RKLLMError as err:
                self._failed(model, err)
                return
        caches = None
        if self._config.prompt_cache_dir is not None:
            caches = PromptCacheStore(self._config.prompt_cache_dir / model.name.replace("/", "_"))
        model.engine = ChatEngine(
            runtime,
            max_waiting=self._config.max_waiting,
            kv_mode=self._config.kv_mode,
            prompt_caches=caches,
        )
        model.state, model.loaded_at, model.last_used = ModelState.READY, time.time(), time.time()
        _LOGGER.info("Model %s is ready (%s)", model.name, model.path)

    def _failed(self, model: ServedModel, err: RKLLMError) -> None:
        model.state, model.error = ModelState.FAILED, str(err)
        _LOGGER.error("Model %s could not be loaded: %s", model.name, err)

    def _open(self, model: ServedModel) -> RKLLMRuntime:
        config = self._config
        domain = list(self.models).index(model.name)
        params = ModelParams(
            max_context_len=config.context_length,
            n_keep=config.n_keep,
            enabled_cpus_mask=config.enabled_cpus_mask,
            embed_flash=config.embed_flash,
            base_domain_id=config.base_domain_id + domain,
        )
        check_model(
            config.library,
            model.path,
            chip=config.chip,
            release=config.release,
            max_context_len=config.context_length,
            verdicts=config.check_dir,
        )
        return RKLLMRuntime.open(config.library, model.path, params, release=config.release)

    async def delete(self, model: ServedModel) -> None:
        """Unload a downloaded model and delete its file."""
        if not model.downloaded:
            raise ApiError(400, f"model {model.name!r} is served from the command line: it is not deleted")
        if model.expiry is not None:
            model.expiry.cancel()
        engine, model.engine, model.state = model.engine, None, ModelState.CLOSED
        del self.models[model.name]
        if engine is not None:
            await engine.aclose()  # aborts what still runs on it

    async def close(self) -> None:
        """Abort what runs, record prompt caches and free every handle."""
        for model in self.models.values():
            if model.expiry is not None:
                model.expiry.cancel()
            if model.engine is not None:
                model.state = ModelState.CLOSED
                await model.engine.aclose()
