"""Image files and emulated vision encoders for the tests."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from rkllm_runtime.emulator import EmulatedEncoder, build_cached
from rkllm_runtime.vision import RKNNLibrary, find_rknn_library, load_rknn_library


def image_file(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480), kind: str = "JPEG") -> bytes:
    """An encoded image of one colour, as a camera snapshot arrives."""
    data = io.BytesIO()
    Image.new("RGB", size, colour).save(data, kind)
    return data.getvalue()


RED = image_file((230, 20, 20))
BLUE = image_file((20, 30, 220), kind="PNG")


def rknn_library() -> RKNNLibrary:
    """The emulated librknnrt.so, built beside the RKLLM emulator."""
    return load_rknn_library(find_rknn_library(build_cached("1.3")))


def write_encoder(directory: Path, name: str = "qwen3-vl_vision_rk3588.rknn", **fields: object) -> Path:
    """An emulated encoder file (small embeddings unless told)."""
    fields = {"tokens": 16, "embed_size": 64, **fields}
    return EmulatedEncoder(**fields).write(directory / name)  # type: ignore[arg-type]
