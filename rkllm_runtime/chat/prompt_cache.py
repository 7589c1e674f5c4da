"""Prompt-cache files of system prompts, kept across restarts.

A file is keyed by everything that makes its content valid: the runtime release,
the model file's identity, the system prompt and the tools. The runtime writes a
new file to a temporary path; only a complete one is renamed into place, and its
JSON sidecar records the key with the file's size and SHA-256. Before every load
the file is checked against its sidecar: a truncated or altered file is deleted,
never handed to the runtime. The directory is bounded in size: the least recently
used files go first, and temporary files left by an interrupted save are removed.

The files are an optimisation: a failing disk (read-only, full) logs one warning
and the engine carries on without them. Blocking file I/O: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 2**20
CACHE_SUFFIX = ".rkcache"
SIDECAR_SUFFIX = ".json"
STAGING_SUFFIX = ".tmp"
# A temporary file older than this was left by a save that never finished.
STALE_STAGING_S = 3600


@dataclass(frozen=True, slots=True)
class PromptCacheKey:
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
    """A directory of prompt-cache files, bounded to ``max_bytes``.

    No method raises :class:`OSError`: the first failure is logged as a warning
    (later ones at debug level) and the caller goes on as if there were no file.
    """

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._warned = False

    def path_for(self, key: PromptCacheKey) -> Path:
        """Where the cache file for ``key`` lives once saved (whether or not it exists)."""
        return self.directory / f"{key.digest}{CACHE_SUFFIX}"

    def _staging(self, path: Path) -> Path:
        return path.with_name(path.name + STAGING_SUFFIX)

    def _sidecar(self, path: Path) -> Path:
        return path.with_suffix(SIDECAR_SUFFIX)

    def lookup(self, key: PromptCacheKey) -> Path | None:
        """The cache file for ``key`` when its sidecar confirms the key, its size and its hash."""
        path = self.path_for(key)
        try:
            return self._verified(key, path)
        except OSError as err:
            self._failed("read", err)
            return None

    def _verified(self, key: PromptCacheKey, path: Path) -> Path | None:
        sidecar = self._sidecar(path)
        if not path.is_file() or not sidecar.is_file():
            self.discard(path)
            return None
        try:
            recorded = json.loads(sidecar.read_text())
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict) or recorded.get("key") != key.as_dict():
            _LOGGER.debug("Ignoring prompt cache %s: it does not match this model and prompt", path.name)
            self.discard(path)
            return None
        if recorded.get("size") != path.stat().st_size or recorded.get("sha256") != _sha256(path):
            _LOGGER.warning("Prompt cache %s is truncated or damaged; it will be rebuilt", path.name)
            self.discard(path)
            return None
        os.utime(path)  # most recently used
        return path

    def staging_path(self, key: PromptCacheKey) -> Path | None:
        """The temporary path the runtime should save ``key``'s file to (None when unusable)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_staging()
        except OSError as err:
            self._failed("write", err)
            return None
        return self._staging(self.path_for(key))

    def saved(self, key: PromptCacheKey) -> None:
        """Move the file the runtime saved for ``key`` into place, record it, evict beyond the bound."""
        path = self.path_for(key)
        staging = self._staging(path)
        try:
            if not staging.is_file():
                _LOGGER.debug("The runtime saved no prompt cache for %s", path.name)
                return
            record = {"key": key.as_dict(), "size": staging.stat().st_size, "sha256": _sha256(staging)}
            self._sidecar(path).unlink(missing_ok=True)  # no sidecar may vouch for a file being replaced
            staging.replace(path)
            sidecar_staging = self._staging(self._sidecar(path))
            sidecar_staging.write_text(json.dumps(record))
            sidecar_staging.replace(self._sidecar(path))
            self._evict(keep=path)
        except OSError as err:
            self._failed("write", err)
            self.abandon(key)

    def abandon(self, key: PromptCacheKey) -> None:
        """Remove what an unfinished save of ``key`` left behind."""
        path = self.path_for(key)
        try:
            for leftover in (self._staging(path), self._staging(self._sidecar(path))):
                leftover.unlink(missing_ok=True)
        except OSError as err:
            self._failed("clean up", err)

    def discard(self, path: Path) -> None:
        """Delete a cache file and its sidecar (a rejected or stale file)."""
        try:
            for stale in (path, self._sidecar(path)):
                stale.unlink(missing_ok=True)
        except OSError as err:
            self._failed("clean up", err)

    def total_bytes(self) -> int:
        """Bytes used by the cache files."""
        return sum(path.stat().st_size for path in self.directory.glob(f"*{CACHE_SUFFIX}"))

    def _remove_stale_staging(self) -> None:
        horizon = time.time() - STALE_STAGING_S
        for leftover in self.directory.glob(f"*{STAGING_SUFFIX}"):
            if leftover.stat().st_mtime < horizon:
                _LOGGER.debug("Removing %s, left by an interrupted save", leftover.name)
                leftover.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        files = sorted(self.directory.glob(f"*{CACHE_SUFFIX}"), key=lambda path: path.stat().st_mtime)
        total = sum(path.stat().st_size for path in files)
        for path in files:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            total -= path.stat().st_size
            _LOGGER.debug("Evicting prompt cache %s", path.name)
            self.discard(path)

    def _failed(self, action: str, err: OSError) -> None:
        log = _LOGGER.debug if self._warned else _LOGGER.warning
        self._warned = True
        log("Cannot %s prompt-cache files in %s (%s); answering without them", action, self.directory, err)


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
