"""Reading the board's state from /proc and /sys (blocking file reads: call from a worker thread)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROC_MEMINFO = Path("/proc/meminfo")
# The vendor rknpu driver reports "NPU load:  Core0: 12%, Core1:  0%, Core2:  0%,".
NPU_LOAD_PATHS = (Path("/sys/kernel/debug/rknpu/load"), Path("/proc/rknpu/load"))
THERMAL_ZONES = Path("/sys/class/thermal")


@dataclass(frozen=True, slots=True)
class NPUReading:
    """The NPU's load and temperature (None where the board does not expose them)."""

    load: float | None = None
    temperature: float | None = None


def available_memory_mb(meminfo: Path = PROC_MEMINFO) -> float | None:
    """MemAvailable in MB, or None when the kernel does not say."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None


def npu_load_percent() -> float | None:
    """Mean load of the NPU cores in percent, or None without the rknpu driver."""
    for path in NPU_LOAD_PATHS:
        try:
            text = path.read_text()
        except OSError:
            continue
        loads = [int(value) for value in re.findall(r"Core\d+:\s*(\d+)%", text)]
        if loads:
            return sum(loads) / len(loads)
    return None


def npu_temperature_celsius() -> float | None:
    """Temperature of the thermal zone named like the NPU (``npu-thermal``), or None."""
    try:
        candidates = sorted(THERMAL_ZONES.glob("thermal_zone*"))
    except OSError:
        return None
    for zone in candidates:
        try:
            if "npu" not in (zone / "type").read_text().lower():
                continue
            return int((zone / "temp").read_text().strip()) / 1000
        except (OSError, ValueError):
            continue
    return None
