"""Vision encoders on the RKNN runtime (``librknnrt.so``): camera snapshots into image embeddings.

:class:`~.encoder.VisionEncoder` is the typed API and needs Pillow (the ``vision`` extra), so it
is imported from :mod:`.encoder`; this package itself (families, the library) does not need it.
:mod:`.api` is the raw ctypes mirror of ``rknn_api.h``.
"""

from .families import FAMILIES, VisionFamily, encoder_family, family_named, tags_for
from .library import RKNNLibrary, find_rknn_library, load_rknn_library

__all__ = [
    "FAMILIES",
    "RKNNLibrary",
    "VisionFamily",
    "encoder_family",
    "family_named",
    "find_rknn_library",
    "load_rknn_library",
    "tags_for",
]
