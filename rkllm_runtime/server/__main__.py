"""``python -m rkllm_runtime.server``: the same as ``rkllm-server`` (a child follows its parent)."""

from .child import exit_with_parent
from .cli import main

exit_with_parent()
main()
