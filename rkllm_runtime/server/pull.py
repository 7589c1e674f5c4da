"""Which file a model name means, and ``rkllm-server pull``: a download from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rkllm_runtime.errors import RKLLMError
from rkllm_runtime.library import check_library
from rkllm_runtime.models import (
    Board,
    Choice,
    check_model,
    choices,
    detect_board,
    load_catalog,
    lookup,
    parse_hf_name,
)
from rkllm_runtime.models.download import DownloadedModel, Progress, download_model, forget, read_records

from .errors import ApiError
from .registry import ollama_name

DEFAULT_MODELS_DIR = Path(
    os.environ.get("RKLLM_MODELS_DIR", "~/.local/share/rkllm-server/models")
).expanduser()


def resolve(name: str, file: str | None, board: Board, release: str | None) -> tuple[str, str, str]:
    """(repository, file, name served) of a catalog name, ``hf.co/OWNER/REPO/FILE``, or a repository."""
    if file:
        return name, file, f"hf.co/{name}/{file}"
    if (parsed := parse_hf_name(name)) is not None:
        return (*parsed, name)
    entry = lookup(name, load_catalog(), board, release)
    if entry is None:
        known = sorted({alias for entry in load_catalog() for alias in entry.ollama})
        raise ApiError(
            404,
            f"{name!r} is neither in the catalog ({', '.join(known)}) nor a Hugging Face file "
            "named hf.co/OWNER/REPO/FILE.rkllm",
        )
    return entry.repo, entry.file, ollama_name(name)


def ranked(board: Board, release: str | None, folder: Path | None) -> list[Choice]:
    """The catalog for this board and runtime, what fits first (blocking: reads the models folder)."""
    downloaded = set(read_records(folder)) if folder is not None else set()
    return choices(load_catalog(), board, release, downloaded)


def describe(choice: Choice) -> dict[str, object]:
    """A catalog entry as ``GET /rkllm/catalog`` shows it."""
    entry = choice.entry
    return {
        "name": entry.ollama[0] if entry.ollama else entry.hf_name,
        "names": [*entry.ollama, entry.hf_name],
        "title": entry.title,
        "label": entry.label,
        "size_mb": round(entry.size_mb),
        "size_exact": entry.size_bytes is not None,
        "chip": entry.chip,
        "toolkit": entry.toolkit,
        "context": entry.context,
        "memory_mb": entry.memory_mb,
        "decode_tps": entry.decode_tps,
        "good_at": list(entry.good_at),
        "fits": choice.fits,
        "reasons": list(choice.reasons),
        "sources": list(entry.sources),
    }


def catalog_command(argv: Sequence[str]) -> int:
    """``rkllm-server catalog``: the models to pull, what fits this board first, and why the rest does not."""
    parser = argparse.ArgumentParser(prog="rkllm-server catalog", description=catalog_command.__doc__)
    parser.add_argument(
        "--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help=f"(default: {DEFAULT_MODELS_DIR})"
    )
    parser.add_argument("--library", type=Path, help="librkllmrt.so: judge the files by its release")
    parser.add_argument("--release", help="runtime release, for a library that does not embed one")
    args = parser.parse_args(argv)
    try:
        release = check_library(args.library, args.release).version if args.library else args.release
    except RKLLMError as err:
        print(f"rkllm-server catalog: {err}", file=sys.stderr)
        return 1
    board = detect_board(args.models_dir)
    print(f"board: {board.chip or 'not a Rockchip board'}; runtime: {release or 'not given (--library)'}")
    for choice in ranked(board, release, args.models_dir):
        name = choice.entry.ollama[0] if choice.entry.ollama else choice.entry.hf_name
        verdict = "fits" if choice.fits else "does not fit: " + "; ".join(choice.reasons)
        print(f"{name:<14} {choice.entry.label}\n{'':<14} {verdict}")
    return 0


def check_or_delete(library: Path, model: DownloadedModel, *, board: Board, release: str | None) -> None:
    """Load a downloaded file once in a child process; delete it if it cannot run here (blocking)."""
    try:
        check_model(library, model.path, chip=board.chip, release=release)
    except RKLLMError:
        model.path.unlink(missing_ok=True)
        forget(model.path.parent, model.file)
        raise


def _print_progress(progress: Progress) -> None:
    fraction = progress.fraction
    done = f"{progress.completed / 2**30:.2f}"
    total = f"{progress.total / 2**30:.2f} GB" if progress.total else "? GB"
    print(f"  {f'{fraction:.0%}' if fraction is not None else '…':>5} {done}/{total}", flush=True)


def pull_command(argv: Sequence[str]) -> int:
    """``rkllm-server pull NAME [FILE]``: download into the models folder; check it with ``--library``."""
    parser = argparse.ArgumentParser(
        prog="rkllm-server pull",
        description="Download an RKLLM model from Hugging Face: a catalog name (qwen3:1.7b), "
        "hf.co/OWNER/REPO/FILE, or a repository and a file.",
    )
    parser.add_argument("name", help="catalog name, hf.co/OWNER/REPO/FILE, or OWNER/REPO")
    parser.add_argument("file", nargs="?", help="the .rkllm file of OWNER/REPO")
    parser.add_argument(
        "--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help=f"(default: {DEFAULT_MODELS_DIR})"
    )
    parser.add_argument("--library", type=Path, help="librkllmrt.so: load the file once to check it")
    parser.add_argument("--release", help="runtime release, for a library that does not embed one")
    args = parser.parse_args(argv)
    board = detect_board(args.models_dir)
    try:
        release = check_library(args.library, args.release).version if args.library else args.release
        repo, file, name = resolve(args.name, args.file, board, release)
        print(f"pulling {repo}/{file} as {name}", flush=True)
        model = download_model(repo, file, args.models_dir, on_progress=_print_progress, name=name)
        print(f"sha256 {model.sha256}", flush=True)
        if args.library is not None:
            print("checking it on this runtime", flush=True)
            check_or_delete(args.library, model, board=board, release=release)
    except (RKLLMError, ApiError) as err:
        print(f"rkllm-server pull: {err}", file=sys.stderr)
        return 1
    print(f"success: {model.path}", flush=True)
    return 0
