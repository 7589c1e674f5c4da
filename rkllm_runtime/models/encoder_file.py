"""A vision encoder file checked before it is loaded: it exists, is an ``.rknn``, suits this chip and model.

rknn-toolkit2 ends an ``.rknn`` file with a JSON description of the model, whose
``target_platform`` names the chip it was converted for (``["rk3588"]``). Where the file says
nothing, the RKNN runtime's own check at load decides (``RKNN_ERR_TARGET_PLATFORM_UNMATCH``).
"""

from __future__ import annotations

import re
from pathlib import Path

from rkllm_runtime.errors import EncoderMismatchError, NoEncoderError
from rkllm_runtime.vision.families import family_named

ENCODER_SUFFIX = ".rknn"
# The description is small and at the very end of the file.
_TAIL_BYTES = 64 * 1024
_PLATFORM = re.compile(rb'target_platform"?\s*[:\s]\s*\[?\s*"?([A-Za-z0-9]+)')


def encoder_platform(path: Path) -> str | None:
    """The chip the encoder file says it was converted for (upper case), or None (blocking read)."""
    with path.open("rb") as stream:
        size = stream.seek(0, 2)
        stream.seek(max(0, size - _TAIL_BYTES))
        tail = stream.read()
    match = _PLATFORM.search(tail)
    return match.group(1).decode().upper() if match else None


def check_encoder_file(path: Path, chip: str | None, model: Path | None = None) -> None:
    """Check an encoder file before it is loaded (blocking).

    Raises :class:`NoEncoderError` unless ``path`` is an ``.rknn`` file, :class:`EncoderMismatchError`
    when it says it is for another chip than ``chip`` (None: not checked), or when both file names
    name a model family and they differ (the vendor's export names each file after its model).
    """
    if path.suffix != ENCODER_SUFFIX:
        raise NoEncoderError(
            f"{path.name} is not a vision encoder: its file name must end in {ENCODER_SUFFIX}"
        )
    if not path.is_file() or path.stat().st_size == 0:
        raise NoEncoderError(f"the vision encoder {path} does not exist or is empty")
    platform = encoder_platform(path)
    if chip is not None and platform is not None and platform != chip.upper():
        raise EncoderMismatchError(
            f"the vision encoder {path.name} was converted for an {platform}, and this board is an {chip}: "
            f"use the {chip} encoder published with the model"
        )
    if model is None:
        return
    encoder_family, model_family = family_named(path.name), family_named(model.name)
    if encoder_family is not None and model_family is not None and encoder_family != model_family:
        raise EncoderMismatchError(
            f"the vision encoder {path.name} is for {encoder_family.name} models, not for {model.name}"
        )
