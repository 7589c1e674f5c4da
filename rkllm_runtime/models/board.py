"""The board a model must fit: chip (device tree), memory and disk (blocking reads: use a worker thread)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Device-tree compatible strings of the chips whose NPU runs RKLLM, as the runtime names them
# in a model's target_platform. The RK3588S has the RK3588's NPU.
CHIPS = {"rockchip,rk3588": "RK3588", "rockchip,rk3588s": "RK3588", "rockchip,rk3576": "RK3576"}


@dataclass(frozen=True, slots=True)
class Board:
    """What decides whether a model fits."""

    chip: str | None
    """``RK3588`` or ``RK3576``; None on another machine (then no file is refused for its chip)."""
    memory_total_mb: float | None = None
    memory_available_mb: float | None = None
    disk_free_bytes: int | None = None
    """Free space where models are kept."""


def chip_of(compatible: bytes) -> str | None:
    """The RKLLM chip named by a device tree's NUL-separated ``compatible`` list."""
    for name in compatible.split(b"\0"):
        chip = CHIPS.get(name.decode(errors="replace").strip().lower())
        if chip is not None:
            return chip
    return None


def _meminfo_mb(text: str, field: str) -> float | None:
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer at ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def detect_board(models_dir: Path | None = None, root: Path = Path("/")) -> Board:
    """This machine's board; ``root`` is where ``proc/`` is found (tests give a tree of their own)."""
    try:
        chip = chip_of((root / "proc/device-tree/compatible").read_bytes())
    except OSError:
        chip = None
    try:
        meminfo = (root / "proc/meminfo").read_text()
    except OSError:
        meminfo = ""
    return Board(
        chip=chip,
        memory_total_mb=_meminfo_mb(meminfo, "MemTotal"),
        memory_available_mb=_meminfo_mb(meminfo, "MemAvailable"),
        disk_free_bytes=free_bytes(models_dir) if models_dir is not None else None,
    )
