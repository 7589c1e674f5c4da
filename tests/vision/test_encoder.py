"""The vision encoder binding, through the real ctypes path into the emulated librknnrt.so."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest

from rkllm_runtime.errors import (
    ClosedError,
    EncoderFailedError,
    EncoderMismatchError,
    LibraryNotFoundError,
    NoEncoderError,
    NotALibraryError,
)
from rkllm_runtime.vision import api, find_rknn_library, load_rknn_library
from rkllm_runtime.vision.encoder import VisionEncoder
from tests.images import BLUE, RED, image_file, rknn_library, write_encoder


def rows(values: bytes, embed_size: int) -> list[tuple[float, ...]]:
    floats = struct.unpack(f"{len(values) // 4}f", values)
    return [floats[i : i + embed_size] for i in range(0, len(floats), embed_size)]


def test_the_tensor_attrs_describe_the_encoder(tmp_path: Path) -> None:
    path = write_encoder(tmp_path, tokens=196, embed_size=1024, memory_mb=800, height=392, width=448)
    with VisionEncoder.open(rknn_library(), path) as encoder:
        info = encoder.info
        assert (info.width, info.height, info.planar) == (448, 392, False)
        assert (info.n_tokens, info.embed_size) == (196, 1024)
        assert info.family.name == "qwen3-vl"
        assert info.family.tags.content == "<|image_pad|>"
        assert info.memory_mb == pytest.approx(800, abs=0.01)
        assert info.sdk_version.startswith("2.3.2")


def test_an_image_becomes_rows_of_the_embedding_size(tmp_path: Path) -> None:
    with VisionEncoder.open(rknn_library(), write_encoder(tmp_path, encode_ms=690)) as encoder:
        red = encoder.encode(RED)
        assert (red.n_tokens, red.embed_size, red.width, red.height) == (16, 64, 448, 448)
        assert len(red.values) == 16 * 64 * 4
        assert encoder.last_run_ms == 690  # the runtime's own figure, at RK3588 speed
        assert encoder.encode(RED) == red  # deterministic
        blue = encoder.encode(BLUE)
        panorama = encoder.encode(image_file((230, 20, 20), (800, 200)))
    centre = rows(red.values, 64)[5]  # a patch inside the picture
    assert centre[0] == 64  # each row starts with its length
    assert centre[1] > 0.85
    assert centre[3] < 0.15
    assert rows(blue.values, 64)[5][3] > 0.8
    top = rows(panorama.values, 64)[0]  # padded to a square with the vendor demo's grey
    assert top[1:4] == pytest.approx((127 / 255,) * 3, abs=0.01)


def test_a_planar_input_reads_the_same_pixels(tmp_path: Path) -> None:
    library = rknn_library()
    with (
        VisionEncoder.open(library, write_encoder(tmp_path, name="a.rknn")) as nhwc,
        VisionEncoder.open(library, write_encoder(tmp_path, name="b.rknn", input_format="NCHW")) as nchw,
    ):
        assert nchw.info.planar
        assert not nhwc.info.planar
        assert nchw.encode(RED).values == nhwc.encode(RED).values


def test_the_family_comes_from_the_file_name_without_a_custom_string(tmp_path: Path) -> None:
    path = write_encoder(tmp_path, name="SmolVLM-256M_vision_rk3588.rknn", family="")
    with VisionEncoder.open(rknn_library(), path) as encoder:
        assert encoder.info.family.name == "smolvlm"


def test_a_missing_encoder_is_named(tmp_path: Path) -> None:
    with pytest.raises(NoEncoderError, match=r"gone\.rknn does not exist"):
        VisionEncoder.open(rknn_library(), tmp_path / "gone.rknn")


def test_a_corrupt_encoder_is_refused_with_the_vendor_code(tmp_path: Path) -> None:
    path = tmp_path / "broken.rknn"
    path.write_bytes(b"RKNN\x00\x01 cut short")
    with pytest.raises(EncoderFailedError, match=r"-6 \(RKNN_ERR_MODEL_INVALID"):
        VisionEncoder.open(rknn_library(), path)


def test_an_encoder_for_another_chip_is_refused(tmp_path: Path) -> None:
    path = write_encoder(tmp_path, target_platform="RK3576")
    with pytest.raises(EncoderMismatchError, match="another chip"):
        VisionEncoder.open(rknn_library(), path)


def test_a_closed_encoder_refuses_images(tmp_path: Path) -> None:
    encoder = VisionEncoder.open(rknn_library(), write_encoder(tmp_path))
    encoder.close()
    encoder.close()
    with pytest.raises(ClosedError):
        encoder.encode(RED)


def test_the_library_is_looked_for_beside_the_rkllm_one(tmp_path: Path) -> None:
    with pytest.raises(LibraryNotFoundError, match=r"librknnrt\.so"):
        find_rknn_library(tmp_path / "librkllmrt.so")
    (tmp_path / "librknnrt.so").write_text("not a library")
    assert find_rknn_library(tmp_path / "librkllmrt.so") == tmp_path / "librknnrt.so"
    with pytest.raises(NotALibraryError):
        load_rknn_library(tmp_path / "librknnrt.so")


class Raw:
    """The C interface itself, as the vendor's demo drives it."""

    def __init__(self, path: Path) -> None:
        self.lib = rknn_library().cdll
        self.context = api.rknn_context()
        assert self.lib.rknn_init(ctypes.byref(self.context), str(path).encode(), 0, 0, None) == 0

    def set_input(self, data: bytes, kind: api.RKNNTensorType = api.RKNNTensorType.RKNN_TENSOR_UINT8) -> int:
        buffer = ctypes.create_string_buffer(data, len(data))
        tensor = api.RKNNInput(0, ctypes.cast(buffer, ctypes.c_void_p), len(data), 0, kind, 1)
        return int(self.lib.rknn_inputs_set(self.context.value, 1, ctypes.byref(tensor)))


def test_the_emulated_library_refuses_what_the_vendor_refuses(tmp_path: Path) -> None:
    raw = Raw(write_encoder(tmp_path, height=8, width=8))
    lib, context = raw.lib, raw.context.value
    assert lib.rknn_run(context, None) == -8  # no input yet
    assert raw.set_input(b"\0" * (8 * 8 * 3 - 1)) == -8  # one byte short: RKNN_ERR_INPUT_INVALID
    assert raw.set_input(b"\0" * 8 * 8 * 3, api.RKNNTensorType.RKNN_TENSOR_INT16) == -8
    counts = api.RKNNInputOutputNum()
    assert lib.rknn_query(context, api.RKNNQueryCmd.RKNN_QUERY_IN_OUT_NUM, ctypes.byref(counts), 4) == -5
    assert raw.set_input(b"\x80" * 8 * 8 * 3) == 0
    output = api.RKNNOutput(1, 1, 0, None, 0)
    assert lib.rknn_outputs_get(context, 1, ctypes.byref(output), None) == -1  # not run yet
    assert lib.rknn_run(context, None) == 0
    small = ctypes.create_string_buffer(16)
    output = api.RKNNOutput(1, 1, 0, ctypes.cast(small, ctypes.c_void_p), 16)
    assert lib.rknn_outputs_get(context, 1, ctypes.byref(output), None) == -9  # RKNN_ERR_OUTPUT_INVALID
    output = api.RKNNOutput(1, 0, 0, None, 0)  # the runtime allocates, and frees on release
    assert lib.rknn_outputs_get(context, 1, ctypes.byref(output), None) == 0
    assert output.size == 16 * 64 * 4
    assert lib.rknn_outputs_release(context, 1, ctypes.byref(output)) == 0
    assert lib.rknn_destroy(context) == 0
    assert lib.rknn_run(context, None) == -7  # RKNN_ERR_CTX_INVALID


def test_float_pixels_are_taken_as_the_same_image(tmp_path: Path) -> None:
    raw = Raw(write_encoder(tmp_path, height=4, width=4))
    pixels = bytes([200, 10, 10] * 16)
    assert raw.set_input(struct.pack(f"{len(pixels)}f", *pixels), api.RKNNTensorType.RKNN_TENSOR_FLOAT32) == 0
    assert raw.lib.rknn_run(raw.context.value, None) == 0
    assert raw.lib.rknn_destroy(raw.context.value) == 0


def test_a_snapshot_of_any_size_fits_the_input(tmp_path: Path) -> None:
    with VisionEncoder.open(rknn_library(), write_encoder(tmp_path, height=64, width=64)) as encoder:
        for size in ((1920, 1080), (300, 900), (1, 1)):
            assert encoder.encode(image_file((0, 200, 0), size)).width == 64
