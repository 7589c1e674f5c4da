"""How a benchmark hands over its figures: lines for a reader, then one JSON line for a machine."""

from __future__ import annotations

import json
from collections.abc import Iterable


def publish(lines: Iterable[str], figures: object) -> None:
    """Print the figures' lines, then the figures themselves as one JSON line."""
    for line in lines:
        print(line)
    print(json.dumps(figures))
