"""Vision encoders on the RKNN runtime (``librknnrt.so``): camera snapshots into image embeddings.

:class:`VisionEncoder` is the typed API; :mod:`.api` the raw ctypes mirror of ``rknn_api.h``.
Needs Pillow (the ``vision`` extra).
"""

from rkllm_runtime.types import ImageEmbedding

from .encoder import EncoderInfo, VisionEncoder
from .families import FAMILIES, VisionFamily, encoder_family, family_named, tags_for
from .library import RKNNLibrary, find_rknn_library, load_rknn_library

__all__ = [
    "FAMILIES",
    "EncoderInfo",
    "ImageEmbedding",
    "RKNNLibrary",
    "VisionEncoder",
    "VisionFamily",
    "encoder_family",
    "family_named",
    "find_rknn_library",
    "load_rknn_library",
    "tags_for",
]
