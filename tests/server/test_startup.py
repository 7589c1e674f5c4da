"""rkllm-server's start imports what serving needs: the hub's client and jsonschema wait for their use."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec

import pytest

# What `python -m rkllm_runtime.server` imports before it serves.
STARTUP = "import rkllm_runtime.server.child, rkllm_runtime.server.cli"


@pytest.mark.parametrize("module", ["huggingface_hub", "jsonschema"])
def test_the_server_starts_without_importing(module: str) -> None:
    assert find_spec(module) is not None  # installed: only not imported
    code = f"{STARTUP}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert module not in json.loads(done.stdout)
