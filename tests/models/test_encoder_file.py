"""Vision encoder files checked before they are loaded."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rkllm_runtime.errors import EncoderMismatchError, NoEncoderError
from rkllm_runtime.models.encoder_file import check_encoder_file, encoder_platform


def rknn_file(path: Path, platform: str | None) -> Path:
    """A file laid out as rknn-toolkit2 writes one: magic, version, the model, then its JSON description."""
    model = b"\x01" * 4096
    description = json.dumps({"target_platform": [platform]} if platform else {"version": "2.3.2"}).encode()
    path.write_bytes(
        b"RKNN\0\0\0\0"
        + struct.pack("<QQ", 6, len(model))
        + model
        + struct.pack("<Q", len(description))
        + description
    )
    return path


def test_the_chip_is_read_from_the_files_description(tmp_path: Path) -> None:
    assert encoder_platform(rknn_file(tmp_path / "a.rknn", "rk3576")) == "RK3576"
    assert encoder_platform(rknn_file(tmp_path / "b.rknn", None)) is None


def test_an_encoder_for_this_chip_or_one_that_does_not_say_passes(tmp_path: Path) -> None:
    check_encoder_file(rknn_file(tmp_path / "a.rknn", "rk3588"), "RK3588")
    check_encoder_file(rknn_file(tmp_path / "b.rknn", None), "RK3588")
    check_encoder_file(rknn_file(tmp_path / "c.rknn", "rk3576"), None)  # not a Rockchip board: not checked


def test_an_encoder_for_another_chip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EncoderMismatchError, match="converted for an RK3576, and this board is an RK3588"):
        check_encoder_file(rknn_file(tmp_path / "a.rknn", "rk3576"), "RK3588")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("vision.onnx", b"onnx", "must end in .rknn"),
        ("missing.rknn", None, "does not exist"),
        ("empty.rknn", b"", "is empty"),
    ],
)
def test_what_is_no_encoder_file_is_refused(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NoEncoderError, match=message):
        check_encoder_file(path, "RK3588")


def test_an_encoder_named_for_another_model_family_is_refused(tmp_path: Path) -> None:
    encoder = rknn_file(tmp_path / "qwen2-vl-2b_vision_rk3588.rknn", "rk3588")
    with pytest.raises(EncoderMismatchError, match="is for qwen2-vl models, not for qwen3-vl-2b"):
        check_encoder_file(encoder, "RK3588", tmp_path / "qwen3-vl-2b-instruct_w8a8_rk3588.rkllm")
    check_encoder_file(encoder, "RK3588", tmp_path / "qwen2-vl-2b-instruct_w8a8_rk3588.rkllm")
    check_encoder_file(encoder, "RK3588", tmp_path / "my-model.rkllm")  # the model's name says nothing
