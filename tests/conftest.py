"""Fixtures shared by every test: emulator builds and model files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rkllm_runtime.abi import v1_2, v1_3
from rkllm_runtime.abi.interface import ABIModule
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.emulator.real_model import MissingAssetError, smollm2_model
from rkllm_runtime.emulator.tokenizer_json import tokenizer_json

ABI_MODULES: dict[str, ABIModule] = {module.ABI: module for module in (v1_2, v1_3)}
ABIS = tuple(ABI_MODULES)

ModelFactory = Callable[..., Path]


def call(tool: str, **arguments: Any) -> str:
    """A tool call as the model writes it."""
    return f"<tool_call>\n{json.dumps({'name': tool, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture(params=ABIS, ids=lambda abi: f"abi{abi}")
def emulator_library(request: pytest.FixtureRequest) -> Path:
    """The emulator built for each supported ABI (cached by source hash)."""
    return build_cached(request.param)


def abis_with(capability: Callable[[ABIModule], bool]) -> pytest.MarkDecorator:
    """Run a test on the emulator of each ABI that has ``capability``, and on no other."""
    abis = [abi for abi, module in ABI_MODULES.items() if capability(module)]
    return pytest.mark.parametrize("emulator_library", abis, indirect=True, ids=lambda abi: f"abi{abi}")


@pytest.fixture
def make_model(tmp_path: Path) -> ModelFactory:
    """Write an emulator model file: ``make_model(Rule(...), ..., name="x", **model_fields)``."""
    counter = 0

    def factory(*rules: Rule, **fields: object) -> Path:
        nonlocal counter
        counter += 1
        return EmulatedModel(rules=list(rules), **fields).write(tmp_path / f"model{counter}.rkllm")  # type: ignore[arg-type]

    return factory


@dataclass(frozen=True)
class RealModel:
    """The emulator's llama.cpp engine and a real GGUF model for it."""

    library: Path
    model: Path


@pytest.fixture(scope="session")
def real_model() -> RealModel:
    """The llama.cpp-engine emulator and SmolLM2, from the assets set-up installed (never fetched)."""
    try:
        return RealModel(build_cached("1.3", engine="llama"), smollm2_model())
    except MissingAssetError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def qwen_vocabulary(tmp_path: Path) -> Path:
    """Qwen2.5's tokenizer.json (converted by set-up from the scripted engine's own vocabulary) in the
    folder ``make_model`` writes to, so emulated models have their vocabulary beside them."""
    try:
        source = tokenizer_json()
    except MissingAssetError as err:
        pytest.fail(str(err), pytrace=False)
    target = tmp_path / "tokenizer.json"
    target.symlink_to(source)
    return target
