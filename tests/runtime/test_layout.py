"""The ctypes mirror matches the C header field by field, for each ABI."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from rkllm_runtime.abi import common, v1_2, v1_3
from rkllm_runtime.emulator.build import SOURCE_DIR, compiler

ANONYMOUS = {"_union": "prompt_input"}  # RKLLMInput's anonymous union starts at its first member


def structs(module: ModuleType) -> dict[str, type[ctypes.Structure]]:
    """Every struct a module declares or re-exports, by C name."""
    found = {}
    for source in (common, module):
        for name, value in vars(source).items():
            if isinstance(value, type) and issubclass(value, ctypes.Structure) and name.startswith("RKLLM"):
                found[name] = value
    return found


def c_layout(abi: str, types: dict[str, type[ctypes.Structure]], tmp_path: Path) -> dict[str, int]:
    """sizeof and offsetof of each field as the C compiler lays them out."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "rkllm.h"', "int main(void) {"]
    for name, struct in types.items():
        lines.append(f'printf("{name} %zu\\n", sizeof({name}));')
        for field, *_ in struct._fields_:
            member = ANONYMOUS.get(field, field)
            lines.append(f'printf("{name}.{field} %zu\\n", offsetof({name}, {member}));')
    lines.append("return 0; }")
    source = tmp_path / "layout.c"
    source.write_text("\n".join(lines))
    binary = tmp_path / "layout"
    abi_flag = f"-DRKLLM_ABI={abi.replace('.', '')}"
    subprocess.run([compiler(), abi_flag, f"-I{SOURCE_DIR}", str(source), "-o", str(binary)], check=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.split() for line in output.splitlines())}


@pytest.mark.parametrize(("abi", "module"), [("1.2", v1_2), ("1.3", v1_3)])
def test_ctypes_mirror_matches_header(abi: str, module: ModuleType, tmp_path: Path) -> None:
    types = structs(module)
    expected = c_layout(abi, types, tmp_path)
    actual = {}
    for name, struct in types.items():
        actual[name] = ctypes.sizeof(struct)
        for field, *_ in struct._fields_:
            actual[f"{name}.{field}"] = getattr(struct, field).offset
    assert actual == expected


@pytest.mark.parametrize(
    ("module", "sizes"),
    [
        (v1_2, {"RKLLMParam": 208, "RKLLMInput": 64, "RKLLMInferParam": 32, "RKLLMMultiModalInput": 48}),
        (v1_3, {"RKLLMParam": 184, "RKLLMInput": 160, "RKLLMInferParam": 40, "RKLLMMultiModalInput": 144}),
    ],
)
def test_sizes_match_the_vendor_layout(module: ModuleType, sizes: dict[str, int]) -> None:
    """The sizes the vendor's aarch64 header gives (identical on x86_64)."""
    for name, size in sizes.items():
        assert ctypes.sizeof(getattr(module, name)) == size
    assert ctypes.sizeof(common.RKLLMResult) == 72
    assert ctypes.sizeof(common.RKLLMExtendParam) == 120
