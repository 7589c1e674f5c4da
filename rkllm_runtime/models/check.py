"""A model file's first load, in a process of its own, and its verdict kept for the next loads.

The child loads the file once with the same library; the parent reads the runtime's log from the
child's stderr, parses the model header and compares it with the board's chip and the library's
release. A file that crashes the runtime (a 1.2 file on a 1.3 runtime, rknn-llm #509) ends only the
child, and the error names what the file needs. Blocking: call from a worker thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rkllm_runtime import errors
from rkllm_runtime.library import check_library
from rkllm_runtime.model_file import check_model_file
from rkllm_runtime.runtime import RKLLMRuntime
from rkllm_runtime.types import ModelParams

from .header import ModelHeader, check_header, parse_header

CHECK_TIMEOUT_S = 900.0  # loading a 4B model from a slow card takes minutes
# The errors the child reports by name; anything else is a rejection.
_CHILD_ERRORS: dict[str, type[errors.RKLLMError]] = {
    kind.__name__: kind
    for kind in (
        errors.ModelNotFoundError,
        errors.InsufficientMemoryError,
        errors.ModelRejectedError,
        errors.LibraryNotFoundError,
        errors.UnsupportedVersionError,
    )
}


def check_model(
    library: Path,
    model: Path,
    *,
    chip: str | None,
    release: str | None = None,
    max_context_len: int = 512,
    verdicts: Path | None = None,
) -> ModelHeader | None:
    """Load ``model`` once in a child process; its header, or raise the :class:`ModelError` it earns.

    ``max_context_len`` is the context it will be loaded with. ``verdicts`` is a folder where a
    passed check is remembered (keyed by the file's size and time, the library's release, the chip
    and the context), so only a file's first load pays for the child.
    """
    check_model_file(model)
    runtime_release = check_library(library, release).version
    stat = model.stat()
    resolved = str(model.resolve())
    key: dict[str, object] = {
        "model": resolved,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "release": runtime_release,
        "chip": chip,
        "context": max_context_len,
    }
    record = None
    if verdicts is not None:
        record = verdicts / f"{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.json"
        try:
            kept = json.loads(record.read_text())
            if kept.get("key") == key:
                return ModelHeader(**kept["header"]) if kept.get("header") else None
        except (OSError, ValueError, TypeError):
            pass
    header = _load_in_child(
        library, model, release, max_context_len, chip=chip, runtime_release=runtime_release
    )
    if record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"key": key, "header": asdict(header) if header else None}))
        except OSError:
            pass  # checked again next time
    return header


def _load_in_child(
    library: Path, model: Path, release: str | None, context: int, *, chip: str | None, runtime_release: str
) -> ModelHeader | None:
    command = [sys.executable, "-m", "rkllm_runtime.models.check", str(library), str(model), str(context)]
    if release:
        command += ["--release", release]
    try:
        done = subprocess.run(command, capture_output=True, timeout=CHECK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise errors.ModelRejectedError(
            f"loading {model.name} took more than {CHECK_TIMEOUT_S:.0f} s"
        ) from err
    # Bytes until here: the runtime echoes what it read of a file that is no model.
    log = done.stderr.decode(errors="replace").splitlines()
    header = parse_header(log)
    if header is not None:
        check_header(header, chip=chip, release=runtime_release, context=context)
    if done.returncode == 0:
        return header
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise errors.ModelCrashedError(
            f"the RKLLM runtime {runtime_release} crashed ({name}) loading {model.name}; "
            f"its last words: {' | '.join(log[-3:]) or 'none'}"
        )
    try:
        reply = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
        kind, message = _CHILD_ERRORS.get(reply["error"], errors.ModelRejectedError), reply["message"]
    except (ValueError, LookupError, TypeError):
        kind, message = errors.ModelRejectedError, f"the model check failed: {' | '.join(log[-3:])}"
    if kind is errors.UnsupportedVersionError:
        raise errors.UnsupportedVersionError(message, found=runtime_release)
    if kind is errors.ModelRejectedError and header is None:
        # The runtime logs a model's header as it reads it: it found none in this file.
        raise errors.NotAModelError(
            f"{model.name} is not a model for the RKLLM runtime {runtime_release}{_format_of(model)}; "
            f"its last words: {_printable(log[-1]) if log else 'none'}"
        )
    raise kind(message)


def _printable(line: str) -> str:
    """A log line with what the runtime echoed of a binary file masked."""
    return "".join(char if char.isprintable() else "?" for char in line)


def _format_of(model: Path) -> str:
    """What the file is instead, when its first bytes say so."""
    with model.open("rb") as file:
        magic = file.read(4)
    return " (it is a GGUF file, for llama.cpp)" if magic == b"GGUF" else ""


def main(argv: Sequence[str] | None = None) -> int:
    """The child: load the model once, say how it went on stdout (JSON), the runtime's log on stderr."""
    parser = argparse.ArgumentParser(prog="python -m rkllm_runtime.models.check")
    parser.add_argument("library", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("context", type=int)
    parser.add_argument("--release")
    args = parser.parse_args(argv)
    try:
        runtime = RKLLMRuntime.open(
            args.library, args.model, ModelParams(max_context_len=args.context), release=args.release
        )
    except errors.RKLLMError as err:
        print(json.dumps({"error": type(err).__name__, "message": str(err)}), flush=True)
        return 2
    runtime.close()
    print(json.dumps({"loaded": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
