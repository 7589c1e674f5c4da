"""Locating, checking and loading ``librkllmrt.so``.

Everything here runs before ``rkllm_init``: opening a library of the wrong
architecture or ABI must give a clear error, never a crash later in ``rkllm_run``.
"""

from __future__ import annotations

import ctypes
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .abi import ABI_BY_RELEASE, SUPPORTED_RELEASES
from .errors import (
    LibraryError,
    LibraryNotFoundError,
    NotALibraryError,
    UnsupportedVersionError,
    WrongArchitectureError,
)

ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
HOST_MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "arm",
    "riscv64": "riscv64",
}
# The vendor library logs (and embeds) "rkllm-runtime version: 1.2.3" or similar.
_VERSION_PATTERN = re.compile(rb"rkllm[-_ ]runtime[-_ ]version[:\s]+v?(\d+\.\d+\.\d+(?:[ab]\d+)?)", re.I)

SEARCH_DIRS = ("/usr/lib", "/usr/local/lib", "/usr/lib/aarch64-linux-gnu")
LIBRARY_NAME = "librkllmrt.so"


def find_library() -> Path | None:
    """Return the first ``librkllmrt.so`` in the usual install locations."""
    for directory in SEARCH_DIRS:
        candidate = Path(directory) / LIBRARY_NAME
        if candidate.is_file():
            return candidate
    return None


def host_machine() -> str:
    """This machine's architecture in ELF terms."""
    machine = platform.machine().lower()
    return HOST_MACHINES.get(machine, machine)


def check_elf(path: Path) -> None:
    """Raise unless ``path`` is an ELF shared library for this machine's architecture."""
    if not path.is_file():
        raise LibraryNotFoundError(f"{path} does not exist")
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise NotALibraryError(f"{path} is not an ELF shared library")
    e_machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    machine = ELF_MACHINES.get(e_machine, "unknown")
    expected = host_machine()
    if machine != expected:
        raise WrongArchitectureError(
            f"{path} is built for {machine} but this machine is {expected}; "
            "the RKLLM runtime only runs on the Rockchip board itself",
            found=machine,
            expected=expected,
        )


def embedded_version(path: Path) -> str | None:
    """The runtime release the library embeds as text, or None."""
    match = _VERSION_PATTERN.search(path.read_bytes())
    return match.group(1).decode() if match else None


def abi_for_release(release: str | None) -> ModuleType:
    """The raw ABI module for a runtime release; raise for unsupported ones."""
    if release in ABI_BY_RELEASE:
        return ABI_BY_RELEASE[release]
    found = release or "no version string"
    raise UnsupportedVersionError(
        f"RKLLM runtime {found} is not supported; supported releases: {', '.join(SUPPORTED_RELEASES)}",
        found=release,
    )


@dataclass(frozen=True, slots=True)
class Library:
    """A checked, loaded ``librkllmrt.so`` with its functions declared for its ABI."""

    path: Path
    release: str
    abi: ModuleType
    cdll: ctypes.CDLL

    @property
    def abi_version(self) -> str:
        """``"1.2"`` or ``"1.3"``."""
        return str(self.abi.ABI)


def load_library(path: str | Path, release: str | None = None) -> Library:
    """Check and load the runtime library.

    ``release`` overrides the version found in the file (for builds that do not
    embed one); it must still be a supported release.
    """
    path = Path(path)
    check_elf(path)
    release = release or embedded_version(path)
    abi = abi_for_release(release)
    try:
        cdll = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        raise LibraryError(f"cannot load {path}: {err}") from err
    try:
        abi.declare(cdll)
    except AttributeError as err:
        raise LibraryError(f"{path} lacks an RKLLM function: {err}") from err
    return Library(path, str(release), abi, cdll)
