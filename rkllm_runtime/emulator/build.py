"""Compiling the emulator into a ``librkllmrt.so`` for one ABI, cached by its inputs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .real_model import llama_cpp, qwen2_vocab

SOURCE_DIR = Path(__file__).parent
ENGINES = {"scripted": ("scripted.c", "vocab.c"), "llama": ("llama.c",)}
HEADERS = ("common.h", "rkllm.h", "vocab.h")
# The release each ABI build embeds unless told otherwise.
DEFAULT_RELEASE = {"1.2": "1.2.3", "1.3": "1.3.1"}
LIBRARY_NAME = "librkllmrt.so"
# The RKNN runtime the vision encoders run on, built beside it (as both sit in /usr/lib on a board).
RKNN_SOURCES = ("rknn.c", "rknn_api.h")
RKNN_LIBRARY_NAME = "librknnrt.so"


def cache_dir() -> Path:
    """Where built emulators are kept (``$XDG_CACHE_HOME/rkllm-emulator``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rkllm-emulator"


def compiler() -> str:
    """The C compiler to use (``$CC`` or ``cc``)."""
    return os.environ.get("CC", "cc")


def _command(abi: str, release: str, out: Path, engine: str) -> list[str]:
    # Both engines link llama.cpp: the llama engine runs its models, the scripted one tokenizes.
    llama = llama_cpp()
    linking = [f"-I{llama.include}", str(llama.library), f"-Wl,-rpath,{llama.library.parent}"]
    if engine == "scripted":
        linking.append(f'-DRKLLM_EMU_VOCAB="{qwen2_vocab()}"')
    return [
        compiler(),
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        "-shared",
        "-fPIC",
        "-pthread",
        f"-DRKLLM_ABI={abi.replace('.', '')}",
        f'-DRKLLM_EMU_VERSION="{release}"',
        "-o",
        str(out),
        *(str(SOURCE_DIR / name) for name in ENGINES[engine]),
        str(SOURCE_DIR / "common.c"),
        *linking,
    ]


def _rknn_command(out: Path) -> list[str]:
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-pthread"]
    return [compiler(), *flags, "-o", str(out), str(SOURCE_DIR / RKNN_SOURCES[0]), "-lm"]


def build(abi: str, out_dir: Path, release: str | None = None, engine: str = "scripted") -> Path:
    """Compile the emulator for ``abi`` ("1.2" or "1.3") into ``out_dir``; return the library path.

    ``engine`` "scripted" plays model files; "llama" runs GGUF models with llama.cpp. The
    emulated ``librknnrt.so`` for vision encoders is built beside it.
    """
    if abi not in DEFAULT_RELEASE:
        raise ValueError(f"unknown ABI {abi!r}; choose one of {', '.join(DEFAULT_RELEASE)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / LIBRARY_NAME
    subprocess.run(_command(abi, release or DEFAULT_RELEASE[abi], out, engine), check=True)
    subprocess.run(_rknn_command(out_dir / RKNN_LIBRARY_NAME), check=True)
    return out


def build_cached(abi: str, release: str | None = None, engine: str = "scripted") -> Path:
    """Return a built emulator, compiling it only when its sources or build command changed."""
    release = release or DEFAULT_RELEASE.get(abi, "")
    digest = hashlib.sha256()
    for name in (*ENGINES[engine], "common.c", *HEADERS, *RKNN_SOURCES):
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(" ".join(_command(abi, release, Path("out"), engine)).encode())
    digest.update(" ".join(_rknn_command(Path("out"))).encode())
    # linked by path: a rebuilt llama.cpp in the same place is a new input
    digest.update(llama_cpp().library.read_bytes())
    target = cache_dir() / f"{engine}-{abi}-{release}-{digest.hexdigest()[:16]}"
    library = target / LIBRARY_NAME
    if library.is_file():
        return library
    with tempfile.TemporaryDirectory() as tmp:
        built = build(abi, Path(tmp), release, engine)
        target.mkdir(parents=True, exist_ok=True)
        for name in (
            RKNN_LIBRARY_NAME,
            LIBRARY_NAME,
        ):  # the RKLLM library last: its presence marks both built
            staging = target / f".{name}.{os.getpid()}"
            shutil.copy2(built.with_name(name), staging)
            staging.replace(target / name)
    return library
