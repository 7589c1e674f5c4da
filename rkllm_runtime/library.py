"""Locating, checking and loading ``librkllmrt.so``.

Everything here runs before ``rkllm_init``: opening a library of the wrong
architecture or ABI must give a clear error, never a crash later in ``rkllm_run``.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from .abi.functions import RKLLMFunctions
from .abi.interface import ABIModule
from .errors import (
    LibraryError,
    LibraryNotFoundError,
    NotALibraryError,
    UnsupportedVersionError,
    VersionMismatchError,
    WrongArchitectureError,
)
from .releases import FUNCTIONS_1_2_1, RELEASES, SUPPORTED, Release

_LOGGER = logging.getLogger(__name__)

ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
HOST_MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "arm",
    "riscv64": "riscv64",
}
# The vendor library embeds a build banner, "RKLLM SDK (version: 1.2.3 | target: Linux | build: ...)".
# (Its "rkllm-runtime version: %s, ..." init log line is a printf format, not a version.)
_VERSION_PATTERN = re.compile(rb"RKLLM SDK \(version: (\d+\.\d+\.\d+(?:b\d+)?)[ |)]")

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
    """The runtime release named by the library's build banner, or None."""
    match = _VERSION_PATTERN.search(path.read_bytes())
    return match.group(1).decode() if match else None


def release_info(version: str | None) -> Release:
    """The known release ``version``; raise for one this binding cannot drive."""
    release = RELEASES.get(version or "")
    if release is not None and release.supported:
        return release
    found = version or "no version banner"
    why = f" ({release.refusal})" if release is not None and release.refusal else ""
    raise UnsupportedVersionError(
        f"RKLLM runtime {found} is not supported{why}; install one of: {', '.join(SUPPORTED)}",
        found=version,
    )


@dataclass(frozen=True, slots=True)
class Library:
    """A checked, loaded ``librkllmrt.so`` with its functions declared for its ABI."""

    path: Path
    release: str
    abi: ABIModule
    cdll: ctypes.CDLL
    rkllm: RKLLMFunctions
    """Typed calls into ``cdll``."""
    functions: frozenset[str]  # the RKLLM functions the library exports
    warning: str | None = None  # a known fault of this release's vendor build

    @property
    def abi_version(self) -> str:
        """``"1.2"`` or ``"1.3"``."""
        return self.abi.ABI

    def has(self, function: str) -> bool:
        """Whether the library exports ``function``."""
        return function in self.functions

    @property
    def reports_kv_cache_size(self) -> bool:
        """Whether the library tells the KV cache's size (``rkllm_get_kv_cache_size``, from 1.2.1 on)."""
        return self.has("rkllm_get_kv_cache_size")


def check_library(path: str | Path, release: str | None = None) -> Release:
    """The release of a runtime library, from its file alone (nothing is loaded into this process).

    ``release`` names the release of a library that embeds no version banner; for a
    library that does, it must agree with the banner (a wrong ABI crashes in ``rkllm_run``).
    """
    path = Path(path)
    check_elf(path)
    embedded = embedded_version(path)
    if embedded is not None and release and release != embedded:
        raise VersionMismatchError(
            f"{path} is runtime {embedded} but the configured runtime release is {release}: "
            "clear the runtime release setting (it is only for libraries without a version banner)",
            embedded=embedded,
            configured=release,
        )
    return release_info(embedded or release)


def load_library(path: str | Path, release: str | None = None) -> Library:
    """Check and load the runtime library (``release`` as for :func:`check_library`)."""
    path = Path(path)
    info = check_library(path, release)
    assert info.abi is not None
    if info.warning:
        _LOGGER.warning("RKLLM runtime %s: %s", info.version, info.warning)
    try:
        cdll = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        raise LibraryError(f"cannot load {path}: {err}") from err
    exported = frozenset(name for name in FUNCTIONS_1_2_1 if hasattr(cdll, name))
    if missing := sorted(info.functions - exported):
        raise LibraryError(f"{path} lacks RKLLM functions of runtime {info.version}: {', '.join(missing)}")
    return Library(path, info.version, info.abi, cdll, RKLLMFunctions(cdll, info.abi), exported, info.warning)
