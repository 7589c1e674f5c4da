"""A model's first load in a child process: the header it logs is compared with the board and runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rkllm_runtime.emulator import EmulatedModel, build_cached
from rkllm_runtime.errors import ModelIncompatibleError, ModelRejectedError, NotAModelError
from rkllm_runtime.models import ModelHeader, check_model, parse_header


def test_the_vendor_header_line_is_parsed() -> None:
    lines = [
        "I rkllm: rkllm-runtime version: 1.2.3, rknpu driver version: 0.9.8, platform: RK3576",
        "I rkllm: rkllm-toolkit version: 1.2.3, max_context_limit: 4096, npu_core_num: 2, "
        "target_platform: RK3576, model_dtype: W4A16",
    ]
    assert parse_header(lines) == ModelHeader("1.2.3", 4096, 2, "RK3576", "W4A16")
    assert parse_header(lines[:1]) is None


def test_a_matching_file_passes_and_is_checked_only_once(tmp_path: Path) -> None:
    library = build_cached("1.3")
    model = EmulatedModel(toolkit_version="1.3.0", max_context=8192).write(tmp_path / "m.rkllm")
    header = check_model(library, model, chip="RK3588", verdicts=tmp_path / "verdicts")
    assert header == ModelHeader("1.3.0", 8192, 3, "RK3588", "W8A8")
    assert len(list((tmp_path / "verdicts").iterdir())) == 1
    model.chmod(0)  # a second check would have to read it: the kept verdict answers instead
    try:
        assert check_model(library, model, chip="RK3588", verdicts=tmp_path / "verdicts") == header
    finally:
        model.chmod(0o644)


def test_a_file_of_another_release_is_refused_naming_the_runtime_it_needs(tmp_path: Path) -> None:
    # The emulator crashes on it, as the vendor runtime does: only the child dies.
    model = EmulatedModel(toolkit_version="1.1.4").write(tmp_path / "old.rkllm")
    with pytest.raises(ModelIncompatibleError, match=r"needs runtime 1\.1\.x") as caught:
        check_model(build_cached("1.2"), model, chip=None)
    assert caught.value.needs == "runtime 1.1.x"


def test_a_file_for_another_chip_is_refused_naming_the_chip(tmp_path: Path) -> None:
    model = EmulatedModel(target_platform="RK3576", npu_core_num=2).write(tmp_path / "rk3576.rkllm")
    with pytest.raises(ModelIncompatibleError, match="converted for an RK3576, and this board is an RK3588"):
        check_model(build_cached("1.2"), model, chip="RK3588", verdicts=tmp_path)
    assert list(tmp_path.glob("*.json")) == []


def test_a_file_the_runtime_rejects_is_reported_with_its_error(tmp_path: Path) -> None:
    model = EmulatedModel(init_fail=True).write(tmp_path / "bad.rkllm")
    with pytest.raises(ModelRejectedError, match="rejected"):
        check_model(build_cached("1.2"), model, chip=None)


def test_a_context_larger_than_the_file_was_converted_for_is_refused_naming_its_limit(tmp_path: Path) -> None:
    model = EmulatedModel(max_context=4096).write(tmp_path / "m.rkllm")
    with pytest.raises(ModelIncompatibleError, match="at most 4096 tokens: set the context length") as caught:
        check_model(build_cached("1.3"), model, chip=None, max_context_len=8192)
    assert caught.value.needs == "a context of at most 4096 tokens"
    assert check_model(build_cached("1.3"), model, chip=None, max_context_len=4096) is not None


def _truncated(path: Path) -> None:
    whole = EmulatedModel().write(path).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


# Files that are no model, and what the error says of each.
NOT_MODELS: dict[str, tuple[Callable[[Path], object], str]] = {
    "random bytes": (
        lambda path: path.write_bytes(os.urandom(64 * 1024)),
        "is not a model for the RKLLM runtime",
    ),
    "a truncated .rkllm": (_truncated, "is not a model for the RKLLM runtime"),
    "a GGUF": (
        lambda path: path.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096)),
        r"is not a model for the RKLLM runtime [\d.]+ \(it is a GGUF file, for llama\.cpp\)",
    ),
    "an empty file": (lambda path: path.write_bytes(b""), "is empty, not a model file"),
    "a folder": (lambda path: path.mkdir(), "is a folder, not a model file"),
}


@pytest.mark.parametrize("kind", NOT_MODELS)
def test_a_file_that_is_no_model_is_named_so(tmp_path: Path, kind: str) -> None:
    """The runtime echoes what it read of such a file on stderr: bytes, not text."""
    make, said = NOT_MODELS[kind]
    path = tmp_path / "model.rkllm"
    make(path)
    with pytest.raises(NotAModelError, match=said) as caught:
        check_model(build_cached("1.3"), path, chip="RK3588", verdicts=tmp_path / "verdicts")
    assert str(caught.value).isprintable()
    assert not (tmp_path / "verdicts").exists()
