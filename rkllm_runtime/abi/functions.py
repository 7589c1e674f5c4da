"""Typed calls into a loaded ``librkllmrt.so``: one method per C function of ``rkllm.h``.

Each method returns what the C function returns (0 or -1 for a status): the caller,
which knows what it asked for, raises the error of that kind.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from .common import LLMHandle, RKLLMLoraAdapter
from .interface import ABIModule

if TYPE_CHECKING:
    from ctypes import _CData


class RKLLMFunctions:
    """The library's functions, declared for its ABI."""

    def __init__(self, cdll: ctypes.CDLL, abi: ABIModule) -> None:
        abi.declare(cdll)
        self._cdll = cdll

    def create_default_param(self) -> ctypes.Structure:
        """``rkllm_createDefaultParam()``: the runtime's own defaults."""
        param: ctypes.Structure = self._cdll.rkllm_createDefaultParam()
        return param

    def init(self, handle: LLMHandle, param: ctypes.Structure, callback: _CData) -> int:
        """``rkllm_init``: load the model named by ``param`` into ``handle``."""
        return int(self._cdll.rkllm_init(ctypes.byref(handle), ctypes.byref(param), callback))

    def run(self, handle: LLMHandle, input_: ctypes.Structure, infer: ctypes.Structure) -> int:
        """``rkllm_run``: blocks until the run ends (no userdata)."""
        return int(self._cdll.rkllm_run(handle, ctypes.byref(input_), ctypes.byref(infer), None))

    def abort(self, handle: LLMHandle) -> int:
        """``rkllm_abort``: ask the running ``rkllm_run`` to stop."""
        return int(self._cdll.rkllm_abort(handle))

    def is_running(self, handle: LLMHandle) -> bool:
        """``rkllm_is_running``."""
        return bool(self._cdll.rkllm_is_running(handle))

    def destroy(self, handle: LLMHandle) -> int:
        """``rkllm_destroy``: free the handle."""
        return int(self._cdll.rkllm_destroy(handle))

    def clear_kv_cache(
        self, handle: LLMHandle, keep_system_prompt: bool, positions: tuple[int, int] | None = None
    ) -> int:
        """``rkllm_clear_kv_cache``, of the whole cache or of the positions ``[start, end)``."""
        if positions is None:
            return int(self._cdll.rkllm_clear_kv_cache(handle, int(keep_system_prompt), None, None))
        start, end = (ctypes.byref(ctypes.c_int(position)) for position in positions)
        return int(self._cdll.rkllm_clear_kv_cache(handle, int(keep_system_prompt), start, end))

    def get_kv_cache_size(self, handle: LLMHandle, sizes: ctypes.Array[ctypes.c_int]) -> int:
        """``rkllm_get_kv_cache_size``: the tokens held per batch slot, into ``sizes``."""
        return int(self._cdll.rkllm_get_kv_cache_size(handle, sizes))

    def load_prompt_cache(self, handle: LLMHandle, path: bytes) -> int:
        """``rkllm_load_prompt_cache``."""
        return int(self._cdll.rkllm_load_prompt_cache(handle, path))

    def release_prompt_cache(self, handle: LLMHandle) -> int:
        """``rkllm_release_prompt_cache``."""
        return int(self._cdll.rkllm_release_prompt_cache(handle))

    def set_chat_template(
        self, handle: LLMHandle, system_prompt: bytes, prefix: bytes, postfix: bytes
    ) -> int:
        """``rkllm_set_chat_template``."""
        return int(self._cdll.rkllm_set_chat_template(handle, system_prompt, prefix, postfix))

    def set_function_tools(
        self, handle: LLMHandle, system_prompt: bytes, tools: bytes, tool_response: bytes
    ) -> int:
        """``rkllm_set_function_tools``."""
        return int(self._cdll.rkllm_set_function_tools(handle, system_prompt, tools, tool_response))

    def load_lora(self, handle: LLMHandle, adapter: RKLLMLoraAdapter) -> int:
        """``rkllm_load_lora``."""
        return int(self._cdll.rkllm_load_lora(handle, ctypes.byref(adapter)))
