"""Every way loading the library or the model can fail gives its own clear error."""

from __future__ import annotations

import os
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
    VersionMismatchError,
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
    path.write_bytes(bytes(header) + b"RKLLM SDK (version: 1.2.3 | target: Linux | build: f8ca3ae8)\0")
    return path


def test_embedded_version_is_read(emulator_library: Path) -> None:
    assert embedded_version(emulator_library) in ("1.2.3", "1.3.1")
    library = load_library(emulator_library)
    assert library.release == embedded_version(emulator_library)
    assert library.abi_version == library.release[:3]
    assert library.has("rkllm_get_kv_cache_size")
    assert library.has("rkllm_set_function_tools")


@pytest.mark.parametrize(("release", "abi"), [("1.2.1", "1.2"), ("1.2.2", "1.2"), ("1.3.0", "1.3")])
def test_the_vendor_banner_names_release_and_abi(release: str, abi: str) -> None:
    """The emulator carries the vendor's banner and init format string, never a literal version line."""
    path = build_cached(abi, release)
    binary = path.read_bytes()
    assert f"RKLLM SDK (version: {release} | target: Linux | build: ".encode() in binary
    assert b"I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s" in binary
    assert f"rkllm-runtime version: {release}".encode() not in binary
    library = load_library(path)
    assert (library.release, library.abi_version) == (release, abi)


@pytest.mark.parametrize(
    ("banner", "found"),
    [
        (b"RKLLM SDK (version: 1.2.0 | target: Linux | build: f8ca3ae8 2025-04-08)", "1.2.0"),
        (b"RKLLM SDK (version: 1.2.1b1 | target: Linux | build: 0123abcd)", "1.2.1b1"),
        (b"RKLLM SDK (version: 1.3.1 | target: Linux | build: f739053)", "1.3.1"),
        (b"I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s", None),
    ],
)
def test_banner_parsing(tmp_path: Path, banner: bytes, found: str | None) -> None:
    path = tmp_path / "librkllmrt.so"
    path.write_bytes(b"\x7fELF" + b"\0" * 60 + banner + b"\0")
    assert embedded_version(path) == found


def test_1_3_0_warns_about_the_rk3588_crash(caplog: pytest.LogCaptureFixture) -> None:
    library = load_library(build_cached("1.3", "1.3.0"))
    assert library.warning is not None
    assert "Illegal instruction" in library.warning
    assert "#518" in library.warning
    assert "1.2.3 or 1.3.1" in library.warning
    assert "Illegal instruction" in caplog.text
    assert load_library(build_cached("1.3", "1.3.1")).warning is None


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


@pytest.mark.parametrize("release", ["1.2.0", "1.2.1b1"])
def test_releases_with_the_old_layout_are_refused_naming_the_working_ones(release: str) -> None:
    library = build_cached("1.2", release)
    with pytest.raises(UnsupportedVersionError) as err:
        load_library(library)
    message = str(err.value)
    assert f"{release} is not supported" in message
    assert "two arguments" in message
    assert "install one of: 1.2.1, 1.2.2, 1.2.3, 1.3.1" in message
    assert err.value.found == release


def test_unknown_release_is_refused() -> None:
    with pytest.raises(UnsupportedVersionError, match=r"1\.1\.4 is not supported; install one of"):
        load_library(build_cached("1.2", "1.1.4"))


def test_release_override_applies_only_without_a_banner(tmp_path: Path, make_model: ModelFactory) -> None:
    """The override names the release of a library without a banner; it never overrules one."""
    banner = b"RKLLM SDK (version: 1.2.3 |"
    stripped = tmp_path / "librkllmrt.so"
    data = build_cached("1.2").read_bytes()
    stripped.write_bytes(data.replace(banner, b"X" * len(banner)))
    with pytest.raises(UnsupportedVersionError, match="no version banner"):
        load_library(stripped)
    library = load_library(stripped, release="1.2.2")
    assert (library.release, library.abi_version) == ("1.2.2", "1.2")
    with RKLLMRuntime(library, make_model(Rule(reply="ok"))) as runtime:
        assert runtime.run(Prompt("hi")).text == "ok"
    assert load_library(build_cached("1.2"), release="1.2.3").release == "1.2.3"  # agreeing is fine


@pytest.mark.parametrize(("abi", "override"), [("1.2", "1.3.0"), ("1.3", "1.2.3")])
def test_override_disagreeing_with_the_banner_is_refused(abi: str, override: str) -> None:
    """Loading a 1.2 library with the 1.3 layout (or the reverse) would crash in rkllm_run."""
    with pytest.raises(VersionMismatchError, match="clear the runtime release setting") as err:
        load_library(build_cached(abi), release=override)
    assert err.value.configured == override
    assert err.value.embedded == {"1.2": "1.2.3", "1.3": "1.3.1"}[abi]


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
