"""Raw ctypes mirrors of ``rkllm.h``, one module per supported ABI.

Which release speaks which ABI is in :mod:`rkllm_runtime.releases`.
"""

from . import v1_2, v1_3

__all__ = ["v1_2", "v1_3"]
