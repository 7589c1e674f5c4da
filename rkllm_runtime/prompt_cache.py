"""Prompt-cache files of system prompts, kept across restarts.

A file is keyed by everything that makes its content valid: the runtime release,
the model file's identity, the system prompt and the tools. Each cache file has a
JSON sidecar repeating that key; a file without a matching sidecar is never used.
The directory is bounded in size: the least recently used files go first.
Blocking file I/O: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What a prompt-cache file's validity depends on."""

    runtime_release: str
    model_identity: str
    system_key: str

    @property
    def digest(self) -> str:
        text = f"{self.runtime_release}\0{self.model_identity}\0{self.system_key}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def as_dict(self) -> dict[str, str]:
        return {
            "runtime_release": self.runtime_release,
            "model_identity": self.model_identity,
            "system_key": self.system_key,
        }


def model_identity(path: Path) -> str:
    """Identity of a model file: its name, size and modification time (hashing GBs would be slow)."""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


class PromptCacheStore:
    """A directory of prompt-cache files, bounded to ``max_bytes``."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path_for(self, key: CacheKey) -> Path:
        """Where the cache file for ``key`` lives (whether or not it exists)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{key.digest}.rkcache"

    def _sidecar(self, path: Path) -> Path:
        return path.with_suffix(".json")

    def lookup(self, key: CacheKey) -> Path | None:
        """The cache file for ``key`` when it exists and its sidecar confirms the key."""
        path = self.path_for(key)
        try:
            recorded = json.loads(self._sidecar(path).read_text())
        except OSError, ValueError:
            recorded = None
        if recorded != key.as_dict() or not path.is_file():
            if path.exists() or self._sidecar(path).exists():
                _LOGGER.debug("Ignoring prompt cache %s: it does not match this model and prompt", path.name)
                self.discard(path)
            return None
        os.utime(path)  # most recently used
        return path

    def saved(self, key: CacheKey) -> None:
        """Record that the runtime wrote the cache file for ``key``; evict beyond the size bound."""
        path = self.path_for(key)
        if not path.is_file():
            return
        self._sidecar(path).write_text(json.dumps(key.as_dict()))
        self._evict(keep=path)

    def discard(self, path: Path) -> None:
        """Delete a cache file and its sidecar (a rejected or stale file)."""
        for stale in (path, self._sidecar(path)):
            stale.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        """Bytes used by the cache files."""
        return sum(path.stat().st_size for path in self.directory.glob("*.rkcache"))

    def _evict(self, keep: Path) -> None:
        files = sorted(self.directory.glob("*.rkcache"), key=lambda path: path.stat().st_mtime)
        total = sum(path.stat().st_size for path in files)
        for path in files:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            total -= path.stat().st_size
            _LOGGER.debug("Evicting prompt cache %s", path.name)
            self.discard(path)
