"""Downloads through huggingface_hub from a hub-layout server: checked, recorded, resumable, cancellable."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from rkllm_runtime.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadError,
    InsufficientDiskError,
)
from rkllm_runtime.models.catalog import load_catalog
from rkllm_runtime.models.download import RECORDS, Progress, download_model, read_records
from tests.hub_server import COMMIT, Hub

from .conftest import FILE, REPO, model_bytes


def test_a_download_is_checked_recorded_and_reported(hub: Hub, tmp_path: Path) -> None:
    data = model_bytes(padding_mb=25)
    hub.add(REPO, FILE, data)
    seen: list[Progress] = []

    model = download_model(REPO, FILE, tmp_path, endpoint=hub.url, on_progress=seen.append)

    assert model.path == tmp_path / FILE
    assert model.path.read_bytes() == data
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert (model.size, model.revision) == (len(data), COMMIT)
    assert len(seen) >= 3  # 10 MB steps
    assert seen[-1] == Progress(len(data), len(data))
    assert [p.completed for p in seen] == sorted(p.completed for p in seen)
    recorded = json.loads((tmp_path / RECORDS).read_text())[FILE]
    assert recorded["sha256"] == model.sha256
    assert recorded["repo"] == REPO


def test_a_second_pull_of_the_same_file_downloads_nothing(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes())
    first = download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    again = download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    assert again.sha256 == first.sha256
    assert len(hub.gets(FILE)) == 1


def test_a_file_re_uploaded_under_the_same_name_is_noticed_and_fetched_again(
    hub: Hub, tmp_path: Path
) -> None:
    hub.add(REPO, FILE, model_bytes(name="first"))
    first = download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    hub.add(REPO, FILE, model_bytes(name="second upload"))
    second = download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    assert second.sha256 != first.sha256
    assert b"second upload" in second.path.read_bytes()
    assert read_records(tmp_path)[FILE]["sha256"] == second.sha256
    assert len(hub.gets(FILE)) == 2


def test_an_interrupted_transfer_resumes_where_it_stopped(hub: Hub, tmp_path: Path) -> None:
    data = model_bytes(padding_mb=25)
    hub.add(REPO, FILE, data, drop_after=12 * 2**20)
    seen: list[Progress] = []

    model = download_model(REPO, FILE, tmp_path, endpoint=hub.url, on_progress=seen.append)

    assert model.path.read_bytes() == data
    # The client writes in 10 MB blocks: it asks again from the end of the last whole block.
    assert hub.gets(FILE) == [None, f"bytes={10 * 2**20}-"]
    assert seen[-1] == Progress(len(data), len(data))


def test_a_wrong_sha256_deletes_the_file_and_says_so(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes(), announced_sha256="ab" * 32)
    with pytest.raises(ChecksumMismatchError) as caught:
        download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    assert caught.value.expected == "ab" * 32
    assert caught.value.found == hashlib.sha256(model_bytes()).hexdigest()
    assert not (tmp_path / FILE).exists()
    assert FILE not in read_records(tmp_path)


def test_a_full_disk_is_refused_before_anything_is_downloaded(hub: Hub, tmp_path: Path) -> None:
    data = model_bytes(padding_mb=2)
    hub.add(REPO, FILE, data)
    with pytest.raises(InsufficientDiskError) as caught:
        download_model(REPO, FILE, tmp_path, endpoint=hub.url, disk_free=lambda _: 2**20)
    assert (caught.value.needed, caught.value.free) == (len(data), 2**20)
    assert hub.gets(FILE) == []
    assert not (tmp_path / FILE).exists()


def test_cancel_stops_the_transfer_and_leaves_no_file(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes(padding_mb=40), delay_s=0.01)
    cancel = threading.Event()

    def on_progress(progress: Progress) -> None:
        cancel.set()  # after the first 10 MB

    with pytest.raises(DownloadCancelledError):
        download_model(REPO, FILE, tmp_path, endpoint=hub.url, on_progress=on_progress, cancel=cancel)
    assert not (tmp_path / FILE).exists()
    assert not list(tmp_path.rglob("*.incomplete"))
    assert FILE not in read_records(tmp_path)


def test_a_token_is_sent_and_a_missing_one_is_named(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes())
    hub.token = "hf_secret"
    with pytest.raises(DownloadError, match="token"):
        download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    model = download_model(REPO, FILE, tmp_path, endpoint=hub.url, token="hf_secret")
    assert model.path.is_file()


def test_offline_mode_finds_what_was_downloaded_and_nothing_else(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes())
    download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    before = len(hub.requests)
    assert download_model(REPO, FILE, tmp_path, offline=True).path == tmp_path / FILE
    with pytest.raises(DownloadError, match="offline"):
        download_model(REPO, "other.rkllm", tmp_path, offline=True)
    assert len(hub.requests) == before


@pytest.mark.parametrize(
    ("repo", "file", "message"),
    [
        ("no-slash", FILE, "not a Hugging Face repository"),
        (REPO, "../escape.rkllm", "not a Hugging Face repository"),
        (REPO, "weights.gguf", "not an RKLLM model file"),
    ],
)
def test_bad_names_are_refused_without_asking_the_hub(
    hub: Hub, tmp_path: Path, repo: str, file: str, message: str
) -> None:
    with pytest.raises(DownloadError, match=message):
        download_model(repo, file, tmp_path, endpoint=hub.url)
    assert hub.requests == []


def test_an_unknown_file_is_named(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=f"{REPO} has no file missing.rkllm"):
        download_model(REPO, "missing.rkllm", tmp_path, endpoint=hub.url)


def test_a_catalog_model_comes_with_its_base_models_vocabulary(hub: Hub, tmp_path: Path) -> None:
    entry = next(e for e in load_catalog() if e.id == "qwen2.5-1.5b-rk3588-1.2.1")
    assert entry.tokenizer_repo == "Qwen/Qwen2.5-1.5B-Instruct"
    hub.add(entry.repo, entry.file, model_bytes())
    hub.add(entry.tokenizer_repo, "tokenizer.json", b'{"model": {"vocab": {}}}')
    model = download_model(entry.repo, entry.file, tmp_path, endpoint=hub.url)
    saved = model.path.with_name(f"{model.path.stem}.tokenizer.json")
    assert saved.read_bytes() == b'{"model": {"vocab": {}}}'
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        entry.file,
        saved.name,
    ]


def test_a_model_outside_the_catalog_has_no_vocabulary_to_fetch(hub: Hub, tmp_path: Path) -> None:
    hub.add(REPO, FILE, model_bytes())
    download_model(REPO, FILE, tmp_path, endpoint=hub.url)
    assert not list(tmp_path.glob("*.tokenizer.json"))
