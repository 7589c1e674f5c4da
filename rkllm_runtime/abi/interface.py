"""What every ABI module declares, once: its structs, how it takes the callback, what a run may carry.

``abi.v1_2`` and ``abi.v1_3`` are modules that satisfy :class:`ABIModule`; the runtime
asks the module, never the ABI's version, what differs.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ctypes import _CData, _CFunctionType


class ABIModule(Protocol):
    """One ABI's mirror of ``rkllm.h``."""

    @property
    def ABI(self) -> str:
        """``"1.2"`` or ``"1.3"``: for reports, never for a decision."""

    @property
    def PER_RUN_SAMPLING(self) -> bool:
        """A run carries its own sampling and ``max_new_tokens``; without it both are fixed at load."""

    @property
    def RKLLMParam(self) -> type[ctypes.Structure]:
        """The parameters of ``rkllm_init``."""

    @property
    def RKLLMInput(self) -> type[ctypes.Structure]:
        """The input of ``rkllm_run``."""

    @property
    def RKLLMInferParam(self) -> type[ctypes.Structure]:
        """The inference parameters of ``rkllm_run``."""

    def declare(self, lib: ctypes.CDLL) -> None:
        """Set argument and result types of every function the library exports."""

    def init_callback(self, callback: _CFunctionType) -> _CData:
        """What ``rkllm_init`` takes for the result callback (it must live as long as the handle)."""

    def run_limits(
        self, infer: ctypes.Structure, max_new_tokens: int, sampling: Mapping[str, float] | None
    ) -> _CData | None:
        """Put a run's own limits on ``infer`` where :attr:`PER_RUN_SAMPLING` allows, else nothing.

        ``sampling`` holds every field of the runtime's sampling. Returns what must live as long as the run.
        """
