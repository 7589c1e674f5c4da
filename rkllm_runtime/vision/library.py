"""Locating, checking and loading ``librknnrt.so``, the RKNN runtime the vision encoders run on.

Checked as ``librkllmrt.so`` is (:func:`rkllm_runtime.library.check_elf`): a missing file, a file
that is no library or one built for another architecture is a clear error before anything is loaded.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from rkllm_runtime.errors import LibraryError, LibraryNotFoundError
from rkllm_runtime.library import SEARCH_DIRS, check_elf

from . import api

LIBRARY_NAME = "librknnrt.so"


def find_rknn_library(beside: Path | None = None) -> Path:
    """``librknnrt.so`` beside the RKLLM library (as the vendor installs both), else in the usual places."""
    directories = [*([beside.parent] if beside is not None else []), *map(Path, SEARCH_DIRS)]
    for directory in directories:
        if (candidate := directory / LIBRARY_NAME).is_file():
            return candidate
    raise LibraryNotFoundError(
        f"{LIBRARY_NAME} (the RKNN runtime of vision encoders) is not in "
        f"{', '.join(map(str, directories))}: install it from Rockchip's rknn-toolkit2 release "
        "(rknpu2/runtime/Linux/librknn_api)"
    )


@dataclass(frozen=True, slots=True)
class RKNNLibrary:
    """A checked, loaded ``librknnrt.so`` with its functions declared."""

    path: Path
    cdll: ctypes.CDLL


def load_rknn_library(path: str | Path) -> RKNNLibrary:
    """Check and load the RKNN runtime; raises a :class:`~rkllm_runtime.errors.LibraryError`."""
    path = Path(path)
    check_elf(path)
    try:
        cdll = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        raise LibraryError(f"cannot load {path}: {err}") from err
    if missing := sorted(name for name in api.FUNCTIONS if not hasattr(cdll, name)):
        raise LibraryError(f"{path} lacks RKNN functions: {', '.join(missing)}")
    api.declare(cdll)
    return RKNNLibrary(path, cdll)
