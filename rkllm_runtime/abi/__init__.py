"""Raw ctypes mirrors of ``rkllm.h``, one module per supported ABI.

Runtime releases map to ABIs as follows; anything else has another layout and is refused.
"""

from types import ModuleType

from . import v1_2, v1_3

ABI_BY_RELEASE: dict[str, ModuleType] = {
    "1.2.1": v1_2,
    "1.2.2": v1_2,
    "1.2.3": v1_2,
    "1.3.0": v1_3,
}
SUPPORTED_RELEASES = tuple(ABI_BY_RELEASE)

__all__ = ["ABI_BY_RELEASE", "SUPPORTED_RELEASES", "v1_2", "v1_3"]
