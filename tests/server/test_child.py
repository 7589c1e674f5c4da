"""rkllm-server as a child process: it never outlives its parent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rkllm_runtime.server.child import is_alive


def test_the_child_dies_with_its_parent(library: Path, model_file: Path) -> None:
    """A killed parent (as Home Assistant killed by the OOM killer) leaves no child behind."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from rkllm_runtime.chat import KVMode\n"
        "from rkllm_runtime.server.child import ServerProcess\n"
        "from rkllm_runtime.types import ModelParams\n"
        "async def main():\n"
        "    child = ServerProcess(Path(sys.argv[1]), 'm', Path(sys.argv[2]),\n"
        "                          params=ModelParams(), kv_mode=KVMode.CONSERVATIVE)\n"
        "    await child.start(60)\n"
        "    print(child.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(library), str(model_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert is_alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while is_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_alive(child)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
