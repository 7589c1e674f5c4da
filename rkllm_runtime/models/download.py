"""Downloading a model file from Hugging Face with the hub's own client (blocking: use a worker thread).

``huggingface_hub`` resumes an interrupted transfer, sends the token, honours ``HF_ENDPOINT`` and
offline mode, but trusts the hub's ETag: the file's SHA-256 is computed here and compared with the
one the hub announces for LFS files. What was downloaded is recorded (``.downloads.json`` in the
models folder) so that a file re-uploaded under the same name is noticed. For a catalog model, the
base model's ``tokenizer.json`` is saved beside it as ``MODEL.tokenizer.json`` (the vocabulary the
constrained decoder reads); without it, replies that must follow a grammar are checked instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkllm_runtime.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadError,
    InsufficientDiskError,
)

from .board import free_bytes
from .catalog import load_catalog

if TYPE_CHECKING:
    from tqdm import tqdm

_LOGGER = logging.getLogger(__name__)
RECORDS = ".downloads.json"
TOKENIZER_FILE = "tokenizer.json"
DISK_MARGIN = 64 * 2**20  # left free besides the file
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_HASH_CHUNK = 8 * 2**20


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a download is."""

    completed: int
    total: int | None

    @property
    def fraction(self) -> float | None:
        """Done, from 0 to 1 (None while the size is unknown)."""
        return min(1.0, self.completed / self.total) if self.total else None


@dataclass(frozen=True, slots=True)
class DownloadedModel:
    """A model file in the models folder and where it came from."""

    path: Path
    repo: str
    file: str
    sha256: str
    size: int
    revision: str | None = None
    """The hub commit it was downloaded at."""
    downloaded_at: float = 0.0
    name: str | None = None
    """The name it is served under (an Ollama name such as ``qwen3:1.7b``)."""


def read_records(models_dir: Path) -> dict[str, dict[str, Any]]:
    """The downloads recorded in ``models_dir``, by file name."""
    try:
        records = json.loads((models_dir / RECORDS).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _record(models_dir: Path, model: DownloadedModel) -> None:
    records = read_records(models_dir)
    records[model.file] = asdict(model) | {"path": model.path.name}
    temporary = models_dir / f"{RECORDS}.tmp"
    temporary.write_text(json.dumps(records, indent=1, sort_keys=True))
    temporary.replace(models_dir / RECORDS)


def forget(models_dir: Path, file: str) -> None:
    """Drop a deleted file's record."""
    records = read_records(models_dir)
    if records.pop(file, None) is not None:
        (models_dir / RECORDS).write_text(json.dumps(records, indent=1, sort_keys=True))


def sha256_of(path: Path, cancel: threading.Event | None = None) -> str:
    """The file's SHA-256 in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelledError("the download was cancelled")
            digest.update(chunk)
    return digest.hexdigest()


def _progress_bar(on_progress: Callable[[Progress], None] | None, cancel: threading.Event) -> type[tqdm]:
    """A silent progress bar class that reports to ``on_progress`` and stops the transfer on ``cancel``."""
    from tqdm import tqdm  # noqa: PLC0415 - only a download needs it

    class _Bar(tqdm):  # type: ignore[misc]
        monitor_interval = 0  # no tqdm monitor thread

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done: int = kwargs.get("initial") or 0
            self.size: int | None = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            if cancel.is_set():
                raise DownloadCancelledError("the download was cancelled")
            self.done += int(n or 0)
            if on_progress is not None:
                on_progress(Progress(self.done, self.size))
            return None

    return _Bar


def download_model(
    repo: str,
    file: str,
    models_dir: Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    offline: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    disk_free: Callable[[Path], int] = free_bytes,
    name: str | None = None,
) -> DownloadedModel:
    """Download ``repo``/``file`` into ``models_dir`` (or find it there), checked; or raise DownloadError."""
    # Imported here: a process that never downloads (rkllm-server's start) does not pay for the hub's client.
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url  # noqa: PLC0415 - above
    from huggingface_hub.errors import (  # noqa: PLC0415 - as above
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    if not _REPO.fullmatch(repo) or not file or file.startswith("/") or ".." in file.split("/"):
        raise DownloadError(f"{repo}/{file} is not a Hugging Face repository (OWNER/NAME) and file")
    if not file.endswith(".rkllm"):
        raise DownloadError(f"{file} is not an RKLLM model file (*.rkllm)")
    cancel = cancel or threading.Event()
    endpoint = (
        endpoint or os.environ.get("HF_ENDPOINT") or None
    )  # read now, not when the hub's client was imported
    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    known = read_records(models_dir).get(file)
    path = models_dir / file
    if offline:
        if known is not None and path.is_file():
            return _downloaded(models_dir, known)
        raise DownloadError(f"{file} is not downloaded yet, and downloads are off (offline mode)")
    try:
        url = hf_hub_url(repo, file, revision=revision, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise DownloadError(f"{repo} has no file {file} (or it is private: give a token)") from err
    except (HfHubHTTPError, OSError) as err:
        raise DownloadError(f"the hub could not be reached for {repo}/{file}: {err}") from err
    announced = meta.etag if meta.etag and _SHA256.fullmatch(meta.etag) else None
    if (
        known is not None
        and path.is_file()
        and known.get("repo") == repo
        and announced in (None, known["sha256"])
    ):
        fetch_tokenizer(
            repo, file, models_dir, token=token, endpoint=endpoint
        )  # if an older download lacks it
        if name is not None and known.get("name") != name:
            _record(models_dir, model := _downloaded(models_dir, known | {"name": name}))
            return model
        return _downloaded(models_dir, known)
    needed = meta.size or 0
    free = disk_free(models_dir)
    if needed + DISK_MARGIN > free:
        raise InsufficientDiskError(
            f"{file} needs {needed / 2**30:.2f} GB and {models_dir} has {free / 2**30:.2f} GB free",
            needed=needed,
            free=free,
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        hf_hub_download(
            repo,
            file,
            revision=revision,
            local_dir=models_dir,
            token=token,
            endpoint=endpoint,
            force_download=known is not None,
            tqdm_class=_progress_bar(on_progress, cancel),
        )
    except DownloadCancelledError:
        raise
    except (HfHubHTTPError, OSError) as err:
        raise DownloadError(f"downloading {repo}/{file} failed: {err}") from err
    found = sha256_of(path, cancel)
    if announced is not None and found != announced:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{file} does not have the SHA-256 the hub announced ({announced}): deleted, download it again",
            expected=announced,
            found=found,
        )
    model = DownloadedModel(path, repo, file, found, path.stat().st_size, meta.commit_hash, time.time(), name)
    _record(models_dir, model)
    fetch_tokenizer(repo, file, models_dir, token=token, endpoint=endpoint)
    return model


def fetch_tokenizer(
    repo: str, file: str, models_dir: Path, *, token: str | None, endpoint: str | None
) -> Path | None:
    """Save the catalog model's base ``tokenizer.json`` as ``MODEL.tokenizer.json``; None when there is none.

    Not having it is no failure: the model works, its structured replies are checked instead.
    """
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - as in download_model
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    base = next((e.tokenizer_repo for e in load_catalog() if (e.repo, e.file) == (repo, file)), None)
    if base is None:
        return None
    target = models_dir / f"{Path(file).stem}.{TOKENIZER_FILE}"
    if target.is_file():
        return target
    try:
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            fetched = hf_hub_download(
                base,
                TOKENIZER_FILE,
                local_dir=tmp,
                token=token,
                endpoint=endpoint,
                tqdm_class=_progress_bar(None, threading.Event()),  # no tqdm monitor thread left behind
            )
            shutil.move(fetched, target)
    except (HfHubHTTPError, OSError) as err:
        _LOGGER.warning(
            "%s/%s could not be downloaded (%s): structured replies are checked instead",
            base,
            TOKENIZER_FILE,
            err,
        )
        return None
    return target


def _downloaded(models_dir: Path, record: dict[str, Any]) -> DownloadedModel:
    return DownloadedModel(**(record | {"path": models_dir / record["file"]}))
