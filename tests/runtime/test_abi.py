"""What each ABI module declares: how rkllm_init takes the callback and what a run may carry."""

from __future__ import annotations

import ctypes
from dataclasses import asdict

import pytest

from rkllm_runtime.abi.common import LLMResultCallback
from rkllm_runtime.abi.interface import ABIModule
from rkllm_runtime.types import RUNTIME_SAMPLING
from tests.conftest import ABI_MODULES


@pytest.fixture(params=ABI_MODULES.values(), ids=lambda abi: f"abi{abi.ABI}")
def abi(request: pytest.FixtureRequest) -> ABIModule:
    return request.param  # type: ignore[no-any-return]


def test_a_runs_limits_are_set_only_where_the_abi_carries_them(abi: ABIModule) -> None:
    sampling = asdict(RUNTIME_SAMPLING)  # every field, as the runtime fills them
    infer = abi.RKLLMInferParam()
    kept = abi.run_limits(infer, 7, {**sampling, "top_k": 3})
    if abi.PER_RUN_SAMPLING:
        assert infer.max_new_tokens == 7
        assert infer.sampling_params.contents.top_k == 3
        assert infer.sampling_params.contents.temperature == pytest.approx(RUNTIME_SAMPLING.temperature)
        assert kept is not None
    else:
        assert kept is None
        assert bytes(infer) == bytes(abi.RKLLMInferParam())  # nothing was set


def test_a_run_without_its_own_sampling_keeps_the_loaded_one(abi: ABIModule) -> None:
    infer = abi.RKLLMInferParam()
    assert abi.run_limits(infer, 0, None) is None
    if abi.PER_RUN_SAMPLING:
        assert not infer.sampling_params  # NULL: the runtime samples as loaded


def test_the_init_callback_carries_the_result_callback(abi: ABIModule) -> None:
    callback = LLMResultCallback(lambda *_: 0)
    passed = abi.init_callback(callback)
    if isinstance(passed, ctypes._Pointer):  # a struct of callbacks (ABI 1.3)
        assert (
            ctypes.cast(passed.contents.result_callback, ctypes.c_void_p).value
            == ctypes.cast(callback, ctypes.c_void_p).value
        )
    else:
        assert passed is callback
