"""Every way loading the library or the model can fail gives its own clear error."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rkllm_runtime import (
    InsufficientMemoryError,
    LibraryNotFoundError,
    ModelNotFoundError,
    ModelParams,
    ModelRejectedError,
    NotALibraryError,
    Prompt,
    RKLLMRuntime,
    UnsupportedVersionError,
    WrongArchitectureError,
    load_library,
)
from rkllm_runtime.emulator import Rule, build_cached
from rkllm_runtime.library import embedded_version
from tests.conftest import ModelFactory


def fake_elf(path: Path, machine: int) -> Path:
    """An ELF header for another architecture (e.g. the real aarch64 runtime)."""
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1  # 64-bit, little-endian, version 1
    header[16:18] = (3).to_bytes(2, "little")  # ET_DYN
    header[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(header) + b"rkllm-runtime version: 1.2.3\0")
    return path


def test_embedded_version_is_read(emulator_library: Path) -> None:
    assert embedded_version(emulator_library) in ("1.2.3", "1.3.0")
    library = load_library(emulator_library)
    assert library.release == embedded_version(emulator_library)
    assert library.abi_version == library.release[:3]


def test_missing_library(tmp_path: Path) -> None:
    with pytest.raises(LibraryNotFoundError, match="does not exist"):
        load_library(tmp_path / "librkllmrt.so")


def test_not_an_elf_file(tmp_path: Path) -> None:
    path = tmp_path / "librkllmrt.so"
    path.write_text("not a library")
    with pytest.raises(NotALibraryError, match="not an ELF shared library"):
        load_library(path)


def test_wrong_architecture(tmp_path: Path) -> None:
    with pytest.raises(WrongArchitectureError, match=r"built for aarch64 but this machine is x86_64") as err:
        load_library(fake_elf(tmp_path / "librkllmrt.so", machine=183))
    assert err.value.found == "aarch64"


@pytest.mark.parametrize("release", ["1.2.0", "1.1.4"])
def test_unsupported_release_is_refused_before_init(release: str) -> None:
    library = build_cached("1.2", release)
    with pytest.raises(
        UnsupportedVersionError, match=rf"{re.escape(release)} is not supported; supported releases: 1\.2\.1"
    ):
        load_library(library)


def test_release_override(make_model: ModelFactory) -> None:
    """A caller that knows better can name the release of a library that embeds another."""
    library = load_library(build_cached("1.2", "1.2.0"), release="1.2.2")
    assert library.abi_version == "1.2"
    with RKLLMRuntime(library, make_model(Rule(reply="ok"))) as runtime:
        assert runtime.run(Prompt("hi")).text == "ok"
    with pytest.raises(UnsupportedVersionError, match=r"9\.9\.9"):
        load_library(build_cached("1.3"), release="9.9.9")


def test_missing_model(emulator_library: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        RKLLMRuntime.open(emulator_library, tmp_path / "missing.rkllm")


def test_corrupt_model_is_rejected(emulator_library: Path, tmp_path: Path) -> None:
    model = tmp_path / "corrupt.rkllm"
    model.write_bytes(os.urandom(256))
    with pytest.raises(ModelRejectedError, match="rejected"):
        RKLLMRuntime.open(emulator_library, model)


def test_context_above_the_model_limit(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(max_context=1024)
    with pytest.raises(ModelRejectedError):
        RKLLMRuntime.open(emulator_library, model, ModelParams(max_context_len=4096))


def test_init_failure(emulator_library: Path, make_model: ModelFactory) -> None:
    with pytest.raises(ModelRejectedError):
        RKLLMRuntime.open(emulator_library, make_model(init_fail=True))


def test_out_of_npu_memory(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_NPU_MEMORY_MB", "2000")
    first = RKLLMRuntime.open(emulator_library, make_model(npu_memory_mb=1500))
    with pytest.raises(ModelRejectedError):
        RKLLMRuntime.open(emulator_library, make_model(npu_memory_mb=1500))
    first.close()
    RKLLMRuntime.open(emulator_library, make_model(npu_memory_mb=1500)).close()


def test_not_enough_memory_is_checked_before_loading(emulator_library: Path, tmp_path: Path) -> None:
    model = tmp_path / "huge.rkllm"
    with model.open("wb") as file:  # sparse: takes no disk space
        file.truncate(2**40)
    with pytest.raises(InsufficientMemoryError, match=r"needs about \d+ MB but only \d+ MB"):
        RKLLMRuntime.open(emulator_library, model)
