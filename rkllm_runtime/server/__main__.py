"""``python -m rkllm_runtime.server``: the same as ``rkllm-server``."""

from .cli import main

main()
