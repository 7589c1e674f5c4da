"""The benchmarks' modules import each other by name, as when a script of bench/ runs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
