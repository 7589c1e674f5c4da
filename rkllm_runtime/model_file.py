"""The checks a model file passes before ``rkllm_init`` is asked to load it."""

from __future__ import annotations

from pathlib import Path

from .errors import InsufficientMemoryError, ModelNotFoundError, NotAModelError
from .system import available_memory_mb

# Loading needs the weights in memory plus working buffers.
MEMORY_HEADROOM = 1.1


def check_model_file(path: Path) -> None:
    """Raise unless the model file exists, is not empty and fits in the memory available now."""
    if path.is_dir():
        raise NotAModelError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise NotAModelError(f"{path} is empty, not a model file")
    need_mb = path.stat().st_size / 2**20 * MEMORY_HEADROOM
    free_mb = available_memory_mb()
    if free_mb is not None and need_mb > free_mb:
        raise InsufficientMemoryError(
            f"{path.name} needs about {need_mb:.0f} MB but only {free_mb:.0f} MB of memory is available"
        )
