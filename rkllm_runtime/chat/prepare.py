"""The runtime brought to a plan's starting point, and what a run leaves behind.

Runs on the engine thread: the system prompt and tools set, the KV cache reset, the
system prompt's prompt-cache file restored or saved by the run, and kept or dropped after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from rkllm_runtime.errors import PromptCacheError
from rkllm_runtime.runtime import RKLLMRuntime
from rkllm_runtime.types import RunOptions

from .messages import ChatRequest
from .plan import KVReset, Plan
from .prompt_cache import PromptCacheKey, PromptCacheStore, model_identity

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """How the runtime was made ready for a plan."""

    options: RunOptions
    loaded_prompt_cache: bool = False
    """The system prompt was restored from its file (for a ``keep_history=0`` run)."""
    save_prompt_cache: PromptCacheKey | None = None


class Preparer:
    """Readies one runtime for each run and tidies after it (engine thread only)."""

    def __init__(self, runtime: RKLLMRuntime, prompt_caches: PromptCacheStore | None) -> None:
        self.runtime = runtime
        self.prompt_caches = prompt_caches
        self._model_identity: str | None = None  # read when first needed
        self._prompt_cache_loaded = False

    def prepare(self, request: ChatRequest, step: Plan) -> Prepared:
        """Bring the runtime's cache to the plan's starting point."""
        if step.set_system:
            self.runtime.set_function_tools(request.system_prompt, step.tools or "[]")
        if step.reset is not KVReset.NONE:
            self.runtime.clear_kv_cache(keep_system_prompt=step.reset is KVReset.KEEP_SYSTEM)
        if step.use_prompt_cache and self.prompt_caches is not None:
            return self._restore_prompt_cache(self.prompt_caches, step)
        return Prepared(step.options)

    def _restore_prompt_cache(self, store: PromptCacheStore, step: Plan) -> Prepared:
        """Load the system prompt's verified prompt-cache file, or let the run save one."""
        try:
            if self._model_identity is None:
                self._model_identity = model_identity(self.runtime.model_path)
        except OSError as err:
            _LOGGER.warning(
                "Cannot read %s (%s); answering without prompt-cache files", self.runtime.model_path, err
            )
            return Prepared(step.options)
        key = PromptCacheKey(self.runtime.library.release, self._model_identity, step.system_key)
        if (path := store.lookup(key)) is not None:
            try:
                if self._prompt_cache_loaded:  # the runtime holds one file at a time
                    self.runtime.release_prompt_cache()
                self.runtime.load_prompt_cache(path)
            except PromptCacheError:
                _LOGGER.warning("The runtime refused prompt cache %s; it will be rebuilt", path.name)
                store.discard(path)
            else:
                self._prompt_cache_loaded = True
                # Restored for a keep_history=0 run only: its input is matched against the
                # cached prefix. In a kept conversation the runtime would not match it.
                return Prepared(replace(step.options, keep_history=False), loaded_prompt_cache=True)
        staging = store.staging_path(key)
        if staging is None:
            return Prepared(step.options)
        return Prepared(replace(step.options, save_prompt_cache=str(staging)), save_prompt_cache=key)

    def after_run(self, saving: PromptCacheKey | None, finished: bool) -> int | None:
        """Keep the prompt-cache file a finished run saved, drop a failed run's.

        Returns the KV cache's size when the library tells it.
        """
        if saving is not None and self.prompt_caches is not None:
            if finished:
                self.prompt_caches.saved(saving)
            else:
                self.prompt_caches.abandon(saving)
        if self.runtime.library.reports_kv_cache_size:
            return self.runtime.kv_cache_size()
        return None
