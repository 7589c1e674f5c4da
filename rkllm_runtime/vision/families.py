"""Vision model families: how each marks an image in its prompt, and how many images it reads at once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from rkllm_runtime.types import ImageTags

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VisionFamily:
    """What a family of vision-language models expects."""

    name: str
    tags: ImageTags
    max_images: int = 1
    """Images one request may carry. One unless the family is known to keep several apart
    (Qwen3-VL blends two images into one, rknn-llm #493)."""
    pad: tuple[int, int, int] = (127, 127, 127)
    """The colour an image is padded to a square with (the vendor demo's 127.5 grey)."""


_QWEN = ImageTags("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
FAMILIES = {
    family.name: family
    for family in (
        VisionFamily("qwen2-vl", _QWEN),
        VisionFamily("qwen2.5-vl", _QWEN),
        VisionFamily("qwen3-vl", _QWEN),
        VisionFamily("qwen3.5", _QWEN),
        VisionFamily("minicpm-v", ImageTags("<image>", "</image>", "<unk>")),
        VisionFamily("internvl3", ImageTags("<img>", "</img>", "<IMG_CONTEXT>")),
        VisionFamily(
            "smolvlm",
            ImageTags("<fake_token_around_image><global-img>", "<fake_token_around_image>", "<image>"),
        ),
        VisionFamily("deepseekocr", ImageTags("", "", "<\uff5c\u2581pad\u2581\uff5c>")),
    )
}
DEFAULT_FAMILY = FAMILIES["qwen2-vl"]
"""For an encoder whose family cannot be told: the tags the vendor demo uses by default."""

# How file names spell each family (the vendor's export names files after the model).
_SPELLINGS = [
    (re.compile(r"qwen3[._-]?5"), "qwen3.5"),
    (re.compile(r"qwen3[._-]?vl"), "qwen3-vl"),
    (re.compile(r"qwen2[._-]5[._-]?vl"), "qwen2.5-vl"),
    (re.compile(r"qwen2[._-]?vl"), "qwen2-vl"),
    (re.compile(r"minicpm[._-]?v"), "minicpm-v"),
    (re.compile(r"internvl"), "internvl3"),
    (re.compile(r"smolvlm"), "smolvlm"),
    (re.compile(r"deepseek[._-]?ocr"), "deepseekocr"),
]


def family_named(text: str) -> VisionFamily | None:
    """The family a name spells (a custom string, a file name), or None."""
    lowered = text.lower()
    return next((FAMILIES[name] for pattern, name in _SPELLINGS if pattern.search(lowered)), None)


def tags_for(encoder: Path | None) -> ImageTags | None:
    """The image tags of a model with this encoder file, told from its name (ABI 1.2 sets them at load).

    None without an encoder: a text-only model.
    """
    return None if encoder is None else (family_named(encoder.name) or DEFAULT_FAMILY).tags


def encoder_family(custom_string: str, file_name: str) -> VisionFamily:
    """An encoder's family: from its custom string, else its file name, else the vendor's default."""
    family = family_named(custom_string) or family_named(file_name)
    if family is None:
        _LOGGER.warning(
            "Cannot tell the model family of %s; using the %s image tags", file_name, DEFAULT_FAMILY.name
        )
        return DEFAULT_FAMILY
    return family
