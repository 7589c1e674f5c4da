"""Both engines offer every member of the engine protocol, read from the protocol itself.

The local side is the integration's :class:`LocalEngine` (the chat engine with what Home Assistant's
process adds: availability, the NPU, diagnostics), so this file needs Home Assistant installed.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, get_type_hints

import aiohttp
import pytest

from custom_components.rkllm.local_engine import LocalEngine
from rkllm_runtime import RKLLMRuntime
from rkllm_runtime.chat.contract import ModelEngine
from rkllm_runtime.emulator import build_cached
from rkllm_runtime.remote.client import RemoteEngine
from tests.conftest import ABIS, ModelFactory

MEMBERS = sorted(name for name in vars(ModelEngine) if not name.startswith("_"))
PROPERTIES = [name for name in MEMBERS if isinstance(vars(ModelEngine)[name], property)]
METHODS = [name for name in MEMBERS if name not in PROPERTIES]


@pytest.fixture(params=["local", "remote"])
async def engine(request: pytest.FixtureRequest, make_model: ModelFactory) -> AsyncIterator[Any]:
    if request.param == "local":  # on the newest ABI: the members do not depend on it
        local = LocalEngine(RKLLMRuntime.open(build_cached(ABIS[-1]), make_model()))
        yield local
        await local.aclose()
    else:
        async with aiohttp.ClientSession() as session:  # never used: nothing here asks the server
            yield RemoteEngine(session, "http://127.0.0.1:9", "model.rkllm", None)


def test_the_members_are_read_from_the_protocol() -> None:
    assert MEMBERS == [
        "aclose",
        "add_listener",
        "available",
        "chat",
        "closed",
        "diagnostics",
        "evaluate",
        "read_npu",
        "state",
        "stats",
        "status",
        "warm",
    ]


@pytest.mark.parametrize("name", PROPERTIES)
def test_each_property_has_the_declared_type(engine: Any, name: str) -> None:
    declared = get_type_hints(vars(ModelEngine)[name].fget)["return"]
    assert isinstance(getattr(engine, name), declared)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_takes_the_declared_parameters(engine: Any, name: str) -> None:
    declared = vars(ModelEngine)[name]
    method = getattr(engine, name)
    assert inspect.iscoroutinefunction(method) is inspect.iscoroutinefunction(declared)
    expected = list(inspect.signature(declared).parameters)[1:]  # without self
    assert list(inspect.signature(method).parameters) == expected
