"""The catalog of known-good RKLLM model files (``catalog.json``), and which of them fit a board."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .board import Board
from .header import series

CATALOG_PATH = Path(__file__).with_name("catalog.json")
HF_PREFIX = "hf.co/"
# Memory the system and Home Assistant keep besides the model.
MEMORY_RESERVE_MB = 512


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One model file on the hub, with what is known about it and where that is from."""

    id: str
    title: str
    repo: str
    file: str
    chip: str
    dtype: str
    toolkit: str
    """The rkllm-toolkit release it was converted with: the runtime must be of the same series."""
    context: int
    """The context the file was converted for (``max_context_limit``)."""
    memory_mb: float
    good_at: tuple[str, ...]
    sources: tuple[str, ...]
    ollama: tuple[str, ...] = ()
    """Ollama model names that choose this file (the first fitting entry of a name wins)."""
    size_bytes: int | None = None
    """Exact size, when the hub's figure is known."""
    approx_size_mb: float | None = None
    sha256: str | None = None
    decode_tps: float | None = None
    memory_basis: str = ""
    size_basis: str = ""
    tokenizer_repo: str | None = None
    """The base model's repository: its ``tokenizer.json`` is this file's vocabulary."""

    @property
    def size_mb(self) -> float:
        """The file's size in MB, exact or approximate."""
        return self.size_bytes / 2**20 if self.size_bytes is not None else self.approx_size_mb or 0.0

    @property
    def hf_name(self) -> str:
        """The name the file answers to anywhere: ``hf.co/OWNER/REPO/FILE``."""
        return f"{HF_PREFIX}{self.repo}/{self.file}"

    @property
    def label(self) -> str:
        """One line for a list: name, size, chip, release and strengths."""
        size = f"{self.size_mb / 1024:.1f} GB" + ("" if self.size_bytes is not None else " approx.")
        return f"{self.title} ({size}, {self.chip}, toolkit {self.toolkit}): {', '.join(self.good_at)}"


@dataclass(frozen=True, slots=True)
class Choice:
    """A catalog entry and why it does not fit this board (no reasons: it fits)."""

    entry: CatalogEntry
    reasons: tuple[str, ...]

    @property
    def fits(self) -> bool:
        """Whether nothing stands against it."""
        return not self.reasons


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    fields = dict(raw)
    for name in ("good_at", "sources", "ollama"):
        fields[name] = tuple(fields.get(name, ()))
    return CatalogEntry(**fields)


def load_catalog(path: Path = CATALOG_PATH) -> list[CatalogEntry]:
    """The catalog's entries in their order of preference (blocking file read)."""
    return [_entry(raw) for raw in json.loads(path.read_text(encoding="utf-8"))["models"]]


def reasons(entry: CatalogEntry, board: Board, release: str | None, *, downloaded: bool = False) -> list[str]:
    """Why ``entry`` cannot be used on ``board`` with runtime ``release`` (nothing: it fits)."""
    found = []
    if board.chip is not None and entry.chip != board.chip:
        found.append(f"built for the {entry.chip}; this board is an {board.chip}")
    if release is not None and series(entry.toolkit) != series(release):
        found.append(f"needs runtime {series(entry.toolkit)}.x (converted with toolkit {entry.toolkit}); "
                     f"this runtime is {release}")  # fmt: skip
    if board.memory_total_mb is not None and entry.memory_mb > board.memory_total_mb - MEMORY_RESERVE_MB:
        found.append(f"needs about {entry.memory_mb:,.0f} MB of memory; this board has "
                     f"{board.memory_total_mb:,.0f} MB")  # fmt: skip
    if not downloaded and board.disk_free_bytes is not None and entry.size_mb * 2**20 > board.disk_free_bytes:
        found.append(
            f"needs {entry.size_mb / 1024:.1f} GB of disk; {board.disk_free_bytes / 2**30:.1f} GB free"
        )
    return found


def choices(
    catalog: list[CatalogEntry],
    board: Board,
    release: str | None,
    downloaded: set[str] | frozenset[str] = frozenset(),
) -> list[Choice]:
    """Every entry with its reasons, those that fit first (each group in catalog order)."""
    ranked = [
        Choice(entry, tuple(reasons(entry, board, release, downloaded=entry.file in downloaded)))
        for entry in catalog
    ]
    return sorted(ranked, key=lambda choice: not choice.fits)


def lookup(name: str, catalog: list[CatalogEntry], board: Board, release: str | None) -> CatalogEntry | None:
    """The entry an Ollama name (``qwen3:1.7b``) or catalog id means: the first that fits, else the first."""
    name = name.strip().lower().removesuffix(":latest")
    named = [entry for entry in catalog if name == entry.id or name in entry.ollama]
    fitting = [entry for entry in named if not reasons(entry, board, release)]
    return next(iter(fitting or named), None)


def parse_hf_name(name: str) -> tuple[str, str] | None:
    """``hf.co/OWNER/REPO/FILE`` (also ``huggingface.co/…``) as (``OWNER/REPO``, ``FILE``), or None."""
    for prefix in (HF_PREFIX, "huggingface.co/"):
        if name.startswith(prefix):
            parts = name.removeprefix(prefix).split("/")
            if len(parts) >= 3 and all(parts):
                return "/".join(parts[:2]), "/".join(parts[2:])
    return None
