"""Raw ctypes mirrors of ``rkllm.h``, one module per supported ABI.

Each module satisfies :class:`~rkllm_runtime.abi.interface.ABIModule` (its structs and
capabilities); :class:`~rkllm_runtime.abi.functions.RKLLMFunctions` calls a loaded library
with one typed method per C function. Which release speaks which ABI is in
:mod:`rkllm_runtime.releases`.
"""

from . import v1_2, v1_3

__all__ = ["v1_2", "v1_3"]
